"""Free loopback ports that nothing else will take before the test binds them.

A port from ``bind(("127.0.0.1", 0))`` is an ephemeral one: between the test closing its
probe and mosquitto binding it, any outgoing connection on the machine (Chromium, the
JVM, pip) may be given that same port as its source, and the broker then fails with
"Address already in use". Ports below the kernel's ephemeral range are never handed out
that way, so they stay free until someone binds them on purpose. Each port is given once
per test process.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

_given: set[int] = set()
_LOW = 20000  # above well-known services; below the ephemeral range on every default


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port nothing listens on, outside the ephemeral range, new to this process."""
    high = max(_LOW + 1000, _ephemeral_start())
    rng = random.Random(os.getpid() ^ len(_given))
    for _ in range(2000):
        port = rng.randrange(_LOW, high)
        if port in _given:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free loopback port in {_LOW}-{high}")
