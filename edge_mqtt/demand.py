"""Expected and sampled customer demand for the store-fleet simulator.

Demand comes from real sales (FreshRetailNet-50K, CC BY 4.0; see
``edge_mqtt/data/NOTICE.md``) so the weekday pattern, promotions, weather and holidays
of a real fresh grocer carry into every simulated store. The model runs on store hardware
with the standard library only.

Decisions:

* **Which series.** Each (store, SKU) pair gets one real series from the pool of the
  SKU's ``source_category_id``, chosen by SHA-256 of ``"{store_index}:{sku}"``: stable
  across runs, machines and Python versions (``hash()`` is salted), and spread evenly so
  neighbouring stores do not move in lock-step. A category missing from the file falls
  back to the whole pool rather than failing the simulation.
* **Which day.** The simulated calendar cycles through the real days: the day index is
  the simulated date's offset from the series' first date modulo :data:`CYCLE_DAYS`
  (91 = 13 whole weeks, not 90, because 90 is not a multiple of 7 and would turn
  Saturdays into Fridays on every wrap). The 91st day of a cycle repeats the real day one
  week before the last, so every simulated day falls on its real weekday.
* **Censoring.** Observed sales stop when the shelf is empty (about 60% of source days
  have a stockout hour), and the simulator models its own stockouts. Each day is
  therefore divided by its in-stock share of the day, ``1 - stockout_hours / 24``, floored
  at 0.5 so a day that was mostly out of stock does not explode.
* **Level.** The publisher scales sales, so only the shape is used: each series is scaled
  so its mean over one cycle equals the SKU's ``typical_daily_units``. A single month
  still moves with the real data (holidays, promotions, season) around that mean.
* **Time of day.** Stores trade 07:00-22:00 (store-local wall clock: ``sim_time`` is used
  as given, aware or naive). :data:`HOURLY_SHARE` puts peaks at lunch and early evening
  and nothing at night. It is constant within an hour.
* **Sampling.** Sales in a window are a Poisson draw around the expected units of that
  window: independent customers buying at a steady rate.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from importlib import resources

from edge_mqtt.catalogue import SKUS, Sku

PROFILE_FILES = ("demand_profiles.csv.gz", "demand_profiles.csv")
DAYS = 90
CYCLE_DAYS = 91
MIN_IN_STOCK_SHARE = 0.5

_OPEN_HOURS_WEIGHT = {
    7: 3, 8: 5, 9: 5, 10: 6, 11: 8, 12: 11, 13: 9, 14: 6,
    15: 6, 16: 8, 17: 11, 18: 11, 19: 6, 20: 3, 21: 2,
}
HOURLY_SHARE: tuple[float, ...] = tuple(
    _OPEN_HOURS_WEIGHT.get(h, 0) / sum(_OPEN_HOURS_WEIGHT.values()) for h in range(24)
)
"""Share of a day's sales in each hour 0-23 (sums to 1; zero outside 07:00-22:00)."""


@dataclass(frozen=True, slots=True)
class Profile:
    """One real store x product series: 90 days of sales and their context."""

    series_id: str
    first_category_id: int
    second_category_id: int
    start: date
    sale: tuple[float, ...]
    stockout_hours: tuple[int, ...]
    discount: tuple[float, ...]
    activity: tuple[int, ...]

    def __post_init__(self) -> None:
        for field in ("sale", "stockout_hours", "discount", "activity"):
            values = getattr(self, field)
            if len(values) != DAYS:
                raise ValueError(f"{self.series_id}.{field}: expected {DAYS} days "
                                 f"(got {len(values)})")

    @property
    def shape(self) -> tuple[float, ...]:
        """Daily sales corrected for stockouts (see the module docstring)."""
        return tuple(
            s / max(MIN_IN_STOCK_SHARE, 1.0 - h / 24.0)
            for s, h in zip(self.sale, self.stockout_hours, strict=True)
        )

    def day_index(self, day: date) -> int:
        """Index of the real day standing in for ``day``: a 91-day cycle, same weekday."""
        index = (day - self.start).days % CYCLE_DAYS
        return index if index < DAYS else index - 7


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(";"))


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(";"))


def parse_profiles(text: str) -> list[Profile]:
    """Profiles from the CSV text written by ``scripts/extract_demand.py``."""
    out = []
    for row in csv.DictReader(io.StringIO(text)):
        out.append(Profile(
            series_id=row["series_id"],
            first_category_id=int(row["first_category_id"]),
            second_category_id=int(row["second_category_id"]),
            start=date.fromisoformat(row["start_date"]),
            sale=_floats(row["sale"]),
            stockout_hours=_ints(row["stockout_hours"]),
            discount=_floats(row["discount"]),
            activity=_ints(row["activity"]),
        ))
    return out


