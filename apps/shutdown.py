"""How a long-running ``shelflife`` command learns it should stop."""

from __future__ import annotations

import signal
import threading


def stop_event() -> threading.Event:
    """An event set on Ctrl-C or SIGTERM, so components shut down cleanly."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop
