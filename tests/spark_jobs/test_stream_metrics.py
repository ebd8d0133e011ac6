"""The streaming job's /metrics: what a batch applied, how old the events were, and how
many landing files still wait."""

from __future__ import annotations

import time
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from edge_mqtt.agent import StoreAgent
from lakehouse.contract import encode_event, format_ts, topic
from lakehouse.landing import LandedRecord, LandingWriter, landing_dir
from lakehouse.metrics import REGISTRY, parse_metrics, serve_metrics
from spark_jobs.stream.metrics import StreamMetrics


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return parse_metrics(resp.read().decode())


def test_batch_latency_is_measured_from_the_store_clock(tmp_path):
    metrics = StreamMetrics(reg := CollectorRegistry())
    now = datetime.now(UTC)
    events = [{"occurred_at": format_ts(now - timedelta(seconds=age))} for age in (0.2, 2.5)]
    metrics.observe_batch("east", events, started=time.time() - 0.4)
    (tmp_path / "landing" / "west").mkdir(parents=True)
    (tmp_path / "landing" / "west" / "b-1.jsonl").write_text("{}\n")
    metrics.watch_landing("west", tmp_path)
    got = parse_metrics(generate_latest(reg).decode())
    assert got['shelflife_stream_events_applied_total{region="east"}'] == 2
    assert got['shelflife_stream_event_latency_seconds_bucket{le="0.5",region="east"}'] == 1
    assert got['shelflife_stream_event_latency_seconds_bucket{le="2.0",region="east"}'] == 1
    assert got['shelflife_stream_event_latency_seconds_bucket{le="3.0",region="east"}'] == 2
    assert got['shelflife_stream_batch_duration_seconds_bucket{le="0.25",region="east"}'] == 0
    assert got['shelflife_stream_batch_duration_seconds_count{region="east"}'] == 1
    assert got['shelflife_stream_landing_backlog_files{region="west"}'] == 1


@pytest.mark.spark
def test_running_stream_reports_applied_events_and_its_backlog(spark, tmp_path):
    from spark_jobs.stream.metrics import serve_stream_metrics
    from spark_jobs.stream.runner import StreamConfig, start_streams

    root = tmp_path / "lake"
    created = time.time()
    agent = StoreAgent("E001", "east", tmp_path / "e.sqlite")
    events = [agent.receive("MILK", 5, lot=f"L{i}", expires_on="2026-12-09",
                            supplier_ref="PO", unit_cost=1.0) for i in range(50)]
    agent.close()
    writer = LandingWriter(landing_dir("east", root), "t1")

    def land(batch: list[dict]):
        return writer.write([LandedRecord("event", topic("east", "E001", "events"), "east",
                                          format_ts(datetime.now(UTC)), encode_event(e))
                             for e in batch])[1]

    first = land(events[:40])
    key = 'shelflife_stream_events_applied_total{region="east"}'
    backlog = 'shelflife_stream_landing_backlog_files{region="east"}'
    before = parse_metrics(generate_latest(REGISTRY).decode()).get(key, 0)
    serve_stream_metrics(["east"], root, 0)  # registers the backlog gauge, no server
    server = serve_metrics(REGISTRY, 0)
    assert scrape(server.port)[backlog] == 1
    streams = start_streams(spark, ["east"], StreamConfig(lakehouse=str(root),
                                                         history_every_s=1.0))
    try:
        streams[0].query.processAllAvailable()
        assert scrape(server.port)[key] - before == 40
        land(events[40:])
        streams[0].query.processAllAvailable()
        got = scrape(server.port)
        assert got[key] - before == 50
        assert got['shelflife_stream_event_latency_seconds_count{region="east"}'] >= 50
        # Spark deletes a batch's files once the next batch starts: the first is gone.
        deadline = time.monotonic() + 20
        while first.exists():
            assert time.monotonic() < deadline, "consumed landing file never went away"
            time.sleep(0.5)
        assert scrape(server.port)[backlog] <= 1
        # The pipeline page's history: latency of the events applied, state, memory.
        deadline = time.monotonic() + 30
        while sum(r["events"] for r in history_rows(root)) < 50:
            assert time.monotonic() < deadline, f"history: {history_rows(root)}"
            time.sleep(0.5)
    finally:
        for s in streams:
            s.stop()
        server.stop()
    rows = history_rows(root)
    assert {r["region"] for r in rows} == {"east"}
    busy = [r for r in rows if r["events"]]
    oldest = time.time() - created + 1  # no event can be older than the test
    assert all(0 <= r["latency_p50_s"] <= r["latency_p99_s"] < oldest for r in busy)
    latest = max(rows, key=lambda r: r["at"])
    assert latest["locations"] == 1 and latest["cohorts"] == 50
    assert latest["driver_rss_mb"] > 20 and latest["jvm_rss_mb"] > 100
    assert latest["mode"] == "live"


def history_rows(root) -> list[dict]:
    from deltalake import DeltaTable

    from lakehouse.catalogue import PIPELINE_HISTORY
    return DeltaTable(str(PIPELINE_HISTORY.path(root))).to_pyarrow_table().to_pylist()
