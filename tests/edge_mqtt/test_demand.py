"""The simulator's demand: real shapes, catalogue levels, store hours, valid catalogue."""

from __future__ import annotations

import csv
import dataclasses
import random
import subprocess
import sys
from collections import defaultdict
from datetime import date, datetime, timedelta
from importlib import resources
from pathlib import Path

import pytest

from edge_mqtt.catalogue import CATALOGUE, SKUS, CategoryPolicy, Sku, get_sku, index_skus
from edge_mqtt.demand import CYCLE_DAYS, DAYS, HOURLY_SHARE, DemandModel, poisson

STORES = 300
EXPECTED_SERIES = 600  # scripts/extract_demand.py TARGET_SERIES
MONTH = [date(2026, 3, 2) + timedelta(days=i) for i in range(28)]  # 4 whole weeks


@pytest.fixture(scope="module")
def model() -> DemandModel:
    return DemandModel.load()


def _raw_rows() -> list[dict[str, str]]:
    folder = resources.files("edge_mqtt") / "data"
    entry = folder / "demand_profiles.csv"
    if not entry.is_file():
        import gzip

        text = gzip.decompress((folder / "demand_profiles.csv.gz").read_bytes()).decode()
    else:
        text = entry.read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


def test_profile_file_has_every_series_with_90_days(model: DemandModel) -> None:
    assert len(model.profiles) == EXPECTED_SERIES
    assert len({p.series_id for p in model.profiles}) == EXPECTED_SERIES
    for p in model.profiles:
        assert len(p.sale) == len(p.stockout_hours) == len(p.discount) == DAYS
        assert all(0 <= h <= 24 for h in p.stockout_hours)
    pool_sizes = defaultdict(int)
    for p in model.profiles:
        pool_sizes[p.first_category_id] += 1
    for item in CATALOGUE:
        assert pool_sizes[item.source_category_id] >= 12, item.sku


def test_attribution_ships_with_the_data() -> None:
    notice = (resources.files("edge_mqtt") / "data" / "NOTICE.md").read_text(encoding="utf-8")
    for needed in ("FreshRetailNet-50K", "Dingdong", "CC BY 4.0",
                   "creativecommons.org/licenses/by/4.0", "scripts/extract_demand.py"):
        assert needed in notice


def test_stores_get_varied_but_stable_series(model: DemandModel) -> None:
    again = DemandModel.load()
    for item in CATALOGUE:
        chosen = [model.series_for(s, item.sku).series_id for s in range(STORES)]
        assert chosen == [again.series_for(s, item.sku).series_id for s in range(STORES)]
        assert len(set(chosen)) >= 10, item.sku


def test_weekday_pattern_of_the_source_survives(model: DemandModel) -> None:
    # The source's weekend lift, measured on the shipped file itself.
    by_weekday: dict[int, list[float]] = defaultdict(list)
    for row in _raw_rows():
        start = date.fromisoformat(row["start_date"])
        for i, sale in enumerate(row["sale"].split(";")):
            by_weekday[(start + timedelta(days=i)).weekday()].append(float(sale))
    src = {wd: sum(v) / len(v) for wd, v in by_weekday.items()}
    src_lift = (src[5] + src[6]) / 2 / (sum(src[d] for d in range(5)) / 5)

    # The simulated weekend lift at a busy hour, over many stores and every SKU, in a
    # month outside the source's dates (so the day index wraps).
    sim: dict[int, list[float]] = defaultdict(list)
    for day in MONTH:
        noon = datetime.combine(day, datetime.min.time()).replace(hour=12, minute=30)
        for store in range(0, STORES, 5):
            for item in CATALOGUE:
                rate = model.rate(store, item.sku, noon) / item.typical_daily_units
                sim[day.weekday()].append(rate)
    mean = {wd: sum(v) / len(v) for wd, v in sim.items()}
    sim_lift = (mean[5] + mean[6]) / 2 / (sum(mean[d] for d in range(5)) / 5)

    assert abs(src_lift - 1) > 0.05, "source data lost its weekday pattern"
    assert (sim_lift - 1) * (src_lift - 1) > 0, (src_lift, sim_lift)
    assert abs(sim_lift - 1) > 0.5 * abs(src_lift - 1), (src_lift, sim_lift)


