"""What ingest tells Prometheus, per region.

Most series read the worker's own counters at scrape time, so there is one source of
truth for "how many"; only the ack latency is observed as it happens.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from lakehouse.metrics import Registry

if TYPE_CHECKING:
    from .worker import IngestWorker

ACK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class IngestMetrics:
    """The ingest metric families of one registry."""

    def __init__(self, registry: Registry) -> None:
        r, region = registry, ("region",)
        self.received = r.counter("shelflife_ingest_events_received_total",
                                  "MQTT messages received from the region's broker", region)
        self.landed = r.counter("shelflife_ingest_events_landed_total",
                                "Events written durably to the landing zone", region)
        self.duplicates = r.counter("shelflife_ingest_duplicates_dropped_total",
                                    "Messages dropped because their (location, seq) "
                                    "was already landed", region)
        self.dead = r.counter("shelflife_ingest_dead_letters_total",
                              "Messages that failed validation (landed as dead letters)",
                              region)
        self.batches = r.counter("shelflife_ingest_landing_batches_total",
                                 "Landing batch files written", region)
        self.backlog_events = r.gauge("shelflife_ingest_landing_backlog_events",
                                      "Landed events the stream has not consumed yet", region)
        self.backlog_files = r.gauge("shelflife_ingest_landing_backlog_files",
                                     "Landing files the stream has not consumed yet", region)
        self.paused = r.gauge("shelflife_ingest_intake_paused",
                              "1 while the landing backlog keeps intake stopped", region)
        self.held = r.gauge("shelflife_ingest_messages_held",
                            "Messages received but not yet acknowledged to the broker "
                            "(paused or over quota); the broker holds the rest", region)
        self.loop_errors = r.counter("shelflife_ingest_loop_errors_total",
                                     "Turns of the ingest loop that failed (landing, dedup "
                                     "state, anything); each is retried", region)
        self.worker_up = r.gauge("shelflife_ingest_worker_up",
                                 "1 while the region's worker thread runs and its loop "
                                 "completes turns (as /health says)", region)
        self.ack_latency = r.histogram("shelflife_ingest_ack_latency_seconds",
                                       "Message received -> durable in landing and acked",
                                       region, buckets=ACK_BUCKETS)

    def bind(self, worker: IngestWorker) -> None:
        """Point the region's series at this worker's counters."""
        region = worker.config.region
        stats = worker.stats
        for family, read in (
            (self.received, lambda: stats.received), (self.landed, lambda: stats.landed),
            (self.duplicates, lambda: stats.duplicates),
            (self.dead, lambda: stats.dead_letters), (self.batches, lambda: stats.batches),
            (self.backlog_events, lambda: worker.backlog_now.events),
            (self.backlog_files, lambda: worker.backlog_now.files),
            (self.paused, lambda: 1 if worker.paused else 0),
            (self.held, lambda: stats.held),
            (self.loop_errors, lambda: stats.loop_errors),
            (self.worker_up, lambda: 1 if worker.health()["up"] else 0),
        ):
            family.labels(region=region).set_function(read)
        self.ack_latency.labels(region=region)  # a series from the start, even if empty

    def observe_acks(self, region: str, seconds: Iterable[float]) -> None:
        self.ack_latency.labels(region=region).observe_many(seconds)
