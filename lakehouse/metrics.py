"""Serving prometheus-client registries on ``/metrics``, with a JSON ``/health`` beside.

Operators scrape ingest (:9810) and the stream (:9811) with Prometheus. The series live
in prometheus-client registries (:mod:`ingest.metrics`, :mod:`spark_jobs.stream.metrics`);
this module adds what Shelflife needs around them: one HTTP server that answers
``/metrics`` and, for a supervisor or load balancer, ``/health``; and a parser of the
exposition text for tests and the benchmark.

Counters are exposed under their ``..._total`` names only: the ``_created`` series that
prometheus-client adds by default are turned off here, before any Shelflife metric
exists, so the exposed names are the ones the README lists.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from urllib.parse import urlsplit

from prometheus_client import REGISTRY, CollectorRegistry, disable_created_metrics
from prometheus_client.exposition import MetricsHandler

disable_created_metrics()

__all__ = ["REGISTRY", "HealthCheck", "MetricsServer", "parse_metrics", "serve_metrics"]
"""``REGISTRY`` is prometheus-client's process-wide registry (what ``shelflife ingest`` and
``stream`` serve); taking it from here makes sure ``_created`` series are off first."""

HealthCheck = Callable[[], tuple[int, dict[str, object]]]
"""Returns an HTTP status (200 healthy, 503 not) and a small JSON-able body."""


class MetricsServer(ThreadingHTTPServer):
    """``GET /metrics`` (and ``/health`` when given a check) on a daemon thread;
    ``port`` is the bound port."""

    daemon_threads = True

    def __init__(self, registry: CollectorRegistry, host: str, port: int,
                 health: HealthCheck | None = None) -> None:
        self.registry = registry
        self.health = health
        super().__init__((host, port), _Handler)
        self.port = self.server_address[1]
        self._thread = threading.Thread(target=self.serve_forever, daemon=True,
                                        name=f"metrics-{self.port}")
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(MetricsHandler):
    """prometheus-client's exposition on ``/metrics``, the health check on ``/health``,
    404 elsewhere (a typo in a scrape config shows up instead of scraping anything)."""

    server: MetricsServer

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = urlsplit(self.path).path.rstrip("/")
        if path == "/health" and self.server.health is not None:
            self._health(self.server.health)
        elif path == "/metrics":
            self.registry = self.server.registry
            super().do_GET()
        else:
            self.send_error(404, "only /metrics (and /health where offered) live here")

    def _health(self, check: HealthCheck) -> None:
        try:
            status, payload = check()
        except Exception as exc:  # noqa: BLE001 - a failing check is itself unhealthy
            status, payload = 503, {"status": "down",
                                    "reason": f"health check failed: {exc!r}"}
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve_metrics(registry: CollectorRegistry = REGISTRY, port: int = 9810, *,
                  host: str = "127.0.0.1", health: HealthCheck | None = None
                  ) -> MetricsServer:
    """Serve ``registry`` at ``http://host:port/metrics`` until the process ends, and
    ``health`` (if given) at ``/health`` for a supervisor or load balancer to poll.

    ``port=0`` binds a free port (read it back from ``.port``); callers that mean "off"
    by 0 (the CLI) simply do not call this. Loopback by default: listen on ``0.0.0.0``
    only where Prometheus runs on another machine.
    """
    return MetricsServer(registry, host, port, health)


def parse_metrics(text: str) -> dict[str, float]:
    """Samples of an exposition text by ``name{labels}``, for tests and the benchmark."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        out[name] = float(value)
    return out