def test_real_day_keeps_its_weekday_across_wraps(model: DemandModel) -> None:
    p = model.profiles[0]
    for offset in range(-400, 1200):
        day = p.start + timedelta(days=offset)
        index = p.day_index(day)
        assert 0 <= index < DAYS
        assert (p.start + timedelta(days=index)).weekday() == day.weekday()
    cycle = [p.day_index(p.start + timedelta(days=i)) for i in range(CYCLE_DAYS)]
    assert cycle == [*range(DAYS), DAYS - 7]


def test_hourly_rates_add_up_to_the_day(model: DemandModel) -> None:
    day = MONTH[3]
    for store in (0, 17, 299):
        for item in CATALOGUE:
            hours = [model.rate(store, item.sku, datetime(day.year, day.month, day.day, h, 5))
                     for h in range(24)]
            assert sum(hours) == pytest.approx(model.daily_units(store, item.sku, day))
    assert sum(HOURLY_SHARE) == pytest.approx(1.0)


@pytest.mark.parametrize("first_day", [date(2026, 1, 5) + timedelta(days=14 * k)
                                       for k in range(7)])
def test_daily_means_match_the_catalogue_over_a_month(model: DemandModel,
                                                      first_day: date) -> None:
    # A real month drifts from the cycle mean with the source's season, holidays and
    # promotions: seafood (source category 5) moves by up to a third between months.
    # The fleet's total stays on plan.
    days = [first_day + timedelta(days=i) for i in range(28)]
    stores = range(0, STORES, 2)
    planned = sold = 0.0
    for item in CATALOGUE:
        mean = sum(model.daily_units(s, item.sku, d) for s in stores for d in days) / (
            len(stores) * len(days))
        assert mean == pytest.approx(item.typical_daily_units, rel=0.40), item.sku
        planned += item.typical_daily_units
        sold += mean
    assert sold == pytest.approx(planned, rel=0.05)


def test_daily_means_match_the_catalogue_over_the_full_cycle(model: DemandModel) -> None:
    days = [MONTH[0] + timedelta(days=i) for i in range(CYCLE_DAYS)]
    for item in CATALOGUE:
        stores = range(0, STORES, 10)
        mean = sum(model.daily_units(s, item.sku, d) for s in stores for d in days) / (
            len(stores) * len(days))
        assert mean == pytest.approx(item.typical_daily_units, rel=1e-9), item.sku


def test_sampled_sales_match_the_catalogue_over_a_month(model: DemandModel) -> None:
    rng = random.Random(7)
    start = datetime(2026, 3, 2)
    for sku in ("DAIRY-MILK-WH-1L", "SEA-COD-LOIN-280", "BAK-SOURDOUGH-600"):
        item = get_sku(sku)
        sold = sum(model.sample_sales(rng, s, sku, start, 28 * 86400) for s in range(40))
        expected = sum(model.expected_units(s, sku, start, 28 * 86400) for s in range(40))
        assert sold == pytest.approx(expected, rel=0.05), sku
        assert sold / (40 * 28) == pytest.approx(item.typical_daily_units, rel=0.20), sku


def test_no_sales_at_night(model: DemandModel) -> None:
    rng = random.Random(1)
    for day in MONTH[:7]:
        at_three = datetime(day.year, day.month, day.day, 3, 0)
        for store in range(0, STORES, 7):
            for item in CATALOGUE:
                assert model.rate(store, item.sku, at_three) == 0.0
                assert model.sample_sales(rng, store, item.sku, at_three, 3 * 3600) == 0
    lunch = datetime(2026, 3, 4, 12, 30)
    # Open hours sell, except on the odd real day with no sales at all.
    open_rates = [model.rate(s, item.sku, lunch) for s in range(STORES) for item in CATALOGUE]
    assert sum(r > 0 for r in open_rates) / len(open_rates) > 0.9


