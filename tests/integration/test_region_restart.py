"""One region's broken disk stops that region only, and it comes back by itself.

The streaming runner (``run_streams``, as ``shelflife stream`` runs it) serves east and
west. East's spill folder is replaced by a file, so east's batches fail for a reason that
is not any event's fault. West's events keep reaching gold meanwhile; east retries with
backoff and, once the folder is back, catches up. Gold then equals the oracle.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from lakehouse.contract import encode_event, topic
from lakehouse.landing import LandedRecord, LandingWriter, landing_dir, now_ts
from lakehouse.paths import checkpoint_dir
from spark_jobs.stream.runner import StreamConfig, run_streams
from tests.clients import wait_for

from ..workload import Workload, make_agents
from .pipeline import check_against_oracle, read

pytestmark = [pytest.mark.integration, pytest.mark.spark]


def _land(root: Path, region: str, events: list[dict]) -> None:
    writer = LandingWriter(landing_dir(region, root), "test")
    writer.write([LandedRecord("event", topic(region, e["location_id"], "events"), region,
                               now_ts(), encode_event(e)) for e in events])


def _caught_up(root: Path, events: list[dict], prefix: str) -> bool:
    want: dict[str, int] = {}
    for e in events:
        if e["location_id"].startswith(prefix):
            want[e["location_id"]] = max(want.get(e["location_id"], 0), e["seq"])
    try:
        levels = read(root, "gold", "stock_levels")
    except Exception:  # noqa: BLE001 - not written yet
        return False
    got = levels.groupby("location_id")["last_seq"].max().to_dict()
    return all(got.get(loc) == seq for loc, seq in want.items())


def test_a_failing_region_restarts_alone(tmp_path, spark):
    root = tmp_path / "lake"
    agents = make_agents(tmp_path / "agents", per_region=3, regions=("east", "west"))
    work = Workload(agents, seed=41)
    stop = threading.Event()
    runner = threading.Thread(target=run_streams, args=(["east", "west"], StreamConfig(
        lakehouse=str(root), state_every_s=3.0)), kwargs={"stop": stop}, daemon=True)
    runner.start()
    try:
        def land_new(since: int) -> int:
            for region in ("east", "west"):
                _land(root, region, [e for e in work.events[since:]
                                     if e["location_id"].startswith(region[0].upper())])
            return len(work.events)

        work.stock_up()
        for _ in range(150):
            work.step()
        wait_for("both regions running", lambda: (checkpoint_dir("stream-west", root)
                                                  / "state").exists()
                 and (checkpoint_dir("stream-east", root) / "state").exists(), 180)
        landed = land_new(0)
        wait_for("both regions in gold", lambda: _caught_up(root, work.events, "E")
                 and _caught_up(root, work.events, "W"), 120)

        spill = checkpoint_dir("stream-east", root) / "pending"
        shutil.rmtree(spill)
        spill.write_text("a file where east's spill folder should be\n")
        for _ in range(150):
            work.step()
        landed = land_new(landed)
        wait_for("west's new events in gold while east is broken",
                 lambda: _caught_up(root, work.events, "W"), 120)
        assert not _caught_up(root, work.events, "E"), "east cannot have written them"
        assert runner.is_alive(), "the runner goes on"

        spill.unlink()
        spill.mkdir()
        wait_for("east back by itself and caught up",
                 lambda: _caught_up(root, work.events, "E"), 150)
        check_against_oracle(root, work.events)
    finally:
        stop.set()
        runner.join(180)
