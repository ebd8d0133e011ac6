"""The metrics endpoint as Prometheus sees it: scraped over HTTP, text format 0.0.4."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from lakehouse.metrics import parse_metrics, serve_metrics


def scrape(port: int) -> tuple[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.headers["Content-Type"], resp.read().decode()


def test_counters_gauges_and_histograms_are_served_with_labels():
    reg = CollectorRegistry()
    events = Counter("demo_events_total", "Events seen", ("region",), registry=reg)
    backlog = Gauge("demo_backlog", "Files waiting", ("region",), registry=reg)
    latency = Histogram("demo_latency_seconds", "Latency", ("region",),
                        buckets=(0.5, 1.0, 5.0), registry=reg)
    events.labels(region="east").inc()
    events.labels(region="east").inc(2)
    events.labels(region="west").inc()
    backlog.labels(region="east").set(7)
    backlog.labels(region="west").set_function(lambda: 12)
    for seconds in (0.2, 0.7, 0.9, 3.0, 42.0):
        latency.labels(region="east").observe(seconds)
    server = serve_metrics(reg, 0)
    try:
        content_type, text = scrape(server.port)
    finally:
        server.stop()
    assert content_type.startswith("text/plain; version=0.0.4")
    assert "# TYPE demo_events_total counter" in text
    assert "# HELP demo_backlog Files waiting" in text
    assert "# TYPE demo_latency_seconds histogram" in text
    assert "_created" not in text  # counters keep exactly the names the README lists
    got = parse_metrics(text)
    assert got['demo_events_total{region="east"}'] == 3
    assert got['demo_events_total{region="west"}'] == 1
    assert got['demo_backlog{region="east"}'] == 7
    assert got['demo_backlog{region="west"}'] == 12
    # Buckets are cumulative and end with +Inf = count.
    assert got['demo_latency_seconds_bucket{le="0.5",region="east"}'] == 1
    assert got['demo_latency_seconds_bucket{le="1.0",region="east"}'] == 3
    assert got['demo_latency_seconds_bucket{le="5.0",region="east"}'] == 4
    assert got['demo_latency_seconds_bucket{le="+Inf",region="east"}'] == 5
    assert got['demo_latency_seconds_count{region="east"}'] == 5
    assert got['demo_latency_seconds_sum{region="east"}'] == pytest.approx(46.8)


def test_other_paths_are_not_found():
    server = serve_metrics(CollectorRegistry(), 0)
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=5)
        assert err.value.code == 404
    finally:
        server.stop()


@pytest.mark.parametrize(("check", "status", "body"), [
    (lambda: (200, {"status": "ok"}), 200, {"status": "ok"}),
    (lambda: (503, {"status": "down", "reason": "east: stuck"}), 503,
     {"status": "down", "reason": "east: stuck"}),
    (lambda: 1 / 0, 503, {"status": "down",
                          "reason": "health check failed: ZeroDivisionError('division by zero')"}),
])
def test_health_answers_json_with_the_checks_status(check, status, body):
    server = serve_metrics(CollectorRegistry(), 0, health=check)
    try:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/health",
                                        timeout=5) as resp:
                got_status, got_body = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            got_status, got_body = err.code, err.read()
    finally:
        server.stop()
    assert (got_status, json.loads(got_body)) == (status, body)


def test_label_values_are_escaped():
    reg = CollectorRegistry()
    Gauge("demo_g", "g", ("reason",), registry=reg).labels(reason='bad "quote"\\n').set(1)
    server = serve_metrics(reg, 0)
    try:
        _, text = scrape(server.port)
    finally:
        server.stop()
    assert 'demo_g{reason="bad \\"quote\\"\\\\n"} 1.0' in text


def test_updates_from_many_threads_are_not_lost():
    reg = CollectorRegistry()
    c = Counter("demo_total", "c", ("region",), registry=reg).labels(region="east")
    h = Histogram("demo_h", "h", ("region",), registry=reg).labels(region="east")

    def work() -> None:
        for _ in range(5000):
            c.inc()
            h.observe(0.1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    server = serve_metrics(reg, 0)
    try:
        got = parse_metrics(scrape(server.port)[1])
    finally:
        server.stop()
    assert got['demo_total{region="east"}'] == 20000
    assert got['demo_h_count{region="east"}'] == 20000
