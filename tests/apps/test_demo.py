"""The demo's supervisor starts ingest again when it exits, and says so."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from apps.demo import _start, supervise

pytestmark = pytest.mark.timeout(60)


def test_an_exiting_ingest_is_restarted_and_another_component_stops_the_demo(
        tmp_path, capfd) -> None:
    runs = tmp_path / "runs"
    # ingest: records each start, then fails as ingest does when it gives up
    ingest = [sys.executable, "-c",
              f"open({str(runs)!r}, 'a').write('x'); print('landing failed'); "
              "raise SystemExit(1)"]
    stream = [sys.executable, "-c", "import time; time.sleep(3); raise SystemExit(3)"]
    commands = {"ingest": ingest, "stream": stream}
    env = dict(os.environ)
    procs: list[tuple[str, subprocess.Popen]] = [(n, _start(n, c, env))
                                                 for n, c in commands.items()]
    started = time.monotonic()
    try:
        code = supervise(procs, commands, env, threading.Event(), delay_s=0.2)
    finally:
        for _n, proc in procs:
            proc.kill()
            proc.wait()
    out = capfd.readouterr().out
    assert code == 1 and time.monotonic() - started < 30
    assert runs.read_text().count("x") >= 2  # ingest ran again after exiting
    assert "demo: ingest exited with 1; restarting it" in out
    assert "demo: ingest restarted (pid" in out
    assert "[ingest] landing failed" in out
    assert "demo: stream exited with 3; stopping" in out


def test_an_ingest_that_keeps_exiting_stops_the_demo(capfd) -> None:
    crash = [sys.executable, "-c", "raise SystemExit(1)"]
    env = dict(os.environ)
    procs = [("ingest", _start("ingest", crash, env))]
    try:
        code = supervise(procs, {"ingest": crash}, env, threading.Event(), delay_s=0.1)
    finally:
        procs[0][1].wait()
    out = capfd.readouterr().out
    assert code == 1
    assert out.count("demo: ingest restarted") == 5
    assert out.rstrip().endswith("demo: ingest exited with 1; stopping")
