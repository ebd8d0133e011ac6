"""The store agent's local HTTP door for POS and WMS systems (stdlib only).

``POST /events``  body: one request as in :mod:`edge_mqtt.recording`, e.g.
                  ``{"event_type": "sold", "sku": "MILK", "quantity": 2,
                  "unit_price": 1.29, "transaction_ref": "T-88"}``
                  -> 201 with the recorded event (envelope and payload).
``GET /stock``    optional ``?sku=`` -> 200 ``{"location_id", "stock": [{"sku", "on_hand",
                  "cohorts": [{"lot", "expires_on", "quantity"}]}]}``, cohorts FEFO.
``GET /orders``   optional ``?status=pending|dispatched|cancelled`` -> 200
                  ``{"location_id", "orders": [...]}``: approved transfers to ship.
``POST /orders/{order_id}/dispatch``  (no body) -> 201 with the ``transfer_out`` event;
                  422 when the order is unknown, already shipped or cancelled, its lot
                  no longer holds the quantity, or the lot is on hold (a recall).
``GET /holds``    -> 200 ``{"location_id", "holds": [{"sku", "lot", "on_hold", "reason",
                  "by", "at", ...}]}``: recalls this location has received. Sales never
                  draw a lot on hold; a transfer naming one is refused (422); waste it with
                  ``reason_code: "recall"``.

Operator actions (an ``adjusted`` event, shipping an order) need HTTP Basic credentials
of an operator (:mod:`edge_mqtt.operators`, ``shelflife agent operators add``): 401 with
``WWW-Authenticate`` without them or with a wrong password, and nothing is recorded; the
event's ``recorded_by`` is the operator. Sales, receipts, waste and counts from tills need
no login: the API listens on loopback unless told otherwise.
``GET /health``   -> 200 ``{"location_id", "region", "online", "last_seq", "acked_seq",
                  "outbox_depth", "agent_version"}``, plus ``"refused_messages": {"ack",
                  "order", "status"}`` when served next to the publisher.

Every refusal is JSON ``{"error", "field", "value"}``: 400 when the body cannot be read
as a JSON object, 422 when a field is wrong (unknown ``event_type``, missing or extra keys,
wrong JSON types, values the contract or the agent's own limits refuse: huge integers,
NaN/Infinity, control characters, on-hand beyond MAX_STOCK), 411/413/415 for a missing
length, a body over MAX_EVENT_BYTES or a non-JSON content type. A refused request never
reaches the outbox.

Recording touches only SQLite: the publisher is woken after the commit and sends in its
own thread, so a sale is never held up by the broker or the network. Each request gets
its own thread, so a slow client cannot hold up a till, and requests recording at the
same moment share one commit (:mod:`edge_mqtt.group_commit`); a 201 is sent only after
the commit holding the event has returned (fsynced, with ``synchronous=FULL``).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from lakehouse.contract import MAX_EVENT_BYTES, ContractError, check_id

from .agent import AGENT_VERSION, StoreAgent
from .operators import Operators
from .recording import OPERATOR_ACTIONS, record
from .store import ORDER_STATUSES

if TYPE_CHECKING:
    from .publisher import Publisher

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
MAX_BODY = MAX_EVENT_BYTES
"""Largest request body accepted: no bigger than the event it becomes may be (a full
count of a big store fits); larger bodies get 413."""
DRAIN_MAX = 2 * MAX_BODY
"""A refused body up to this size is read and dropped before the 413 goes out, so an
ordinary client sees the answer instead of a reset connection; anything larger is left
unread and the connection closed, so a stranger cannot make the agent read gigabytes."""


class AgentHTTPServer(ThreadingHTTPServer):
    """Serves one agent in a background thread; :meth:`shutdown` stops and closes it."""

    daemon_threads = True

    def __init__(self, agent: StoreAgent, host: str, port: int, *,
                 max_body: int = MAX_BODY, publisher: Publisher | None = None) -> None:
        super().__init__((host, port), _Handler)
        self.agent = agent
        self.publisher = publisher
        self.max_body = max_body
        self.operators = Operators(agent.db.path)
        # No lock here: the agent guards its connection itself, and requests recording at
        # the same moment must reach it together to share one commit (group commit).
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        # A short poll keeps shutdown quick; idle cost is a few wake-ups a second.
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True,
                                        name=f"http-{self.agent.location_id}")
        self._thread.start()

    def shutdown(self) -> None:
        """Stop serving, wait for the loop to end and release the port."""
        if self._thread is not None:
            super().shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.server_close()
        self.operators.close()


def serve_agent(agent: StoreAgent, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
                max_body: int = MAX_BODY, publisher: Publisher | None = None
                ) -> AgentHTTPServer:
    """Start the HTTP API for ``agent`` in the background (``port=0`` picks a free one);
    with its ``publisher``, ``GET /health`` also counts refused acks and orders."""
    server = AgentHTTPServer(agent, host, port, max_body=max_body, publisher=publisher)
    server.start()
    log.info("%s: HTTP API on %s", agent.location_id, server.url)
    return server


def health(agent: StoreAgent, publisher: Publisher | None = None) -> dict[str, Any]:
    """What an operator checks first: is it connected, how far behind is the ack, and
    has anyone been sending it messages it had to refuse."""
    out = {"location_id": agent.location_id, "region": agent.region,
           "online": agent.online, "last_seq": agent.last_seq,
           "acked_seq": agent.acked_seq, "outbox_depth": agent.outbox_depth(),
           "agent_version": AGENT_VERSION}
    if publisher is not None:
        out["refused_messages"] = dict(publisher.refused)
    return out


def stock(agent: StoreAgent, sku: str | None = None) -> dict[str, Any]:
    """On-hand and FEFO cohorts; a SKU asked for by name is listed even with none."""
    rows = agent.stock(sku)
    if sku is not None and not rows:
        rows = [{"sku": sku, "on_hand": 0, "cohorts": []}]
    return {"location_id": agent.location_id, "stock": rows}


class _Refused(Exception):
    """A request turned away before it reached the agent."""

    def __init__(self, status: HTTPStatus, field: str | None, value: Any, reason: str) -> None:
        error = f"{field}: {reason}" if field else reason
        super().__init__(error)
        self.status, self.field, self.value, self.error = status, field, value, error


class _Handler(BaseHTTPRequestHandler):
    server: AgentHTTPServer
    server_version = "shelflife-agent"
    timeout = 30  # seconds a client may take to send its request

    # --- routing -----------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
        url = urlsplit(self.path)
        try:
            if url.path == "/health":
                self._send(HTTPStatus.OK, health(self.server.agent, self.server.publisher))
            elif url.path == "/stock":
                sku = self._stock_query(url.query)
                self._send(HTTPStatus.OK, stock(self.server.agent, sku))
            elif url.path == "/orders":
                status = self._orders_query(url.query)
                self._send(HTTPStatus.OK, {"location_id": self.server.agent.location_id,
                                           "orders": self.server.agent.orders(status)})
            elif url.path == "/holds":
                self._send(HTTPStatus.OK, {"location_id": self.server.agent.location_id,
                                           "holds": self.server.agent.holds()})
            elif url.path == "/events":
                self._refuse(_Refused(HTTPStatus.METHOD_NOT_ALLOWED, "method", "GET",
                                      "use POST /events"), allow="POST")
            else:
                self._not_found(url.path)
        except _Refused as exc:
            self._refuse(exc)

    def do_POST(self) -> None:  # noqa: N802 (stdlib naming)
        path = urlsplit(self.path).path
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "orders" and parts[2] == "dispatch":
            try:
                who = self._operator()
            except _Refused as exc:
                self._refuse(exc)
                return
            self._record("dispatch", lambda: self.server.agent.dispatch_order(
                parts[1], recorded_by=who))
            return
        if path != "/events":
            if path in ("/stock", "/health", "/orders", "/holds"):
                self._refuse(_Refused(HTTPStatus.METHOD_NOT_ALLOWED, "method", "POST",
                                      f"use GET {path}"), allow="GET")
            else:
                self._not_found(path)
            return
        try:
            request = self._read_json()
            who = (self._operator() if isinstance(request, dict)
                   and request.get("event_type") in OPERATOR_ACTIONS else None)
        except _Refused as exc:
            self._refuse(exc)
            return
        self._record("recording", lambda: record(self.server.agent, request,
                                                 recorded_by=who))

    def _operator(self) -> str:
        """The operator named by valid HTTP Basic credentials, else a 401 refusal."""
        header = self.headers.get("Authorization") or ""
        scheme, _, token = header.partition(" ")
        name = password = None
        if scheme.lower() == "basic" and token:
            try:
                name, sep, password = base64.b64decode(token.strip(), validate=True) \
                    .decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                name = sep = None
            if not sep:
                name = None
        if not name or password is None:
            raise _Refused(HTTPStatus.UNAUTHORIZED, "authorization", None,
                           "an operator login is needed (HTTP Basic; shelflife agent "
                           "operators add NAME)")
        if not self.server.operators.verify(name, password):
            log.warning("%s: refused operator login %r from %s",
                        self.server.agent.location_id, name, self.address_string())
            raise _Refused(HTTPStatus.UNAUTHORIZED, "authorization", name,
                           "unknown operator or wrong password")
        return name

    def _record(self, what: str, action: Callable[[], dict[str, Any]]) -> None:
        """Run one recording: 201 with the event once committed, or the refusal."""
        try:
            event = action()
        except ContractError as exc:
            self._refuse(_Refused(HTTPStatus.UNPROCESSABLE_ENTITY, exc.field, exc.value,
                                  exc.reason))
        except Exception:
            log.exception("%s: %s failed", self.server.agent.location_id, what)
            self._refuse(_Refused(HTTPStatus.INTERNAL_SERVER_ERROR, None, None,
                                  "internal error; nothing was recorded"))
        else:
            self._send(HTTPStatus.CREATED, event)

    # --- request parts -----------------------------------------------------------------

    def _query(self, query: str, name: str) -> str | None:
        """The one query parameter a GET takes (the last value if repeated), or None."""
        params = parse_qs(query, keep_blank_values=True)
        unknown = sorted(set(params) - {name})
        if unknown:
            raise _Refused(HTTPStatus.BAD_REQUEST, unknown[0], params[unknown[0]][0],
                           f"unknown query parameter {unknown[0]!r} (expected {name})")
        return params[name][-1] if name in params else None

    def _orders_query(self, query: str) -> str | None:
        status = self._query(query, "status")
        if status is not None and status not in ORDER_STATUSES:
            raise _Refused(HTTPStatus.BAD_REQUEST, "status", status,
                           f"expected one of {', '.join(ORDER_STATUSES)}")
        return status

    def _stock_query(self, query: str) -> str | None:
        sku = self._query(query, "sku")
        if sku is None:
            return None
        try:
            return check_id("sku", sku)
        except ContractError as exc:
            raise _Refused(HTTPStatus.BAD_REQUEST, exc.field, exc.value, exc.reason) from exc

    def _drain(self, length: int) -> None:
        """Read and drop a refused body (bounded by DRAIN_MAX and the socket timeout)."""
        left = length
        try:
            while left > 0:
                chunk = self.rfile.read(min(left, 65536))
                if not chunk:
                    return
                left -= len(chunk)
        except OSError:
            return

    def _read_json(self) -> Any:
        ctype = self.headers.get("Content-Type", "")
        if ctype.split(";")[0].strip().lower() != "application/json":
            self.close_connection = True
            raise _Refused(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "Content-Type", ctype or None,
                           "expected application/json")
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            self.close_connection = True
            raise _Refused(HTTPStatus.LENGTH_REQUIRED, "Content-Length", None,
                           "a Content-Length is required")
        try:
            length = int(length_text)
            if length < 0:
                raise ValueError(length_text)
        except ValueError:
            self.close_connection = True
            raise _Refused(HTTPStatus.BAD_REQUEST, "Content-Length", length_text,
                           "expected a byte count") from None
        if length > self.server.max_body:
            self.close_connection = True
            if length <= DRAIN_MAX:
                self._drain(length)
            raise _Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Content-Length", length,
                           f"body larger than {self.server.max_body} bytes")
        raw = self.rfile.read(length)
        try:
            # NaN and Infinity parse as floats, so the field check names the field (422).
            request = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise _Refused(HTTPStatus.BAD_REQUEST, "body", raw[:80].decode("latin-1"),
                           "not UTF-8") from None
        except ValueError as exc:
            raise _Refused(HTTPStatus.BAD_REQUEST, "body", raw[:80].decode("utf-8", "replace"),
                           f"not JSON: {exc}") from None
        if not isinstance(request, dict):
            raise _Refused(HTTPStatus.BAD_REQUEST, "body", request, "expected a JSON object")
        return request

    # --- responses ---------------------------------------------------------------------

    def _not_found(self, path: str) -> None:
        self._refuse(_Refused(HTTPStatus.NOT_FOUND, "path", path,
                              "expected POST /events, GET /stock, GET /orders, "
                              "POST /orders/{id}/dispatch, GET /holds or GET /health"))

    def _refuse(self, exc: _Refused, *, allow: str | None = None) -> None:
        value = exc.value
        if isinstance(value, float) and not math.isfinite(value):
            value = repr(value)  # keep the answer strict JSON
        body = {"error": exc.error, "field": exc.field, "value": value}
        self._send(exc.status, body, allow=allow)

    def _send(self, status: HTTPStatus, body: Any, *, allow: str | None = None) -> None:
        data = json.dumps(body, default=repr).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if allow:
            self.send_header("Allow", allow)
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", 'Basic realm="shelflife-agent"')
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)
