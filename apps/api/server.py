"""The read API: stock availability for other systems, straight from gold, without a JVM.

A web shop asking "is it in stock at your store?" or a warehouse system planning picks
needs the same numbers the dashboard shows, as JSON, within a second or two of the
stores. This serves them from gold ``stock_levels`` through delta-rs (no Spark), with
each answer's age: when the region's stream last confirmed its stock (``region_status``)
and whether that region is live or still catching up.

Gold changes every second, so the server keeps one snapshot of the tables in memory and
rereads them only when a request arrives and the table's version has moved, at most once
per ``refresh_s``. Every request but ``/healthz`` and the documentation needs an API key
(:mod:`apps.api.keys`) as ``Authorization: Bearer <token>``.

FastAPI because it is what Python HTTP APIs are written in today: typed parameters that
refuse bad input with the field named (HTTP 422), and the OpenAPI description generated
from the same code. Its stock ``/docs`` page loads Swagger UI from a CDN; this one renders
the OpenAPI description itself, so it works on a network without one.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations at
# run time, and the aliases made inside create_app would be unresolvable strings.
import argparse
import functools
import html
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any

import pandas as pd
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Path, Query
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from apps.api.keys import ApiKeysFile, keys_file_path
from lakehouse.catalogue import REGION_STATUS, STOCK_LEVELS
from lakehouse.contract import REGIONS
from lakehouse.readers import read_table, table_version

log = logging.getLogger("shelflife.api")

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""Location ids and SKUs as the event contract allows them (``lakehouse.contract``)."""
REGION_PATTERN = "^(" + "|".join(REGIONS) + ")$"
MAX_LIMIT = 10_000
REFUSED: dict[int | str, dict[str, Any]] = {
    401: {"description": "no API key, or not a valid one"}}
_LEVEL_COLUMNS = ["region", "location_id", "sku", "on_hand", "sellable", "expiring_48h",
                  "expired", "earliest_expiry", "in_transit_in", "updated_at"]


class Stock(BaseModel):
    """One SKU at one location."""

    region: str
    location_id: str
    sku: str
    in_stock: bool = Field(description="at least one sellable unit (sellable > 0)")
    on_hand: int = Field(description="units on hand, expired ones included")
    sellable: int = Field(description="units on hand that are not expired")
    expiring_48h: int = Field(description="sellable units that expire within 48 hours")
    expired: int = Field(description="units on hand past their expiry date")
    earliest_expiry: date | None = Field(description="the earliest expiry among its lots")
    in_transit_in: int = Field(description="units on their way to this location")
    changed_at: datetime | None = Field(
        description="time of the latest event that moved this location's stock")
    as_of: datetime | None = Field(
        description="when the region's stream last confirmed its stock")
    age_s: float | None = Field(description="seconds since as_of, at the time of the answer")
    region_mode: str | None = Field(
        description="live, or syncing while the region catches up on a backlog")


class StockPage(BaseModel):
    items: list[Stock]
    total: int = Field(description="rows matching the filters, before limit and offset")


class RegionTotal(BaseModel):
    """One SKU summed over one region's locations."""

    region: str
    sku: str
    on_hand: int
    sellable: int
    expiring_48h: int
    locations: int = Field(description="locations that hold a row for this SKU")
    locations_in_stock: int = Field(description="locations with a sellable unit")
    as_of: datetime | None
    age_s: float | None
    region_mode: str | None


class Health(BaseModel):
    status: str
    tables: dict[str, int | None] = Field(description="version of each table served")


@dataclass(frozen=True)
class Snapshot:
    """The tables as of one version each: stock rows and each region's status."""

    levels: pd.DataFrame
    status: dict[str, dict[str, Any]]
    versions: dict[str, int | None]

    @functools.cached_property
    def position(self) -> dict[tuple[str, str], int]:
        """Row of each (location, SKU): a store's lookup is a dict access, not a scan of
        150,000 rows. Built on the first lookup of each snapshot."""
        return {key: i for i, key in enumerate(zip(self.levels["location_id"],
                                                   self.levels["sku"], strict=True))}


