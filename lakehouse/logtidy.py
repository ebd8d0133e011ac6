"""Expired Delta log files, removed every few hundred commits rather than on every one.

After each commit delta-rs lists the table's whole ``_delta_log`` to find log files past
``delta.logRetentionDuration`` (unless told not to). For a table committed every second
that listing is most of a commit: on moto's S3 a region overwrite took 52 ms with it and
25 ms without, and on a local disk it grows with every log file kept. The writers that
commit every few seconds keep their table open, pass :data:`HOOKS` and call
:meth:`LogTidy.committed` after each commit: the expired files go once every
:data:`TIDY_EVERY` commits or :data:`TIDY_EVERY_S` seconds, whichever comes first, so
the log stays within a few minutes of what the table's retention says. Checkpoints are
still written at the table's ``delta.checkpointInterval``.
"""

from __future__ import annotations

import logging
import time

from deltalake import DeltaTable
from deltalake.transaction import PostCommitHookProperties

log = logging.getLogger(__name__)

HOOKS = PostCommitHookProperties(create_checkpoint=True, cleanup_expired_logs=False)
"""Post-commit work of a frequent writer: checkpoints, no log listing."""
TIDY_EVERY = 200
"""Commits between two removals of expired log files (about 100-200 s of a gold table)."""
TIDY_EVERY_S = 300.0
"""...or seconds, for the writers that commit every 10 s (their tables keep 10 minutes
of log)."""


class LogTidy:
    """Counts one writer's commits to one table and removes its expired log files every
    ``every`` commits. A removal that fails is logged and tried again next time: it must
    not fail the write it follows."""

    def __init__(self, name: str, every: int = TIDY_EVERY,
                 every_s: float = TIDY_EVERY_S) -> None:
        self.name = name
        self.every = every
        self.every_s = every_s
        self.commits = 0
        self._tidied_at = time.monotonic()

    def committed(self, handle: DeltaTable) -> None:
        """Call after each commit made through ``handle`` (never raises: the commit is
        done, and a failed tidy is tried again next round)."""
        self.commits += 1
        if self.commits % self.every and time.monotonic() - self._tidied_at < self.every_s:
            return
        self._tidied_at = time.monotonic()
        try:
            handle.cleanup_metadata()
        except BaseException as exc:  # a Rust panic is a BaseException too
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            log.warning("%s: could not remove expired log files (%s)", self.name, exc)
