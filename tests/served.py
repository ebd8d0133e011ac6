"""A server of ours as its own process for a test: started, waited for until it answers,
and stopped (terminate, then kill) however the test ends."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def served(cmd: list[str], log: Path, ready: Callable[[], bool], what: str, *,
           env: dict[str, str] | None = None, timeout: float = 60.0
           ) -> Iterator[subprocess.Popen]:
    """Run ``cmd`` with its output in ``log`` until ``ready()`` is true (errors from it
    count as not yet); the log is in the error when it exits or never gets ready."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if ready():
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start: {log.read_text()}")
            time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
