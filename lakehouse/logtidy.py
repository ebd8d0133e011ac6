"""Expired Delta log files, removed every few hundred commits rather than on every one.

After each commit delta-rs lists the table's whole ``_delta_log`` to find log files past
``delta.logRetentionDuration`` (unless told not to). For a table committed every second
that listing is most of a commit: on moto's S3 a region overwrite took 52 ms with it and
25 ms without, and on a local disk it grows with every log file kept. The writers that
commit every few seconds keep their table open, pass :data:`HOOKS` and call
:meth:`LogTidy.committed` after each commit: the expired files go once every
:data:`TIDY_EVERY` commits, so the log stays as short as the table's retention says.
Checkpoints are still written at the table's ``delta.checkpointInterval``.
"""

from __future__ import annotations

import logging

from deltalake import DeltaTable
from deltalake.transaction import PostCommitHookProperties

log = logging.getLogger(__name__)

HOOKS = PostCommitHookProperties(create_checkpoint=True, cleanup_expired_logs=False)
"""Post-commit work of a frequent writer: checkpoints, no log listing."""
TIDY_EVERY = 200
"""Commits between two removals of expired log files (about 100-200 s of a gold table)."""


class LogTidy:
    """Counts one writer's commits to one table and removes its expired log files every
    ``every`` commits. A removal that fails is logged and tried again next time: it must
    not fail the write it follows."""

    def __init__(self, name: str, every: int = TIDY_EVERY) -> None:
        self.name = name
        self.every = every
        self.commits = 0

    def committed(self, handle: DeltaTable) -> None:
        """Call after each commit made through ``handle``."""
        self.commits += 1
        if self.commits % self.every:
            return
        try:
            handle.cleanup_metadata()
        except Exception as exc:  # noqa: BLE001 - tidying only; the next round retries
            log.warning("%s: could not remove expired log files (%s)", self.name, exc)
