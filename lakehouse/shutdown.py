"""How a long-running Shelflife process learns it should stop."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any

Handler = Callable[[int, Any], Any] | int | None

# How long the main thread may sleep before it looks for a pending signal.
WAKE_S = 0.25


class StopEvent(threading.Event):
    """An event whose ``wait`` wakes every :data:`WAKE_S` so signal handlers can run.

    Python runs a signal's handler on the main thread, but only when that thread runs
    bytecode. The kernel may deliver SIGTERM to any thread, often one of delta-rs's or
    the JVM's; a main thread parked in ``wait(3600)`` is then not woken, and the process
    would ignore the signal for the rest of the hour.
    """

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = WAKE_S if deadline is None else min(WAKE_S, deadline - time.monotonic())
            if super().wait(max(left, 0.0)):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False


def set_on_signals(event: threading.Event,
                   signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM),
                   ) -> dict[int, Handler]:
    """Set ``event`` when one of ``signals`` arrives; the handlers it replaced, to restore.

    The handler sets the event from a short-lived thread. A signal handler runs on the
    main thread between bytecodes; if that thread is inside ``event.wait()`` holding the
    event's lock, calling ``event.set()`` there would wait on that lock forever.
    """
    def handle(*_: object) -> None:
        threading.Thread(target=event.set, name="shelflife-stop", daemon=True).start()

    return {sig: signal.signal(sig, handle) for sig in signals}


def stop_event() -> StopEvent:
    """An event set on Ctrl-C or SIGTERM, so components shut down cleanly."""
    stop = StopEvent()
    set_on_signals(stop)
    return stop