class Gold:
    """Gold as the API serves it: reread when a table's version moves, at most once per
    ``refresh_s``, by one request while the others use the previous snapshot."""

    def __init__(self, root: str, refresh_s: float = 1.0) -> None:
        self.root, self.refresh_s = root, refresh_s
        self._snap = Snapshot(pd.DataFrame(columns=_LEVEL_COLUMNS), {}, {})
        self._checked = float("-inf")
        self._loaded = False
        self._lock = threading.Lock()

    def snapshot(self) -> Snapshot:
        """The current snapshot; the first call (and any call racing it) waits for the
        first read, later ones never wait for another request's reread."""
        if self._loaded and time.monotonic() - self._checked < self.refresh_s:
            return self._snap
        if not self._lock.acquire(blocking=not self._loaded):
            return self._snap
        try:
            if self._loaded and time.monotonic() - self._checked < self.refresh_s:
                return self._snap  # another request reread it while this one waited
            self._checked = time.monotonic()
            versions = {"stock_levels": table_version(STOCK_LEVELS, self.root),
                        "region_status": table_version(REGION_STATUS, self.root)}
            if versions != self._snap.versions:
                self._snap = self._read(versions)
            self._loaded = True
        except Exception as exc:  # storage trouble: answer from the last snapshot
            log.warning("api: cannot read gold (%s); serving the snapshot of %s", exc,
                        self._snap.versions or "nothing yet")
            if not self._loaded:
                raise HTTPException(503, "the lakehouse cannot be read yet") from exc
        finally:
            self._lock.release()
        return self._snap

    def _read(self, versions: dict[str, int | None]) -> Snapshot:
        levels = None
        if versions["stock_levels"] is not None:
            levels = read_table(STOCK_LEVELS, self.root, columns=_LEVEL_COLUMNS,
                                version=versions["stock_levels"])
        if levels is None:
            levels = pd.DataFrame(columns=_LEVEL_COLUMNS)
        status: dict[str, dict[str, Any]] = {}
        if versions["region_status"] is not None:
            rows = read_table(REGION_STATUS, self.root, columns=["region", "mode", "updated_at"],
                              version=versions["region_status"])
            for r in (rows.to_dict("records") if rows is not None else []):
                status[r["region"]] = r
        return Snapshot(levels.reset_index(drop=True), status, versions)


def _when(value: Any) -> datetime | None:
    if value is None or pd.isna(value):
        return None
    return pd.Timestamp(value).to_pydatetime()


