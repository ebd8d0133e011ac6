"""When ingest should wait: the landing backlog's hysteresis, and the intake quota.

The landing folder is the queue between ingest and Spark: files there are landed but not
yet consumed (Spark deletes each file once its micro-batch is committed). When a region's
stream falls behind, that folder grows without limit and the disk, not the broker,
becomes the buffer. Ingest therefore stops taking messages once the backlog passes a
high-water mark and resumes below a low-water mark (the count itself is
:class:`lakehouse.landing.LandingBacklog`); how the messages stay safe meanwhile is
explained in :mod:`ingest.worker`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class IntakeGate:
    """Hysteresis between a high- and a low-water mark of backlog events.

    Paused at ``high`` or more; resumed only once the backlog is below ``low``, so intake
    does not flap around one number.
    """

    high: int
    low: int
    paused: bool = False
    pauses: int = 0

    def __post_init__(self) -> None:
        if self.high < 1:
            raise ValueError(f"backlog_high_events: must be >= 1, got {self.high!r}")
        if not 0 <= self.low < self.high:
            raise ValueError(f"backlog_low_events: must be >= 0 and below the high-water "
                             f"mark {self.high}, got {self.low!r}")

    def update(self, backlog_events: int) -> bool:
        """Whether intake is paused given the backlog now."""
        if not self.paused and backlog_events >= self.high:
            self.paused = True
            self.pauses += 1
        elif self.paused and backlog_events < self.low:
            self.paused = False
        return self.paused
