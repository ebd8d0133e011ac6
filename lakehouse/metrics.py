"""A small Prometheus registry and ``/metrics`` endpoint, with no extra dependency.

Operators scrape ingest (:9810) and the stream (:9811) with Prometheus; the text
exposition format 0.0.4 is simple enough that a hundred lines beat a new package in the
server extra. Counters, gauges and histograms carry labels (``region`` everywhere);
a counter or gauge may also be read from a function at scrape time, so components can
expose numbers they already keep (ingest's stats, the landing folder's backlog) without
keeping them twice. Every operation takes one lock, so any thread may update.
"""

from __future__ import annotations

import bisect
import json
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

Kind = Literal["counter", "gauge", "histogram"]
HealthCheck = Callable[[], tuple[int, dict[str, object]]]
"""Returns an HTTP status (200 healthy, 503 not) and a small JSON-able body."""
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0)


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _escape(text: str, *, quote: bool) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if quote else text


def _label_text(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_escape(v, quote=True)}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


class Child:
    """One labelled series of a family."""

    def __init__(self, family: Family) -> None:
        self._family = family
        self._lock = family.lock
        self.value = 0.0
        self.fn: Callable[[], float] | None = None
        self.counts = [0] * (len(family.buckets) + 1)
        self.sum = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if self._family.kind == "counter" and amount < 0:
            raise ValueError(f"{self._family.name}: a counter only goes up, got {amount!r}")
        with self._lock:
            self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self._gauge_only("dec")
        with self._lock:
            self.value -= amount

    def set(self, value: float) -> None:
        self._gauge_only("set")
        with self._lock:
            self.value = float(value)

    def set_function(self, fn: Callable[[], float]) -> None:
        """Read the value from ``fn`` at every scrape (replaces any earlier function)."""
        if self._family.kind == "histogram":
            raise ValueError(f"{self._family.name}: a histogram cannot be a function")
        with self._lock:
            self.fn = fn

    def observe(self, value: float) -> None:
        self.observe_many((value,))

    def observe_many(self, values: Iterable[float]) -> None:
        """Observe several values under one lock (a batch's latencies)."""
        if self._family.kind != "histogram":
            raise ValueError(f"{self._family.name}: observe is for histograms")
        buckets = self._family.buckets
        with self._lock:
            for v in values:
                self.counts[bisect.bisect_left(buckets, v)] += 1
                self.sum += v

    def _gauge_only(self, op: str) -> None:
        if self._family.kind != "gauge":
            raise ValueError(f"{self._family.name}: {op} is for gauges")

    def current(self) -> float:
        """The value now (calls the function of a function-backed series)."""
        with self._lock:
            fn, value = self.fn, self.value
        return float(fn()) if fn is not None else value


class Family:
    """A named metric with fixed label names; ``labels(...)`` picks a series."""

    def __init__(self, name: str, help: str, kind: Kind, labelnames: Sequence[str],
                 buckets: Sequence[float], lock: threading.Lock) -> None:
        self.name, self.help, self.kind = name, help, kind
        self.labelnames = tuple(labelnames)
        self.buckets = tuple(sorted(buckets))
        self.lock = lock
        self._children: dict[tuple[str, ...], Child] = {}

    def labels(self, **labels: str) -> Child:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, "
                             f"got {tuple(sorted(labels))}")
        key = tuple(str(labels[n]) for n in self.labelnames)
        with self.lock:
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = Child(self)
        return child

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {_escape(self.help, quote=False)}",
                 f"# TYPE {self.name} {self.kind}"]
        with self.lock:
            children = sorted(self._children.items())
        for key, child in children:
            pairs = list(zip(self.labelnames, key, strict=True))
            if self.kind != "histogram":
                try:
                    value = child.current()
                except Exception:  # noqa: BLE001 - one broken reading must not hide the rest
                    value = math.nan
                lines.append(f"{self.name}{_label_text(pairs)} {_fmt(value)}")
                continue
            with self.lock:
                counts, total = list(child.counts), child.sum
            running = 0
            for bound, n in zip((*self.buckets, math.inf), counts, strict=True):
                running += n
                le = _label_text([*pairs, ("le", _fmt(bound))])
                lines.append(f"{self.name}_bucket{le} {running}")
            lines.append(f"{self.name}_sum{_label_text(pairs)} {_fmt(total)}")
            lines.append(f"{self.name}_count{_label_text(pairs)} {running}")
        return lines


class Registry:
    """Every metric of one process; registering an existing name returns it again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: dict[str, Family] = {}

    def _family(self, name: str, help: str, kind: Kind, labelnames: Sequence[str],
                buckets: Sequence[float] = ()) -> Family:
        with self._lock:
            found = self._families.get(name)
            if found is not None:
                if found.kind != kind or found.labelnames != tuple(labelnames):
                    raise ValueError(f"metric {name!r} already registered as {found.kind} "
                                     f"with labels {found.labelnames}")
                return found
            family = Family(name, help, kind, labelnames, buckets, threading.Lock())
            self._families[name] = family
            return family

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Family:
        return self._family(name, help, "counter", labelnames)

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Family:
        return self._family(name, help, "gauge", labelnames)

    def histogram(self, name: str, help: str, labelnames: Sequence[str] = (),
                  buckets: Sequence[float] = DEFAULT_BUCKETS) -> Family:
        return self._family(name, help, "histogram", labelnames, buckets)

    def render(self) -> str:
        """The whole registry in Prometheus text format 0.0.4."""
        with self._lock:
            families = sorted(self._families.values(), key=lambda f: f.name)
        return "".join(line + "\n" for f in families for line in f.render())


REGISTRY = Registry()
"""The process's default registry (what ``shelflife ingest`` and ``stream`` serve)."""


class MetricsServer(ThreadingHTTPServer):
    """``GET /metrics`` (and ``/health`` when given a check) on a daemon thread;
    ``port`` is the bound port."""

    daemon_threads = True

    def __init__(self, registry: Registry, host: str, port: int,
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


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        if path in ("/health", "/health/") and self.server.health is not None:
            self._health(self.server.health)
            return
        if path not in ("/metrics", "/metrics/"):
            self.send_error(404, "only /metrics (and /health where offered) live here")
            return
        body = self.server.registry.render().encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

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

    def log_message(self, format: str, *args: object) -> None:  # scrapes are not news
        pass


def serve_metrics(registry: Registry = REGISTRY, port: int = 9810, *,
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
