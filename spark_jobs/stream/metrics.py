"""What the streaming job tells Prometheus, per region.

``RegionStream.process_batch`` calls :meth:`StreamMetrics.observe_batch` once per
micro-batch; the landing backlog is counted when Prometheus scrapes, so an idle or stuck
query (which runs no batches) still reports how much waits for it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from lakehouse.contract import parse_ts
from lakehouse.landing import count_batches
from lakehouse.metrics import REGISTRY, MetricsServer, serve_metrics

LATENCY_BUCKETS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
                   3600.0, 86400.0)
BATCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0)


class StreamMetrics:
    """The streaming job's metric families of one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r, region = registry, ("region",)
        self.batches = Counter("shelflife_stream_batches_total",
                               "Micro-batches that applied landing lines", region, registry=r)
        self.events = Counter("shelflife_stream_events_applied_total",
                              "New events applied to gold", region, registry=r)
        self.duration = Histogram("shelflife_stream_batch_duration_seconds",
                                  "Wall time of one micro-batch", region,
                                  buckets=BATCH_BUCKETS, registry=r)
        self.latency = Histogram("shelflife_stream_event_latency_seconds",
                                 "Event occurred_at (store clock) -> applied to gold",
                                 region, buckets=LATENCY_BUCKETS, registry=r)
        self.last_batch = Gauge("shelflife_stream_last_batch_timestamp_seconds",
                                "Unix time the last micro-batch finished", region, registry=r)
        self.backlog = Gauge("shelflife_stream_landing_backlog_files",
                             "Landing files waiting for the region's query", region,
                             registry=r)
        self.dead_letters = Counter("shelflife_stream_dead_letters_total",
                                    "Events the stream refused or could not apply",
                                    region, registry=r)
        self.restarts = Counter("shelflife_stream_region_restarts_total",
                                "Times a region's query failed and was started again",
                                region, registry=r)

    def observe_batch(self, region: str, events: Iterable[Mapping[str, Any]], *,
                      started: float) -> list[float]:
        """One finished micro-batch: ``events`` are the ones it applied, ``started`` its
        ``time.time()`` at the start. Returns each event's latency (seconds from its
        ``occurred_at`` to now), for the pipeline history."""
        now = time.time()
        latencies = []
        for e in events:
            try:
                latencies.append(max(0.0, now - parse_ts(e["occurred_at"]).timestamp()))
            except (KeyError, TypeError, ValueError):
                continue
        self.batches.labels(region=region).inc()
        self.events.labels(region=region).inc(len(latencies))
        self.duration.labels(region=region).observe(max(0.0, now - started))
        latency = self.latency.labels(region=region)
        for seconds in latencies:
            latency.observe(seconds)
        self.last_batch.labels(region=region).set(now)
        return latencies

    def watch_landing(self, region: str, root: str | os.PathLike[str] | None) -> None:
        """Count the region's waiting landing files at every scrape."""
        self.backlog.labels(region=region).set_function(lambda: count_batches(region, root))
        for family in (self.batches, self.events, self.duration, self.latency,
                       self.dead_letters, self.restarts):
            family.labels(region=region)  # every region listed from the start


METRICS = StreamMetrics(REGISTRY)
"""The streaming process's metrics (served by :func:`serve_stream_metrics`)."""


def serve_stream_metrics(regions: Iterable[str], root: str | os.PathLike[str] | None,
                         port: int, *, host: str = "127.0.0.1") -> MetricsServer | None:
    """Start ``/metrics`` for the stream (``port`` 0 = off)."""
    for region in regions:
        METRICS.watch_landing(region, root)
    if not port:
        return None
    return serve_metrics(REGISTRY, port, host=host)
