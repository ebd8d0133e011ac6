"""Shelflife's Spark jobs on a Spark standalone cluster (a master and one worker on
loopback, started by scripts/spark_cluster.py): the forecast job and one region's stream
run as ``shelflife`` commands with ``--master spark://...``, their tasks run in the
worker's executor (the event log says which executor ran each task), and what they write
is what the events imply."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import deltalake
import pytest

from lakehouse.catalogue import DEMAND_FORECASTS, STOCK_LEVELS
from lakehouse.contract import build_event, encode_event, format_ts, topic
from lakehouse.storage import delta_options
from scripts.spark_cluster import Cluster, stage_times, standalone_cluster
from tests.ports import free_port
from tests.s3 import fresh_lake

pytestmark = [pytest.mark.spark, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
THROUGH = date(2024, 6, 2)
DAYS = 35
LEVELS = {("EAST-S001", "DAIRY-MILK-1L"): 12, ("EAST-S001", "BAK-LOAF-800"): 6,
          ("EAST-S002", "DAIRY-MILK-1L"): 9, ("EAST-S002", "BAK-LOAF-800"): 4,
          ("EAST-S003", "DAIRY-MILK-1L"): 15, ("EAST-S003", "BAK-LOAF-800"): 8}
"""Units each (store, SKU) sells every day, the same every day."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A master and one worker of 2 cores and 2 GB on free loopback ports."""
    with standalone_cluster(tmp_path_factory.mktemp("spark-cluster"), workers=1, cores=2,
                            memory="2g", port=free_port(), webui_port=free_port(),
                            worker_webui_ports=[free_port()]) as running:
        yield running