def _freshness(status: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    as_of = _when(status.get("updated_at")) if status else None
    return {"as_of": as_of,
            "age_s": round((now - as_of).total_seconds(), 3) if as_of else None,
            "region_mode": status.get("mode") if status else None}


def _int(value: Any) -> int:
    """A count as stored; a null (NaN once pandas has it) counts as none."""
    return 0 if value is None or pd.isna(value) else int(value)


def _stock(row: dict[str, Any], snap: Snapshot, now: datetime) -> Stock:
    expiry = row["earliest_expiry"]
    return Stock(region=row["region"], location_id=row["location_id"], sku=row["sku"],
                 in_stock=_int(row["sellable"]) > 0, on_hand=_int(row["on_hand"]),
                 sellable=_int(row["sellable"]), expiring_48h=_int(row["expiring_48h"]),
                 expired=_int(row["expired"]),
                 earliest_expiry=None if expiry is None or pd.isna(expiry) else expiry,
                 in_transit_in=_int(row["in_transit_in"]),
                 changed_at=_when(row["updated_at"]),
                 **_freshness(snap.status.get(row["region"]), now))


def create_app(lakehouse: str, keys: ApiKeysFile, *, refresh_s: float = 1.0) -> FastAPI:
    """The API over ``lakehouse`` (a folder or ``s3://``), letting in ``keys``' holders."""
    gold = Gold(lakehouse, refresh_s)
    app = FastAPI(title="Shelflife read API", version="1",
                  description="Stock per SKU, location and region, from the lakehouse's "
                              "gold tables, with the age of the data.",
                  docs_url=None, redoc_url=None)
    bearer = HTTPBearer(auto_error=False, description="an API key from "
                                                      "`shelflife api-keys add NAME`")

    def client(credentials: Annotated[HTTPAuthorizationCredentials | None,
                                      Depends(bearer)]) -> str:
        name = keys.check(credentials.credentials) if credentials else None
        if name is None:
            raise HTTPException(401, "an API key is needed: Authorization: Bearer <token>",
                                headers={"WWW-Authenticate": "Bearer"})
        return name

    Client = Annotated[str, Depends(client)]
    LocationId = Annotated[str, Path(pattern=ID_PATTERN, description="location id")]
    Sku = Annotated[str, Path(pattern=ID_PATTERN, description="SKU")]

    @app.get("/healthz", response_model=Health, tags=["service"], summary="Health")
    def healthz() -> Health:
        """Up, and the versions of the tables it serves (no key needed)."""
        return Health(status="ok", tables=gold.snapshot().versions)

    @app.get("/v1/availability", response_model=StockPage, tags=["stock"],
             summary="Stock matching filters", responses=REFUSED)
    def availability(
        who: Client,
        sku: Annotated[str | None, Query(pattern=ID_PATTERN, description="only this SKU")
                       ] = None,
        location_id: Annotated[str | None, Query(
            pattern=ID_PATTERN, description="only this location")] = None,
        region: Annotated[str | None, Query(pattern=REGION_PATTERN,
                                            description="only this region")] = None,
        in_stock: Annotated[bool | None, Query(
            description="only rows with (true) or without (false) a sellable unit")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="rows per page")] = 1000,
        offset: Annotated[int, Query(ge=0, description="rows to skip")] = 0,
    ) -> StockPage:
        """Stock rows matching every filter given, ordered by region, location and SKU."""
        snap, now = gold.snapshot(), datetime.now(UTC)
        rows = snap.levels
        for column, value in (("sku", sku), ("location_id", location_id), ("region", region)):
            if value is not None:
                rows = rows[rows[column] == value]
        if in_stock is not None:
            rows = rows[(rows["sellable"] > 0) == in_stock]
        rows = rows.sort_values(["region", "location_id", "sku"])
        page = rows.iloc[offset:offset + limit].to_dict("records")
        return StockPage(items=[_stock(r, snap, now) for r in page], total=len(rows))

    @app.get("/v1/availability/{location_id}/{sku}", response_model=Stock, tags=["stock"],
             summary="One SKU at one location",
             responses={**REFUSED, 404: {"description": "no stock row for this location "
                                                         "and SKU"}})
    def one(who: Client, location_id: LocationId, sku: Sku) -> Stock:
        """One SKU at one location: the "in stock at your store?" question."""
        snap = gold.snapshot()
        at = snap.position.get((location_id, sku))
        if at is None:
            raise HTTPException(404, f"no stock of {sku} recorded at {location_id}")
        return _stock(snap.levels.iloc[at].to_dict(), snap, datetime.now(UTC))

    @app.get("/v1/regions/{sku}", response_model=list[RegionTotal], tags=["stock"],
             summary="One SKU per region", responses=REFUSED)
    def by_region(who: Client, sku: Sku) -> list[RegionTotal]:
        """One SKU summed per region: where the network has it and how much will expire."""
        snap, now = gold.snapshot(), datetime.now(UTC)
        rows = snap.levels[snap.levels["sku"] == sku]
        out = []
        for region, g in rows.groupby("region", sort=True):
            out.append(RegionTotal(
                region=str(region), sku=sku, on_hand=int(g["on_hand"].sum()),
                sellable=int(g["sellable"].sum()), expiring_48h=int(g["expiring_48h"].sum()),
                locations=len(g), locations_in_stock=int((g["sellable"] > 0).sum()),
                **_freshness(snap.status.get(str(region)), now)))
        return out

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def docs() -> str:
        return render_docs(app.openapi())

    return app


def _schema_text(schema: dict[str, Any]) -> str:
    if "anyOf" in schema:
        return " or ".join(_schema_text(s) for s in schema["anyOf"])
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if schema.get("type") == "array":
        return f"list of {_schema_text(schema.get('items', {}))}"
    text = schema.get("format") or schema.get("type", "")
    limits = [f"{k} {schema[k]}" for k in ("minimum", "maximum", "pattern") if k in schema]
    return text + (f" ({', '.join(limits)})" if limits else "")