def test_bad_arguments_are_refused_by_name(model: DemandModel) -> None:
    noon = datetime(2026, 3, 4, 12)
    with pytest.raises(ValueError, match=r"sku.*'NOPE-1'"):
        model.rate(0, "NOPE-1", noon)
    with pytest.raises(ValueError, match=r"store_index.*-1"):
        model.rate(-1, "DAIRY-MILK-WH-1L", noon)
    with pytest.raises(ValueError, match=r"sim_seconds.*-5"):
        model.sample_sales(random.Random(0), 0, "DAIRY-MILK-WH-1L", noon, -5)


def test_poisson_mean_and_variance() -> None:
    rng = random.Random(3)
    for lam in (0.2, 4.0, 75.0):
        draws = [poisson(rng, lam) for _ in range(4000)]
        mean = sum(draws) / len(draws)
        var = sum((d - mean) ** 2 for d in draws) / len(draws)
        assert mean == pytest.approx(lam, rel=0.08)
        assert var == pytest.approx(lam, rel=0.15)
    assert poisson(rng, 0.0) == 0


# --- catalogue -----------------------------------------------------------------------------

def test_no_two_skus_share_an_id() -> None:
    ids = [item.sku for item in CATALOGUE]
    assert len(ids) == len(set(ids)) == len(SKUS)
    assert 20 <= len(ids) <= 30
    with pytest.raises(ValueError, match=r"sku.*listed twice.*'DAIRY-MILK-WH-1L'"):
        index_skus([*CATALOGUE, CATALOGUE[0]])


def test_catalogue_is_plausible() -> None:
    for item in CATALOGUE:
        assert item.unit_price > item.unit_cost
        assert item.min_sellable_days("store") <= item.min_sellable_days("warehouse")
        assert item.min_sellable_days("warehouse") < item.shelf_life_days
    assert {item.category for item in CATALOGUE} >= {"dairy", "bakery", "produce", "meat",
                                                     "seafood", "deli", "ready_meals"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sku", "bad sku/1"),
        ("description", " "),
        ("category", "toys"),
        ("shelf_life_days", 0),
        ("shelf_life_days", 2),  # not above the dairy warehouse minimum of 5
        ("unit_cost", -1.0),
        ("unit_price", 0.5),  # below the unit cost
        ("typical_daily_units", float("nan")),
        ("case_size", 0),
        ("case_size", True),
        ("source_category_id", -3),
    ],
)
def test_catalogue_errors_name_the_field_and_value(field: str, value: object) -> None:
    valid = get_sku("DAIRY-MILK-WH-1L")
    with pytest.raises(ValueError) as caught:
        dataclasses.replace(valid, **{field: value})
    assert field in str(caught.value)
    assert repr(value) in str(caught.value)


def test_category_policy_errors_name_the_field_and_value() -> None:
    with pytest.raises(ValueError, match=r"warehouse_min_sellable_days.*\(got 1\)"):
        CategoryPolicy("dairy", store_min_sellable_days=2, warehouse_min_sellable_days=1)
    with pytest.raises(ValueError, match=r"store_min_sellable_days.*-1"):
        CategoryPolicy("dairy", store_min_sellable_days=-1, warehouse_min_sellable_days=1)
    with pytest.raises(ValueError, match=r"location_kind.*'shop'"):
        CATALOGUE[0].min_sellable_days("shop")  # type: ignore[arg-type]
    assert isinstance(CATALOGUE[0], Sku)


def test_store_agent_needs_neither_pandas_nor_pyarrow() -> None:
    code = (
        "import sys\n"
        "from edge_mqtt.demand import DemandModel\n"
        "m = DemandModel.load()\n"
        "assert m.profiles\n"
        "heavy = {'pandas', 'pyarrow', 'numpy'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    repo = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=repo, check=True, timeout=60)