@pytest.fixture(scope="module")
def cluster_lake(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Root under which each test makes its lakehouse: a prefix in a bucket on moto's S3
    server, as a network with more than one machine keeps it (the local-disk runs of the
    same jobs are in test_forecast.py and the pipeline tests). Each machine's own state
    goes to a temporary folder."""
    state = tmp_path_factory.mktemp("cluster-state")
    saved = os.environ.get("SHELFLIFE_STATE_DIR")
    os.environ["SHELFLIFE_STATE_DIR"] = str(state)
    yield fresh_lake()
    if saved is None:
        os.environ.pop("SHELFLIFE_STATE_DIR", None)
    else:
        os.environ["SHELFLIFE_STATE_DIR"] = saved


def under(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}"


def delta_table(path: str) -> deltalake.DeltaTable | None:
    """The Delta table at ``path`` (a folder or S3), or None while it does not exist."""
    try:
        return deltalake.DeltaTable(path, storage_options=delta_options(path))
    except Exception:  # noqa: BLE001 - deltalake's "not a table" errors vary by store
        return None


def shelflife(cluster: Cluster, event_log: Path, *args: str, log: Path
              ) -> subprocess.Popen:
    """A ``shelflife`` command as its own driver on ``cluster``, logging its events."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SHELFLIFE_SPARK_EVENT_LOG": str(event_log),
           "PYSPARK_PYTHON": sys.executable}
    out = open(log, "w")  # noqa: SIM115 - the child's output, closed when it ends
    with out:
        return subprocess.Popen([sys.executable, "-m", "apps.cli", *args,
                                 "--master", cluster.master_url],
                                env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def sales_events() -> list[dict]:
    """``DAYS`` days of each series: a morning delivery and its day's units sold in
    three sales."""
    events: list[dict] = []
    seqs: dict[str, int] = {}
    first = THROUGH - timedelta(days=DAYS - 1)
    for (loc, sku), level in LEVELS.items():
        stock = 0
        for d in range(DAYS):
            day = datetime.combine(first + timedelta(days=d), datetime.min.time(), tzinfo=UTC)

            def add(hour: int, event_type: str, payload: dict, loc: str = loc,
                    day: datetime = day) -> None:
                seqs[loc] = seqs.get(loc, 0) + 1
                events.append(build_event(location_id=loc, seq=seqs[loc], event_type=event_type,
                                          payload=payload,
                                          occurred_at=format_ts(day.replace(hour=hour))))

            lot, expiry = f"L{day:%m%d}", (day.date() + timedelta(days=5)).isoformat()
            add(6, "received", {"sku": sku, "quantity": level, "stock_before": stock,
                                "lot": lot, "expires_on": expiry, "supplier_ref": "S1",
                                "unit_cost": 0.5})
            stock += level
            for hour, qty in zip((9, 13, 17), (level // 3, level // 3, level - 2 * (level // 3)),
                                 strict=True):
                add(hour, "sold", {"sku": sku, "quantity": qty, "stock_before": stock,
                                   "unit_price": 1.5, "transaction_ref": f"T{len(events)}",
                                   "lots": [{"lot": lot, "expires_on": expiry,
                                             "quantity": qty}]})
                stock -= qty
    return events


def assert_ran_on_executors(event_log: Path) -> list:
    # The driver's JVM writes the end of its event log (task events are buffered) and
    # renames it from .inprogress as it stops, which can come just after the command
    # that started it has exited: read the finished log.
    deadline = time.monotonic() + 60
    while not any(event_log.glob("app-*")) or any(event_log.glob("*.inprogress")):
        assert time.monotonic() < deadline, f"the event log in {event_log} never finished"
        time.sleep(0.5)
    stages = stage_times(event_log)
    executors = set().union(*(s.executors for s in stages)) if stages else set()
    assert sum(s.tasks for s in stages) > 0, f"no task in the event log {event_log}"
    assert executors and "driver" not in executors, executors
    return stages


def test_forecast_job_runs_on_the_cluster_and_users_read_its_forecasts(
        cluster, cluster_lake, tmp_path):
    from .silver_events import write_silver_events

    lake = under(cluster_lake, "forecasts")
    write_silver_events(lake, sales_events(), received_at="2024-06-03T00:00:00.000Z")
    proc = shelflife(cluster, tmp_path / "events", "batch", "forecasts", "--lakehouse",
                     lake, "--through", THROUGH.isoformat(), "--json",
                     log=tmp_path / "batch.log")
    assert proc.wait(timeout=600) == 0, (tmp_path / "batch.log").read_text()[-3000:]

    table = delta_table(DEMAND_FORECASTS.uri(lake)).to_pandas()
    assert len(table) == len(LEVELS) * 7
    assert set(table["region"]) == {"east"}
    assert sorted(set(table["forecast_date"])) == [THROUGH + timedelta(days=i)
                                                   for i in range(1, 8)]
    means = table.groupby(["location_id", "sku"])["forecast"].mean()
    for key, level in LEVELS.items():
        assert means[key] == pytest.approx(level, rel=0.15), key
    stages = assert_ran_on_executors(tmp_path / "events")
    forecast = [s for s in stages if s.executor_run_s > 0 and s.tasks]
    assert forecast, stages


def test_region_stream_on_the_cluster_brings_gold_stock_to_the_landed_events(
        cluster, cluster_lake, tmp_path):
    from edge_mqtt.agent import StoreAgent
    from lakehouse.landing import LandedRecord, landing_writer

    lake = under(cluster_lake, "stream")
    proc = shelflife(cluster, tmp_path / "events", "stream", "--regions", "east",
                     "--lakehouse", lake, "--metrics-port", "0",
                     log=tmp_path / "stream.log")
    try:
        levels = STOCK_LEVELS.uri(lake)
        deadline = time.monotonic() + 240
        while delta_table(levels) is None:
            assert proc.poll() is None, (tmp_path / "stream.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the stream never created gold"
            time.sleep(0.5)

        agents = [StoreAgent(f"E00{i}", "east", tmp_path / f"a{i}.sqlite") for i in (1, 2)]
        expiry = (date.today() + timedelta(days=6)).isoformat()
        writer = landing_writer("east", lake, "t1")
        expected: dict[tuple[str, str], int] = {}
        for round_ in range(3):
            batch = []
            for a in agents:
                for sku, qty in (("MILK", 20), ("BREAD", 10)):
                    batch.append(a.receive(sku, qty, lot=f"L{round_}", expires_on=expiry,
                                           supplier_ref="PO", unit_cost=1.0))
                    batch.append(a.sell(sku, round_ + 1, unit_price=2.0,
                                        transaction_ref=f"T{round_}"))
                    key = (a.location_id, sku)
                    expected[key] = expected.get(key, 0) + qty - (round_ + 1)
            writer.write([LandedRecord("event", topic("east", e["location_id"], "events"),
                                       "east", format_ts(datetime.now(UTC)), encode_event(e))
                          for e in batch])
            time.sleep(1.5)
        for a in agents:
            a.close()

        got: dict = {}
        deadline = time.monotonic() + 120
        while got != expected:
            assert proc.poll() is None, (tmp_path / "stream.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"gold {got}, expected {expected}"
            time.sleep(1)
            rows = delta_table(levels).to_pyarrow_table().to_pylist()
            got = {(r["location_id"], r["sku"]): r["on_hand"] for r in rows
                   if r["region"] == "east"}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert_ran_on_executors(tmp_path / "events")


def test_starting_without_java_says_so(tmp_path, monkeypatch):
    from scripts.spark_cluster import ClusterError, start_cluster

    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    with pytest.raises(ClusterError, match="Java is missing"):
        start_cluster(tmp_path / "cluster", port=free_port(), webui_port=free_port())
    assert not (tmp_path / "cluster" / "master.log").exists()  # nothing was started


def test_a_master_that_never_shows_its_worker_fails_with_the_logs(tmp_path):
    import socket

    from scripts.spark_cluster import ClusterError, start_cluster

    with socket.socket() as taken:  # the master moves to the next port; the worker cannot
        taken.bind(("127.0.0.1", port := free_port()))  # find it on the one it was given
        taken.listen()
        with pytest.raises(ClusterError, match="0 of 1 worker") as failed:
            start_cluster(tmp_path / "cluster", port=port, webui_port=free_port(),
                          worker_webui_ports=[free_port()], timeout_s=20)
    assert "--- master.log:" in str(failed.value) and "--- worker-1.log:" in str(failed.value)
    assert not (tmp_path / "cluster" / "cluster.json").exists()  # stopped again
