"""The metrics endpoint as Prometheus sees it: scraped over HTTP, text format 0.0.4."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

import pytest

from lakehouse.metrics import Registry, parse_metrics, serve_metrics


def scrape(port: int) -> tuple[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.headers["Content-Type"], resp.read().decode()


def test_counters_gauges_and_histograms_are_served_with_labels():
    reg = Registry()
    events = reg.counter("demo_events_total", "Events seen", ("region",))
    backlog = reg.gauge("demo_backlog", "Files waiting", ("region",))
    latency = reg.histogram("demo_latency_seconds", "Latency", ("region",),
                            buckets=(0.5, 1.0, 5.0))
    events.labels(region="east").inc()
    events.labels(region="east").inc(2)
    events.labels(region="west").inc()
    backlog.labels(region="east").set(7)
    backlog.labels(region="west").set_function(lambda: 12)
    latency.labels(region="east").observe_many([0.2, 0.7, 0.9, 3.0, 42.0])
    server = serve_metrics(reg, 0)
    try:
        content_type, text = scrape(server.port)
    finally:
        server.stop()
    assert content_type.startswith("text/plain; version=0.0.4")
    assert "# TYPE demo_events_total counter" in text
    assert "# HELP demo_backlog Files waiting" in text
    assert "# TYPE demo_latency_seconds histogram" in text
    got = parse_metrics(text)
    assert got['demo_events_total{region="east"}'] == 3
    assert got['demo_events_total{region="west"}'] == 1
    assert got['demo_backlog{region="east"}'] == 7
    assert got['demo_backlog{region="west"}'] == 12
    # Buckets are cumulative and end with +Inf = count.
    assert got['demo_latency_seconds_bucket{region="east",le="0.5"}'] == 1
    assert got['demo_latency_seconds_bucket{region="east",le="1"}'] == 3
    assert got['demo_latency_seconds_bucket{region="east",le="5"}'] == 4
    assert got['demo_latency_seconds_bucket{region="east",le="+Inf"}'] == 5
    assert got['demo_latency_seconds_count{region="east"}'] == 5
    assert got['demo_latency_seconds_sum{region="east"}'] == pytest.approx(46.8)


def test_other_paths_are_not_found():
    server = serve_metrics(Registry(), 0)
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=5)
        assert err.value.code == 404
    finally:
        server.stop()


def test_label_values_are_escaped():
    reg = Registry()
    reg.gauge("demo_g", "g", ("reason",)).labels(reason='bad "quote"\\n').set(1)
    assert 'demo_g{reason="bad \\"quote\\"\\\\n"} 1' in reg.render()


def test_misuse_is_refused_with_the_metric_named():
    reg = Registry()
    c = reg.counter("demo_total", "c", ("region",))
    with pytest.raises(ValueError, match="demo_total"):
        c.labels(region="east").inc(-1)
    with pytest.raises(ValueError, match="expected labels"):
        c.labels(zone="east")
    with pytest.raises(ValueError, match="already registered"):
        reg.gauge("demo_total", "g", ("region",))
    assert reg.counter("demo_total", "c", ("region",)) is c


def test_updates_from_many_threads_are_not_lost():
    reg = Registry()
    c = reg.counter("demo_total", "c", ("region",)).labels(region="east")
    h = reg.histogram("demo_h", "h", ("region",)).labels(region="east")

    def work() -> None:
        for _ in range(5000):
            c.inc()
            h.observe(0.1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = parse_metrics(reg.render())
    assert got['demo_total{region="east"}'] == 20000
    assert got['demo_h_count{region="east"}'] == 20000
