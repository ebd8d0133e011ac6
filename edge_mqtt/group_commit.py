"""Group commit: callers recording at the same moment share one transaction and one fsync.

With ``synchronous=FULL`` every commit waits for an fsync of the WAL, so one till alone
records at most one event per fsync. When several tills (HTTP threads) record at once,
the first to arrive becomes the leader: it takes every request queued so far, applies
each in its own savepoint (a refused request rolls back alone), commits once and wakes
the others. Requests that arrive while it commits wait for the next leader, so batches
grow exactly when the disk is the bottleneck and stay at one event when it is not.

Nobody is answered before the commit that holds their event returns: the durability
guarantee of ``synchronous=FULL`` is unchanged, only shared.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .store import StoreDB

T = TypeVar("T")


class _Request(Generic[T]):
    __slots__ = ("work", "done", "value", "error")

    def __init__(self, work: Callable[[], T]) -> None:
        self.work = work
        self.done = False
        self.value: T | None = None
        self.error: BaseException | None = None


class GroupCommit:
    """Runs work items in shared transactions on one :class:`StoreDB` connection.

    ``lock`` guards the connection: it is held from BEGIN to COMMIT, so readers that take
    it never see a transaction half done.
    """

    def __init__(self, db: StoreDB, lock: threading.RLock) -> None:
        self.db = db
        self.lock = lock
        self._cond = threading.Condition()
        self._queue: list[_Request[Any]] = []
        self._leading = False
        self.commits = 0
        """Transactions committed (each one fsync of the WAL with synchronous=FULL)."""
        self.committed = 0
        """Work items committed; ``committed / commits`` is the events per fsync."""

    def submit(self, work: Callable[[], T]) -> T:
        """Run ``work`` inside a transaction; return its result once that is committed."""
        request: _Request[T] = _Request(work)
        with self._cond:
            self._queue.append(request)
            while self._leading and not request.done:
                self._cond.wait()
            if not request.done:  # lead: take everything queued, ours included
                self._leading = True
                batch, self._queue = self._queue, []
        if not request.done:
            try:
                self._run(batch)
            finally:
                with self._cond:
                    self._leading = False
                    self._cond.notify_all()
        if request.error is not None:
            raise request.error
        return request.value  # type: ignore[return-value]

    def _run(self, batch: list[_Request[Any]]) -> None:
        conn = self.db.conn
        alone = len(batch) == 1  # no savepoints needed: a refusal rolls back everything
        with self.lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
                for r in batch:
                    if not alone:
                        conn.execute("SAVEPOINT request")
                    try:
                        r.value = r.work()
                    except BaseException as exc:
                        r.error = exc
                        if not alone:
                            self.db.rollback("request")
                    if not alone:
                        conn.execute("RELEASE request")
                if alone and batch[0].error is not None:
                    self.db.rollback()
                else:
                    conn.execute("COMMIT")
                    self.commits += 1
                    self.committed += sum(r.error is None for r in batch)
            except BaseException as exc:  # BEGIN or COMMIT failed: nothing was recorded
                self.db.rollback()
                for r in batch:
                    if r.error is None:
                        r.error, r.value = exc, None
            finally:
                for r in batch:
                    r.done = True