def read_packaged_profiles() -> list[Profile]:
    """The profile file shipped in ``edge_mqtt/data`` (gzipped or plain)."""
    folder = resources.files("edge_mqtt") / "data"
    for name in PROFILE_FILES:
        entry = folder / name
        if entry.is_file():
            raw = entry.read_bytes()
            if name.endswith(".gz"):
                raw = gzip.decompress(raw)
            return parse_profiles(raw.decode("utf-8"))
    raise FileNotFoundError(f"edge_mqtt/data: none of {', '.join(PROFILE_FILES)} is packaged")


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw with the stdlib only (Knuth's method, in chunks for large means)."""
    if not math.isfinite(mean) or mean < 0:
        raise ValueError(f"mean: expected a finite number >= 0 (got {mean!r})")
    count = 0
    while mean > 0:
        # exp(-30) is far from underflow; summing Poisson chunks is still Poisson.
        chunk = min(mean, 30.0)
        mean -= chunk
        limit, product = math.exp(-chunk), rng.random()
        while product > limit:
            count += 1
            product *= rng.random()
    return count


class DemandModel:
    """Expected units per hour for any store, SKU and simulated time."""

    def __init__(self, profiles: Sequence[Profile], skus: Mapping[str, Sku] = SKUS) -> None:
        if not profiles:
            raise ValueError("profiles: expected at least one series (got 0)")
        self.profiles = tuple(sorted(profiles, key=lambda p: p.series_id))
        self.skus = skus
        self._pools: dict[int, tuple[Profile, ...]] = {}
        for p in self.profiles:
            self._pools.setdefault(p.first_category_id, ())
            self._pools[p.first_category_id] += (p,)
        self._shapes = {p.series_id: p.shape for p in self.profiles}
        self._means = {
            p.series_id: sum(self._shapes[p.series_id][p.day_index(p.start + timedelta(days=i))]
                             for i in range(CYCLE_DAYS)) / CYCLE_DAYS
            for p in self.profiles
        }
        self._assigned: dict[tuple[int, str], tuple[Profile, float]] = {}

    @classmethod
    def load(cls, skus: Mapping[str, Sku] = SKUS) -> DemandModel:
        """The model over the packaged real-demand profiles and the default catalogue."""
        return cls(read_packaged_profiles(), skus)

    def _sku(self, sku: str) -> Sku:
        try:
            return self.skus[sku]
        except KeyError:
            raise ValueError(f"sku: not in the catalogue (got {sku!r})") from None

    def _assignment(self, store_index: int, sku: str) -> tuple[Profile, float]:
        key = (store_index, sku)
        found = self._assigned.get(key)
        if found is None:
            if isinstance(store_index, bool) or not isinstance(store_index, int) \
                    or store_index < 0:
                raise ValueError(f"store_index: expected an integer >= 0 "
                                 f"(got {store_index!r})")
            item = self._sku(sku)
            pool = self._pools.get(item.source_category_id, self.profiles)
            digest = hashlib.sha256(f"{store_index}:{sku}".encode()).digest()
            profile = pool[int.from_bytes(digest[:8], "big") % len(pool)]
            mean = self._means[profile.series_id]
            scale = item.typical_daily_units / mean if mean > 0 else 0.0
            found = self._assigned[key] = (profile, scale)
        return found

    def series_for(self, store_index: int, sku: str) -> Profile:
        """The real series that gives this store's SKU its day-to-day shape."""
        return self._assignment(store_index, sku)[0]

    def daily_units(self, store_index: int, sku: str, day: date) -> float:
        """Expected units sold over the whole simulated ``day``."""
        profile, scale = self._assignment(store_index, sku)
        return self._shapes[profile.series_id][profile.day_index(day)] * scale

    def rate(self, store_index: int, sku: str, sim_time: datetime) -> float:
        """Expected units per hour at ``sim_time`` (store-local wall clock)."""
        share = HOURLY_SHARE[sim_time.hour]
        if share == 0.0:
            self._assignment(store_index, sku)  # still refuse bad arguments at night
            return 0.0
        return self.daily_units(store_index, sku, sim_time.date()) * share

    def expected_units(self, store_index: int, sku: str, sim_start: datetime,
                       sim_seconds: float) -> float:
        """Expected units sold in ``[sim_start, sim_start + sim_seconds)``."""
        if not math.isfinite(sim_seconds) or sim_seconds < 0:
            raise ValueError(f"sim_seconds: expected a finite number >= 0 "
                             f"(got {sim_seconds!r})")
        total, moment, left = 0.0, sim_start, float(sim_seconds)
        while left > 0:
            hour_start = moment.replace(minute=0, second=0, microsecond=0)
            step = min(left, 3600.0 - (moment - hour_start).total_seconds())
            total += self.rate(store_index, sku, moment) * step / 3600.0
            moment += timedelta(seconds=step)
            left -= step
        return total

    def sample_sales(self, rng: random.Random, store_index: int, sku: str,
                     sim_start: datetime, sim_seconds: float) -> int:
        """Units customers buy in the window: Poisson around :meth:`expected_units`."""
        return poisson(rng, self.expected_units(store_index, sku, sim_start, sim_seconds))