def render_docs(spec: dict[str, Any]) -> str:
    """The OpenAPI description as one self-contained HTML page (no scripts, no CDN)."""
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(spec['info']['title'])}"
             "</title><style>body{font-family:sans-serif;max-width:60em;margin:2em auto;"
             "color:#222}code,pre{background:#f4f4f4;padding:0 .3em}table{border-collapse:"
             "collapse}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}"
             "h2{margin-top:2em;border-bottom:1px solid #ccc}</style></head><body>",
             f"<h1>{e(spec['info']['title'])}</h1><p>{e(spec['info'].get('description', ''))}"
             "</p><p>Every request except <code>/healthz</code> needs "
             "<code>Authorization: Bearer &lt;token&gt;</code>, a key from "
             "<code>shelflife api-keys add NAME</code>. The machine-readable description is "
             "<a href='/openapi.json'>/openapi.json</a>.</p>"]
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            parts.append(f"<h2><code>{e(method.upper())} {e(path)}</code></h2>"
                         f"<p><b>{e(op.get('summary', ''))}</b>. "
                         f"{e(op.get('description', ''))}</p>")
            params = op.get("parameters", [])
            if params:
                parts.append("<table><tr><th>parameter</th><th>in</th><th>type</th>"
                             "<th>required</th><th>description</th></tr>")
                for p in params:
                    parts.append(f"<tr><td><code>{e(p['name'])}</code></td><td>{e(p['in'])}"
                                 f"</td><td>{e(_schema_text(p.get('schema', {})))}</td>"
                                 f"<td>{'yes' if p.get('required') else 'no'}</td>"
                                 f"<td>{e(p.get('description', ''))}</td></tr>")
                parts.append("</table>")
            codes = ", ".join(f"{c} {r.get('description', '')}"
                              for c, r in op.get("responses", {}).items())
            parts.append(f"<p>Answers: {e(codes)}</p>")
    parts.append("<h2>Schemas</h2>")
    for name, schema in spec.get("components", {}).get("schemas", {}).items():
        if name.startswith(("HTTPValidationError", "ValidationError")):
            continue
        parts.append(f"<h3>{e(name)}</h3><table><tr><th>field</th><th>type</th>"
                     "<th>description</th></tr>")
        for field, prop in schema.get("properties", {}).items():
            parts.append(f"<tr><td><code>{e(field)}</code></td>"
                         f"<td>{e(_schema_text(prop))}</td>"
                         f"<td>{e(prop.get('description', ''))}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "".join(parts)


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def cmd_api(args: argparse.Namespace) -> int:
    """``shelflife api``."""
    return serve(args.lakehouse, host=args.host, port=args.port,
                 keys_file=str(keys_file_path(args.keys_file, args.lakehouse)),
                 tls_cert=args.tls_cert, tls_key=args.tls_key)


def serve(lakehouse: str, *, host: str, port: int, keys_file: str,
          tls_cert: str | None = None, tls_key: str | None = None) -> int:
    """Run the API until stopped. Loopback by default; another address without TLS is
    allowed but warned about, because keys would cross the network in the clear."""
    if bool(tls_cert) != bool(tls_key):
        raise SystemExit("api: --tls-cert and --tls-key go together")
    keys = ApiKeysFile(keys_file)
    if not keys.keys():
        log.warning("api: no API keys in %s: every request will be refused until one is "
                    "added with `shelflife api-keys add NAME`", keys_file)
    if host not in LOOPBACK and not tls_cert:
        log.warning("api: listening on %s without TLS: API keys and stock cross the network "
                    "in the clear; give --tls-cert and --tls-key", host)
    scheme = "https" if tls_cert else "http"
    print(f"api: serving {lakehouse} on {scheme}://{host}:{port} "
          f"(documentation at /docs, keys in {keys_file})", flush=True)
    uvicorn.run(create_app(lakehouse, keys), host=host, port=port, log_level="warning",
                ssl_certfile=tls_cert, ssl_keyfile=tls_key, access_log=False,
                timeout_graceful_shutdown=5, server_header=False)
    return 0
