"""The read API, served by ``shelflife api`` in its own process and asked over HTTP as a
web shop would: stock at a store with its age, refusals without a key, bad ids named,
and the documentation page."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from lakehouse.catalogue import REGION_STATUS, STOCK_LEVELS
from spark_jobs.decisions.jobs import write_table
from tests.apps.api import add_key, served_api, shelflife

TODAY = date.today()


def write_levels(root: Path, rows: list[tuple[str, str, str, int, int, int]]) -> None:
    """Gold ``stock_levels`` as the stream writes it: (region, location, sku, on_hand,
    sellable, expiring within 48 h) per row."""
    now = datetime.now(UTC)
    frame = pd.DataFrame([{
        "region": region, "location_id": loc, "sku": sku, "on_hand": on_hand, "cohorts": 1,
        "earliest_expiry": TODAY + timedelta(days=1 if expiring else 5),
        "sellable": sellable, "expiring_48h": expiring, "expired": on_hand - sellable,
        "in_transit_in": 0, "in_transit_out": 0, "last_seq": 10, "last_count_seq": 0,
        "contiguous_seq": 10, "seqs_after_gap": [], "updated_at": now - timedelta(minutes=3)}
        for region, loc, sku, on_hand, sellable, expiring in rows])
    write_table(STOCK_LEVELS, frame, root)


def write_status(root: Path, ago_s: float) -> None:
    now = datetime.now(UTC)
    frame = pd.DataFrame([{
        "region": region, "mode": mode, "events_total": 100, "events_last_batch": 3,
        "batch_duration_s": 0.2, "last_event_at": now, "lag_s": 0.5,
        "updated_at": now - timedelta(seconds=ago_s), "minutes_behind": 0.0,
        "backlog_events": 0, "backlog_files": 0, "events_per_s": 100.0}
        for region, mode in (("east", "live"), ("west", "syncing"))])
    write_table(REGION_STATUS, frame, root)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("lake")
    write_levels(root, [("east", "E-S001", "DAIRY-MILK-1L", 12, 10, 4),
                        ("east", "E-S002", "DAIRY-MILK-1L", 0, 0, 0),
                        ("east", "E-S001", "BAK-BREAD-WHT", 5, 5, 0),
                        ("west", "W-S001", "DAIRY-MILK-1L", 7, 7, 0)])
    write_status(root, ago_s=2.0)
    keys = root / "keys.json"
    token = add_key(keys, "webshop")
    with served_api(root, keys, root / "api.log") as served:
        served.token = token
        yield served, root, keys


def test_a_web_shop_sees_stock_at_a_store_with_the_age_of_the_data(api) -> None:
    served, _, _ = api
    status, milk = served.get("/v1/availability/E-S001/DAIRY-MILK-1L")
    assert status == 200, milk
    assert (milk["in_stock"], milk["on_hand"], milk["sellable"], milk["expiring_48h"],
            milk["expired"]) == (True, 12, 10, 4, 2)
    assert milk["earliest_expiry"] == (TODAY + timedelta(days=1)).isoformat()
    assert milk["region_mode"] == "live"
    assert 2.0 <= milk["age_s"] < 60, "age counts from the region's last confirmation"

    status, empty = served.get("/v1/availability/E-S002/DAIRY-MILK-1L")
    assert status == 200 and empty["in_stock"] is False

    status, missing = served.get("/v1/availability/E-S009/DAIRY-MILK-1L")
    assert status == 404 and "E-S009" in missing["detail"]

    status, page = served.get("/v1/availability?sku=DAIRY-MILK-1L&in_stock=true")
    assert status == 200
    assert [(r["region"], r["location_id"]) for r in page["items"]] == [
        ("east", "E-S001"), ("west", "W-S001")]
    assert page["items"][1]["region_mode"] == "syncing", "a catching-up region says so"

    status, regions = served.get("/v1/regions/DAIRY-MILK-1L")
    assert status == 200
    assert {r["region"]: (r["sellable"], r["locations"], r["locations_in_stock"])
            for r in regions} == {"east": (10, 2, 1), "west": (7, 1, 1)}


def test_new_stock_in_gold_is_served_within_seconds(api) -> None:
    served, root, _ = api
    write_levels(root, [("east", "E-S001", "DAIRY-MILK-1L", 30, 30, 0),
                        ("west", "W-S001", "DAIRY-MILK-1L", 7, 7, 0)])
    deadline = time.monotonic() + 10
    while served.get("/v1/availability/E-S001/DAIRY-MILK-1L")[1].get("on_hand") != 30:
        assert time.monotonic() < deadline, "the API kept serving an old version of gold"
        time.sleep(0.2)


def test_without_a_valid_key_nothing_is_served(api) -> None:
    served, _, keys = api
    for token in (None, "", "not-a-token", "0123456789ab." + "x" * 43,
                  served.token[:-1] + ("A" if served.token[-1] != "A" else "B")):
        status, body = served.get("/v1/availability?sku=DAIRY-MILK-1L", token)
        assert status == 401, (token, body)
        assert "DAIRY-MILK-1L" not in str(body)
    assert served.get("/healthz", None)[0] == 200, "health needs no key"

    other = add_key(keys, "warehouse-system")
    assert served.get("/v1/regions/DAIRY-MILK-1L", other)[0] == 200
    assert shelflife("api-keys", "remove", "warehouse-system", "--keys-file",
                     str(keys)).returncode == 0
    assert served.get("/v1/regions/DAIRY-MILK-1L", other)[0] == 401, \
        "a removed key stops working without a restart"
    listed = shelflife("api-keys", "list", "--keys-file", str(keys))
    assert "webshop" in listed.stdout and served.token.split(".")[1] not in keys.read_text()


def test_bad_ids_and_limits_are_refused_naming_the_field(api) -> None:
    served, _, _ = api
    status, body = served.get("/v1/availability/E%20S001/DAIRY-MILK-1L")
    assert status == 422 and body["detail"][0]["loc"] == ["path", "location_id"]
    status, body = served.get("/v1/availability?limit=0")
    assert status == 422 and body["detail"][0]["loc"] == ["query", "limit"]
    status, body = served.get("/v1/availability?region=mars")
    assert status == 422 and body["detail"][0]["loc"] == ["query", "region"]


def test_the_documentation_page_describes_every_endpoint_offline(api) -> None:
    served, _, _ = api
    status, spec = served.get("/openapi.json", None)
    assert status == 200
    paths = set(spec["paths"])
    assert {"/v1/availability", "/v1/availability/{location_id}/{sku}",
            "/v1/regions/{sku}", "/healthz"} <= paths
    status, page = served.get("/docs", None)
    assert status == 200
    for path in paths:
        assert path in page
    assert "<script" not in page and "cdn" not in page.lower(), \
        "the page needs nothing from the internet"
    assert "Bearer" in page and "expiring_48h" in page


def test_a_second_key_for_the_same_system_needs_reset(tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    first = add_key(keys, "webshop")
    again = shelflife("api-keys", "add", "webshop", "--keys-file", str(keys))
    assert again.returncode == 2 and "--reset" in again.stderr
    reset = shelflife("api-keys", "add", "webshop", "--reset", "--keys-file", str(keys))
    assert reset.returncode == 0 and reset.stdout.strip() != first
    assert oct(keys.stat().st_mode & 0o777) == "0o600"
