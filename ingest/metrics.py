"""What ingest tells Prometheus, per region.

Most series read the worker's own counters at scrape time (a prometheus-client custom
collector), so there is one source of truth for "how many"; only the ack latency is
observed as it happens, in a histogram.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, ClassVar

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lakehouse.metrics import REGISTRY

if TYPE_CHECKING:
    from .worker import IngestWorker

ACK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)

Read = Callable[["IngestWorker"], float]
_SERIES: tuple[tuple[type[CounterMetricFamily | GaugeMetricFamily], str, str, Read], ...] = (
    (CounterMetricFamily, "shelflife_ingest_events_received_total",
     "MQTT messages received from the region's broker", lambda w: w.stats.received),
    (CounterMetricFamily, "shelflife_ingest_events_landed_total",
     "Events written durably to the landing zone", lambda w: w.stats.landed),
    (CounterMetricFamily, "shelflife_ingest_duplicates_dropped_total",
     "Messages dropped because their (location, seq) was already landed",
     lambda w: w.stats.duplicates),
    (CounterMetricFamily, "shelflife_ingest_dead_letters_total",
     "Messages that failed validation (landed as dead letters)",
     lambda w: w.stats.dead_letters),
    (CounterMetricFamily, "shelflife_ingest_landing_batches_total",
     "Landing batch files written", lambda w: w.stats.batches),
    (GaugeMetricFamily, "shelflife_ingest_landing_backlog_events",
     "Landed events the stream has not consumed yet", lambda w: w.backlog_now.events),
    (GaugeMetricFamily, "shelflife_ingest_landing_backlog_files",
     "Landing files the stream has not consumed yet", lambda w: w.backlog_now.files),
    (GaugeMetricFamily, "shelflife_ingest_intake_paused",
     "1 while the landing backlog keeps intake stopped", lambda w: 1 if w.paused else 0),
    (GaugeMetricFamily, "shelflife_ingest_messages_held",
     "Messages received but not yet acknowledged to the broker (paused or over quota); "
     "the broker holds the rest", lambda w: w.stats.held),
    (CounterMetricFamily, "shelflife_ingest_loop_errors_total",
     "Turns of the ingest loop that failed (landing, dedup state, anything); each is "
     "retried", lambda w: w.stats.loop_errors),
    (GaugeMetricFamily, "shelflife_ingest_worker_up",
     "1 while the region's worker thread runs and its loop completes turns (as /health "
     "says)", lambda w: 1 if w.health()["up"] else 0),
)


class IngestMetrics(Collector):
    """The ingest series of one registry, for every region's worker bound to it.

    One per registry (:meth:`of`): several regions' workers share a process's registry,
    and prometheus-client refuses a family registered twice.
    """

    _of: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, IngestMetrics]] = (
        weakref.WeakKeyDictionary())
    _of_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()
        self._workers: dict[str, IngestWorker] = {}
        self.ack_latency = Histogram("shelflife_ingest_ack_latency_seconds",
                                     "Message received -> durable in landing and acked",
                                     ("region",), buckets=ACK_BUCKETS, registry=registry)
        registry.register(self)

    @classmethod
    def of(cls, registry: CollectorRegistry = REGISTRY) -> IngestMetrics:
        """The registry's ingest metrics, made on first use."""
        with cls._of_lock:
            found = cls._of.get(registry)
            if found is None:
                found = cls._of[registry] = cls(registry)
            return found

    def bind(self, worker: IngestWorker) -> None:
        """Report this worker's counters as its region's series (a later worker of the
        same region takes its place)."""
        region = worker.config.region
        with self._lock:
            self._workers[region] = worker
        self.ack_latency.labels(region=region)  # a series from the start, even if empty

    def observe_acks(self, region: str, seconds: Iterable[float]) -> None:
        child = self.ack_latency.labels(region=region)
        for s in seconds:
            child.observe(s)

    def describe(self) -> Iterator[Metric]:
        return self._families({})

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            workers = dict(self._workers)
        return self._families(workers)

    @staticmethod
    def _families(workers: dict[str, IngestWorker]) -> Iterator[Metric]:
        for kind, name, help_text, read in _SERIES:
            family = kind(name, help_text, labels=("region",))
            for region, worker in sorted(workers.items()):
                try:
                    value = float(read(worker))
                except Exception:  # noqa: BLE001 - one broken reading must not hide the rest
                    value = math.nan
                family.add_metric((region,), value)
            yield family
