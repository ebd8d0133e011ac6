"""A token bucket: how many items may go now, at a steady rate with a bounded burst.

Ingest caps a region's intake (``--max-events-per-s``) and a store back from a long
outage caps its replay (``replay_rate``) so it cannot swamp its region; both count with
:class:`TokenBucket`. Standard library only, so the store agent can use it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    """At most ``rate`` items per second, in bursts of at most ``burst`` (default one
    second's worth); ``rate`` 0 means no limit. The bucket starts full."""

    rate: float
    """Items per second (0 = no limit)."""
    burst: float | None = None
    """Most items that may go at once after a pause (default ``rate``, at least 1)."""
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    """Seconds, monotonic."""
    tokens: float = field(init=False)
    _at: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.rate >= 0:
            raise ValueError(f"rate: must be >= 0 (0 = no limit), got {self.rate!r}")
        if self.burst is None:
            self.burst = max(1.0, self.rate)
        elif not self.burst >= 1:
            raise ValueError(f"burst: must be >= 1, got {self.burst!r}")
        self.tokens = self.burst
        self._at = self.clock()

    @property
    def limited(self) -> bool:
        """False when the rate is 0 (no limit)."""
        return self.rate > 0

    def allowance(self) -> int | None:
        """How many items may go now (None = any number)."""
        if not self.limited:
            return None
        now = self.clock()
        assert self.burst is not None  # set in __post_init__
        self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate)
        self._at = now
        return int(self.tokens)

    def spend(self, n: int) -> None:
        """``n`` items went (a limited bucket may go negative: the debt is waited out)."""
        if self.limited:
            self.tokens -= n

    def wait_s(self) -> float:
        """Seconds until one more item may go, as of the last :meth:`allowance`."""
        if not self.limited:
            return 0.0
        return max(0.0, 1.0 - self.tokens) / self.rate
