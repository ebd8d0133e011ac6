"""A simulated fleet of stores and warehouses trading perishables, for demos and benchmarks.

Every location is a real :class:`~edge_mqtt.agent.StoreAgent` over its own SQLite file with
a real :class:`~edge_mqtt.publisher.Publisher`, so what reaches the brokers is exactly what
a store would send: the simulator only decides *what happens*, never how it is recorded.

Decisions:

* **Pace.** The fleet records ``events_per_s`` events per real second in total, whatever
  the simulated hour. Simulated time advances by ``time_compression / events_per_s``
  seconds per event, so with the defaults a trading day (07:00-22:00, the hours
  :data:`~edge_mqtt.demand.HOURLY_SHARE` gives sales) passes in about 15 minutes; the
  closed night is skipped. Because time advances per event, not per wall-clock second, a
  seed yields the same event sequence however fast the machine is.
* **Who sells what.** Each sale picks a (store, SKU) with probability proportional to
  :meth:`DemandModel.rate` at the simulated time, so weekdays, promotions and the
  differences between stores carry over from the real demand data. Reorder points and
  order sizes use that demand scaled to the fleet's event rate, so shelves empty and refill
  at a believable pace at any rate.
* **One event per step.** A step records either the next due consequence (a delivery, a
  transfer arriving, a write-off of expired stock) or a new action (mostly a sale, sometimes
  a warehouse-to-store transfer, a shrinkage adjustment, a full count or a price change).
  Pacing is then a matter of counting steps.
* **Restarts.** Agents keep their SQLite files; a restarted fleet continues each location's
  seq and stock (initial stock is received only by locations with no events yet). Ids for
  lots, orders, transfers and tills come from one counter that starts above every event
  ever recorded by the fleet, so they never repeat across runs.
* **Time stamps.** ``occurred_at`` is the real time of recording (the pipeline measures
  latency and lag with it); simulated dates appear only in lot ids and expiry dates.
* **Logins.** With ``credentials`` (the secure brokers' ``credentials.json``) every
  location logs in as itself and checks its acks and orders with its own signing key,
  as a real store would; locations the file lacks are added to it (a running
  ``shelflife broker`` applies them within a second; until then they retry).
"""

from __future__ import annotations

import bisect
import contextlib
import heapq
import json
import logging
import math
import random
import selectors
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from lakehouse.contract import (
    DEFAULT_PORTS,
    HOLD_KIND,
    REGIONS,
    UNALLOCATED_LOT,
    ContractError,
    check_region,
)
from lakehouse.credentials import Credentials
from lakehouse.movements import movements

from .agent import StoreAgent
from .catalogue import SKUS, LocationKind, Sku
from .demand import HOURLY_SHARE, DemandModel, poisson
from .publisher import Publisher, PublisherConfig

log = logging.getLogger(__name__)

OPEN_HOUR = min(h for h, share in enumerate(HOURLY_SHARE) if share > 0)
CLOSE_HOUR = max(h for h, share in enumerate(HOURLY_SHARE) if share > 0) + 1
TRADING_SECONDS = (CLOSE_HOUR - OPEN_HOUR) * 3600
EXTRA_UNITS_PER_SALE = 0.35
"""Mean of the Poisson extra units in a basket line: a sale is 1 + Poisson(0.35) units."""
SALE_SHARE_ESTIMATE = 0.87
"""Share of events that are sales, used only to scale demand to the event rate."""
STORE_COVER_DAYS = 0.5
STORE_REORDER_DAYS = 0.3
WAREHOUSE_COVER_DAYS = 2.0
WAREHOUSE_REORDER_DAYS = 0.6
OVERORDER_SHARE = 0.15
OVERORDER_FACTOR = 3.0
DELIVERY_HOURS = (0.5, 3.0)
TRANSIT_HOURS = (1.0, 4.0)
DISPOSAL = ("compost", "anaerobic_digestion", "animal_feed", "landfill")


@dataclass(frozen=True)
class FleetConfig:
    """What to simulate and where to send it."""

    stores: int = 300
    """Stores in total, spread evenly over the regions (earlier regions take any extra)."""
    regions: tuple[str, ...] = ("east", "central", "west")
    warehouses_per_region: int = 1
    events_per_s: float = 300.0
    """Target event rate of the whole fleet (real seconds)."""
    time_compression: float = 60.0
    """Simulated seconds per real second at the target rate."""
    data_dir: str | Path = "./var"
    """Agents' SQLite files go to ``<data_dir>/agents/<location>.sqlite``."""
    host: str = "127.0.0.1"
    ports: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    """Broker port per region."""
    seed: int = 7
    duration_s: float | None = None
    """Stop :meth:`Fleet.run` after this many real seconds (None = until stopped)."""
    start: datetime | None = None
    """Simulated start (store-local wall clock); None = today at opening time."""
    transfer_share: float = 0.02
    """Share of new actions that ship stock from a warehouse to a store."""
    adjust_share: float = 0.01
    count_share: float = 0.0005
    price_share: float = 0.0005
    window: int = 500
    max_inflight: int = 20
    """QoS 2 messages in flight per location: 20 is safe with a stock mosquitto, which
    silently drops MQTT 3.1.1 publishes beyond its ``max_inflight_messages`` (20)."""
    resend_after_s: float = 15.0
    connect_timeout_s: float = 10.0
    """How long :meth:`Fleet.start` waits for brokers before trading offline."""
    progress_every_s: float = 10.0
    credentials: str | Path | None = None
    """The secure brokers' ``credentials.json``: each location logs in as itself and
    needs signed acks and orders. None = anonymous, trusting the broker."""
    tls_ca: str | None = None
    """CA certificate (PEM) of the brokers' TLS listeners; None = plain TCP."""

    def __post_init__(self) -> None:
        for name in ("stores", "warehouses_per_region"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected an integer >= 0 (got {value!r})")
        if not self.regions:
            raise ValueError("regions: expected at least one region (got none)")
        for region in self.regions:
            check_region(region)
            if region not in self.ports:
                raise ValueError(f"ports: no broker port for region {region!r} "
                                 f"(got {dict(self.ports)!r})")
        if len(set(self.regions)) != len(self.regions):
            raise ValueError(f"regions: listed twice (got {self.regions!r})")
        if self.stores < len(self.regions):
            raise ValueError(f"stores: expected at least one per region "
                             f"({len(self.regions)}) (got {self.stores})")
        for name in ("events_per_s", "time_compression"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name}: expected a number > 0 (got {value!r})")
        shares = ("transfer_share", "adjust_share", "count_share", "price_share")
        for name in shares:
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ValueError(f"{name}: expected a share between 0 and 1 (got {value!r})")
        if sum(getattr(self, n) for n in shares) > 1:
            raise ValueError("transfer/adjust/count/price shares add up to more than 1")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ValueError(f"duration_s: expected a number > 0 or None "
                             f"(got {self.duration_s!r})")


@dataclass(frozen=True)
class FleetSummary:
    """What a run did, for the CLI and benchmarks."""

    locations: int
    recorded: int
    """Events recorded in this run (initial stock included)."""
    sent: int
    acked: int
    """Sum over locations of the highest end-to-end acked seq."""
    backlog: int
    """Events still in outboxes, waiting for an end-to-end ack."""
    elapsed_s: float
    """Real seconds spent in :meth:`Fleet.run`."""
    rate: float
    """Events per real second achieved in :meth:`Fleet.run`."""
    sim_time: str
    by_type: Mapping[str, int]

    def __str__(self) -> str:
        mix = ", ".join(f"{k} {v}" for k, v in sorted(self.by_type.items(),
                                                      key=lambda kv: -kv[1]))
        return (f"{self.locations} locations, {self.recorded} events recorded "
                f"({self.rate:.1f}/s over {self.elapsed_s:.1f} s), {self.sent} sent, "
                f"{self.acked} acked, outbox backlog {self.backlog}, "
                f"simulated time {self.sim_time}; {mix}")


@dataclass(eq=False)
class Location:
    """One simulated store or warehouse: its agent, publisher and a mirror of its stock."""

    location_id: str
    region: str
    kind: LocationKind
    store_index: int
    """Index into the demand model (stores only; -1 for warehouses)."""
    agent: StoreAgent
    publisher: Publisher
    last_seq: int = 0
    cohorts: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    """sku -> lot -> [expires_on, quantity]: the fold of this location's events."""
    incoming: dict[str, int] = field(default_factory=dict)
    """Units ordered or in transit per SKU, so one shortage does not order twice."""
    daily: dict[str, float] = field(default_factory=dict)
    """Expected units leaving per simulated day, per SKU (demand scaled to the event rate)."""
    prices: dict[str, float] = field(default_factory=dict)

    def on_hand(self, sku: str) -> int:
        return sum(entry[1] for entry in self.cohorts.get(sku, {}).values())

    def sellable_lots(self, sku: str) -> int:
        """Units in real lots (not the unallocated balance) that a transfer can ship."""
        return sum(q for lot, (_e, q) in self.cohorts.get(sku, {}).items()
                   if q > 0 and lot != UNALLOCATED_LOT)

    def fold(self, event: dict[str, Any]) -> None:
        """Apply one recorded event to the mirror, exactly as the lakehouse oracle does."""
        p, et = event["payload"], event["event_type"]
        if et == "counted":
            self.cohorts = {}
            for item in p["items"]:
                self._add(item["sku"], item["lot"], item["expires_on"], item["quantity"])
        else:
            for move in movements(event):
                self._add(*move)

    def _add(self, sku: str, lot: str, expires_on: str | None, delta: int) -> None:
        lots = self.cohorts.setdefault(sku, {})
        entry = lots.get(lot)
        if entry is None:
            entry = lots[lot] = [expires_on, 0]
        elif entry[0] is None:
            entry[0] = expires_on
        entry[1] += delta
        if entry[1] == 0:
            del lots[lot]


class Fleet:
    """Stores and warehouses of several regions, trading through real agents."""

    def __init__(self, config: FleetConfig | None = None, *,
                 demand: DemandModel | None = None, skus: Mapping[str, Sku] = SKUS) -> None:
        self.config = config = config or FleetConfig()
        self.skus = skus
        self.sku_ids = tuple(skus)
        self.demand = demand or DemandModel.load(skus)
        self.rng = random.Random(config.seed)
        self.record_hook: Callable[[dict[str, Any]], None] | None = None
        """Called with every recorded event, right after it is committed."""
        self.locations: list[Location] = []
        self.by_id: dict[str, Location] = {}
        self.stores: list[Location] = []
        self.warehouses: dict[str, list[Location]] = {r: [] for r in config.regions}
        self.stores_in: dict[str, list[Location]] = {r: [] for r in config.regions}
        self.recorded = 0
        self.by_type: Counter[str] = Counter()
        self._tasks: list[tuple[datetime, int, str, tuple[Any, ...]]] = []
        self._task_n = 0
        self._orders: deque[tuple[Location, dict[str, Any]]] = deque()
        """Approved transfers that reached a location's agent, shipped at the next step."""
        self.orders_shipped = 0
        self._selector = selectors.DefaultSelector()
        self._io_stop = threading.Event()
        self._io_thread: threading.Thread | None = None
        self._retry_at: dict[str, float] = {}
        self._started = False
        self._run_elapsed = 0.0
        self._run_recorded = 0
        start = config.start or datetime.combine(date.today(), datetime.min.time())
        self.sim_now = max(start, start.replace(hour=OPEN_HOUR, minute=0, second=0,
                                                microsecond=0))
        if self.sim_now.hour >= CLOSE_HOUR:
            self.sim_now = self._next_opening(self.sim_now)
        self._dt = timedelta(seconds=config.time_compression / config.events_per_s)
        self._day: date | None = None
        self._cum_weights: list[float] = []
        self._pairs: list[tuple[Location, str]] = []
        self._build()
        self._next_n = 1 + sum(loc.last_seq for loc in self.locations)

    # --- construction -----------------------------------------------------------------

    def _build(self) -> None:
        cfg = self.config
        folder = Path(cfg.data_dir) / "agents"
        creds = self._credentials()
        if creds is None:
            log.warning("fleet: no credentials (--insecure): every location connects "
                        "anonymously and trusts any ack or order its broker delivers")
        store_index = 0
        for location_id, region, kind in fleet_layout(cfg):
            pub_cfg = PublisherConfig(host=cfg.host, port=int(cfg.ports[region]),
                                      window=cfg.window, max_inflight=cfg.max_inflight,
                                      resend_after_s=cfg.resend_after_s, tls_ca=cfg.tls_ca,
                                      warn_unsigned=False)
            if creds is not None:
                login = creds.credentials_for(location_id)
                pub_cfg = replace(pub_cfg, username=login.username, password=login.password,
                                  signing_key=creds.signing_key(location_id))
            if kind == "warehouse":
                loc = self._add_location(location_id, region, kind, -1, folder, pub_cfg)
                self.warehouses[region].append(loc)
            else:
                loc = self._add_location(location_id, region, kind, store_index, folder,
                                         pub_cfg)
                store_index += 1
                self.stores.append(loc)
                self.stores_in[region].append(loc)

    def _credentials(self) -> Credentials | None:
        """The fleet's logins, issuing any location the file does not list yet."""
        if self.config.credentials is None:
            return None
        path = Path(self.config.credentials)
        wanted: dict[str, list[str]] = {}
        for location_id, region, _kind in fleet_layout(self.config):
            wanted.setdefault(region, []).append(location_id)
        before = Credentials.open(path, create=False)
        known = {loc for region in REGIONS for loc in before.locations(region)}
        creds = Credentials.open(path, wanted, create=False)
        added = [loc for ids in wanted.values() for loc in ids if loc not in known]
        if added:
            log.info("fleet: issued credentials for %d new locations in %s; a running "
                     "`shelflife broker` accepts them within a second", len(added), path)
        return creds

    def _add_location(self, location_id: str, region: str, kind: LocationKind,
                      store_index: int, folder: Path, pub_cfg: PublisherConfig) -> Location:
        agent = StoreAgent(location_id, region, folder / f"{location_id}.sqlite")
        publisher = Publisher(agent, pub_cfg)
        client = publisher.client
        client.on_socket_open = self._socket_open
        client.on_socket_close = self._socket_close
        client.on_socket_register_write = self._socket_want_write
        client.on_socket_unregister_write = self._socket_written
        loc = Location(location_id, region, kind, store_index, agent, publisher,
                       last_seq=agent.last_seq,
                       prices={s: item.unit_price for s, item in self.skus.items()})
        for row in agent.stock():
            loc.cohorts[row["sku"]] = {c["lot"]: [c["expires_on"], c["quantity"]]
                                       for c in row["cohorts"]}
        loc.prices.update(_item_prices(agent))
        self._orders.extend((loc, order) for order in agent.orders("pending"))
        agent.on_order = lambda order: self._orders.append((loc, order))
        self.locations.append(loc)
        self.by_id[location_id] = loc
        return loc

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Connect every location, then stock the shelves of locations that are new."""
        if self._started:
            return
        self._started = True
        for loc in self.locations:
            loc.publisher.start(pump_thread=False, loop_thread=False)
        self._io_stop.clear()
        self._io_thread = threading.Thread(target=self._io_loop, daemon=True, name="fleet-io")
        self._io_thread.start()
        deadline = time.monotonic() + self.config.connect_timeout_s
        while time.monotonic() < deadline and not all(loc.agent.online
                                                     for loc in self.locations):
            time.sleep(0.05)
        offline = [loc.location_id for loc in self.locations if not loc.agent.online]
        if offline:
            log.warning("fleet: %d of %d locations not connected after %.0f s (e.g. %s); "
                        "they record offline and send once connected", len(offline),
                        len(self.locations), self.config.connect_timeout_s, offline[0])
        self._new_day(sweep=False)
        for loc in self.locations:
            if loc.last_seq == 0:
                self._stock_up(loc)

    def stop(self) -> None:
        """Stop sending and close every agent; unsent events stay in the outboxes."""
        self._io_stop.set()
        if self._io_thread is not None:
            self._io_thread.join(timeout=10)
            self._io_thread = None
        for loc in self.locations:
            client = loc.publisher.client
            if client.socket() is not None:
                client.disconnect()
                with contextlib.suppress(OSError):
                    client.loop_write()  # flush the DISCONNECT; paho then closes the socket
        for loc in self.locations:
            loc.publisher.stop()
            loc.agent.close()
        self._selector.close()
        self._started = False

    # --- one I/O thread for every location's MQTT client --------------------------------
    # paho's own loop thread per client polls with select(), which fails once descriptor
    # numbers pass 1024 (two SQLite connections per location get there near 150
    # locations) and costs a thread per location. One selector loop serves them all.

    def _socket_open(self, client: Any, _userdata: Any, sock: Any) -> None:
        self._selector.register(sock, selectors.EVENT_READ, client)

    def _socket_close(self, _client: Any, _userdata: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)

    def _socket_want_write(self, client: Any, _userdata: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, client)

    def _socket_written(self, client: Any, _userdata: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.modify(sock, selectors.EVENT_READ, client)

    def _io_loop(self) -> None:
        """Reads, writes, keep-alives, reconnects and outbox pumping for every location."""
        next_misc = next_sweep = 0.0
        while not self._io_stop.is_set():
            self._connect_due()
            if self._selector.get_map():
                ready = self._selector.select(timeout=0.02)
            else:
                ready = []
                self._io_stop.wait(0.02)
            for key, mask in ready:
                client = key.data
                try:
                    if mask & selectors.EVENT_READ:
                        client.loop_read()
                    if mask & selectors.EVENT_WRITE and client.socket() is not None:
                        client.loop_write()
                except OSError as exc:
                    log.debug("fleet: socket error: %s", exc)
            now = time.monotonic()
            if now >= next_misc:
                next_misc = now + 1.0
                for loc in self.locations:
                    loc.publisher.client.loop_misc()
            sweep = now >= next_sweep  # every publisher now and then: ack stalls, re-sends
            if sweep:
                next_sweep = now + 2.0
            for loc in self.locations:
                pub = loc.publisher
                if sweep or pub.pending:
                    try:
                        pub.pump()
                    except Exception:  # one broken location must not stop the fleet
                        log.exception("fleet: sending for %s failed", loc.location_id)

    def _connect_due(self) -> None:
        now = time.monotonic()
        for loc in self.locations:
            client = loc.publisher.client
            if client.socket() is not None or now < self._retry_at.get(loc.location_id, 0):
                continue
            self._retry_at[loc.location_id] = now + 2.0
            try:
                client.reconnect()
            except OSError as exc:
                log.debug("fleet: %s cannot reach its broker: %s", loc.location_id, exc)

    # --- figures ----------------------------------------------------------------------

    @property
    def sent(self) -> int:
        return sum(loc.publisher.sent for loc in self.locations)

    @property
    def acked(self) -> int:
        return sum(loc.publisher.acked_seq for loc in self.locations)

    @property
    def backlog(self) -> int:
        return sum(max(0, loc.last_seq - loc.publisher.acked_seq) for loc in self.locations)

    def summary(self) -> FleetSummary:
        """Totals so far."""
        elapsed = self._run_elapsed
        return FleetSummary(
            locations=len(self.locations), recorded=self.recorded, sent=self.sent,
            acked=self.acked, backlog=self.backlog, elapsed_s=round(elapsed, 3),
            rate=self._run_recorded / elapsed if elapsed > 0 else 0.0,
            sim_time=self.sim_now.strftime("%Y-%m-%d %H:%M"), by_type=dict(self.by_type))

    # --- pacing -----------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> FleetSummary:
        """Trade at ``events_per_s`` until ``stop`` is set or ``duration_s`` has passed."""
        if not self._started:
            self.start()
        stop = stop or threading.Event()
        cfg = self.config
        t0 = time.monotonic()
        base_t, base_n = t0, self.recorded
        deadline = None if cfg.duration_s is None else t0 + cfg.duration_s
        first_n = self.recorded
        next_progress = t0 + cfg.progress_every_s
        last_progress_t, last_progress_n = t0, self.recorded
        while not stop.is_set():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            due = base_n + int((now - base_t) * cfg.events_per_s)
            if due - self.recorded > cfg.events_per_s:
                # More than a second behind (a stall): drop the debt instead of bursting.
                base_t, base_n = now, self.recorded
                due = self.recorded
            burst = 0
            while self.recorded < due and burst < 1000:
                self.step()
                burst += 1
            if now >= next_progress:
                rate = (self.recorded - last_progress_n) / (now - last_progress_t)
                log.info("fleet: %d events recorded (%.0f/s), %d sent, %d acked, "
                         "outbox backlog %d, simulated %s", self.recorded, rate, self.sent,
                         self.acked, self.backlog, self.sim_now.strftime("%a %Y-%m-%d %H:%M"))
                last_progress_t, last_progress_n = now, self.recorded
                next_progress = now + cfg.progress_every_s
            if burst < 1000:
                stop.wait(0.01)
        self._run_elapsed += time.monotonic() - t0
        self._run_recorded += self.recorded - first_n
        return self.summary()

    # --- simulated time ---------------------------------------------------------------

    @staticmethod
    def _next_opening(moment: datetime) -> datetime:
        return datetime.combine(moment.date() + timedelta(days=1),
                                datetime.min.time()).replace(hour=OPEN_HOUR)

    def _advance(self) -> None:
        now = self.sim_now + self._dt
        if now.hour >= CLOSE_HOUR:
            now = self._next_opening(now)  # closed overnight: skip to the next opening
        elif now.hour < OPEN_HOUR:
            now = now.replace(hour=OPEN_HOUR, minute=0, second=0, microsecond=0)
        self.sim_now = now
        if now.date() != self._day:
            self._new_day(sweep=True)

    def _new_day(self, *, sweep: bool) -> None:
        """Demand weights for the day; write-offs of stock past its sell-by at opening."""
        day = self.sim_now.date()
        self._day = day
        noon = datetime.combine(day, datetime.min.time()).replace(hour=12)
        pairs, cum, total = [], [], 0.0
        per_store: dict[int, dict[str, float]] = {}
        for loc in self.stores:
            rates = per_store[loc.store_index] = {}
            for sku in self.sku_ids:
                rate = self.demand.rate(loc.store_index, sku, noon)
                rates[sku] = rate
                if rate > 0:
                    total += rate
                    pairs.append((loc, sku))
                    cum.append(total)
        if total <= 0:  # no demand data for the day: every pair alike
            pairs = [(loc, sku) for loc in self.stores for sku in self.sku_ids]
            cum = [float(i + 1) for i in range(len(pairs))]
            total = float(len(pairs))
            per_store = {loc.store_index: dict.fromkeys(self.sku_ids, 1.0)
                         for loc in self.stores}
        self._pairs, self._cum_weights = pairs, cum
        steps_per_day = self.config.events_per_s * TRADING_SECONDS / self.config.time_compression
        units_per_day = steps_per_day * SALE_SHARE_ESTIMATE * (1 + EXTRA_UNITS_PER_SALE)
        for loc in self.stores:
            rates = per_store[loc.store_index]
            loc.daily = {sku: units_per_day * rates[sku] / total for sku in self.sku_ids}
        n_wh = sum(len(w) for w in self.warehouses.values())
        if n_wh:
            transfers = steps_per_day * self.config.transfer_share / n_wh / len(self.sku_ids)
            for whs in self.warehouses.values():
                for wh in whs:
                    wh.daily = {sku: transfers * 1.5 * item.case_size
                                for sku, item in self.skus.items()}
        if sweep:
            for loc in self.locations:
                self._schedule_write_offs(loc)

    def _schedule_write_offs(self, loc: Location) -> None:
        for sku, lots in loc.cohorts.items():
            item = self.skus.get(sku)
            if item is None:
                continue
            last_ok = (self.sim_now.date()
                       + timedelta(days=item.min_sellable_days(loc.kind))).isoformat()
            for lot, (expires_on, quantity) in lots.items():
                if expires_on is not None and quantity > 0 and expires_on < last_ok:
                    self._schedule(self.sim_now, "waste", (loc, sku, lot))

    def _schedule(self, due: datetime, kind: str, args: tuple[Any, ...]) -> None:
        self._task_n += 1
        heapq.heappush(self._tasks, (due, self._task_n, kind, args))

    def _next_id(self) -> int:
        n = self._next_n
        self._next_n += 1
        return n

    # --- stepping ---------------------------------------------------------------------

    def step(self) -> list[dict[str, Any]]:
        """Advance simulated time by one event's worth and record the next event."""
        self._advance()
        while self._tasks and self._tasks[0][0] <= self.sim_now:
            _due, _n, kind, args = heapq.heappop(self._tasks)
            event = getattr(self, f"_do_{kind}")(*args)
            if event is not None:
                return [event]
        while self._orders:
            event = self._do_order(*self._orders.popleft())
            if event is not None:
                return [event]
        return [self._action()]

    def _action(self) -> dict[str, Any]:
        cfg, roll = self.config, self.rng.random()
        event = None
        if roll < cfg.transfer_share:
            event = self._random_transfer()
        elif (roll := roll - cfg.transfer_share) < cfg.adjust_share:
            event = self._random_adjustment()
        elif (roll := roll - cfg.adjust_share) < cfg.count_share:
            event = self._random_count()
        elif roll - cfg.count_share < cfg.price_share:
            event = self._random_price_change()
        return event if event is not None else self._random_sale()

    def _emit(self, loc: Location, event: dict[str, Any]) -> dict[str, Any]:
        loc.fold(event)
        loc.last_seq = event["seq"]
        self.recorded += 1
        self.by_type[event["event_type"]] += 1
        if self.record_hook is not None:
            self.record_hook(event)
        return event

    # --- actions ----------------------------------------------------------------------

    def _random_sale(self) -> dict[str, Any]:
        i = bisect.bisect_right(self._cum_weights, self.rng.random() * self._cum_weights[-1])
        loc, sku = self._pairs[min(i, len(self._pairs) - 1)]
        quantity = 1 + poisson(self.rng, EXTRA_UNITS_PER_SALE)
        event = self._emit(loc, loc.agent.sell(sku, quantity, unit_price=loc.prices[sku],
                                               transaction_ref=f"T{self._next_id()}"))
        self._check_reorder(loc, sku)
        return event

    def _random_transfer(self) -> dict[str, Any] | None:
        regions = [r for r in self.config.regions if self.warehouses[r]]
        if not regions:
            return None
        region = self.rng.choice(regions)
        source = self.rng.choice(self.warehouses[region])
        dest = self.rng.choice(self.stores_in[region])
        candidates = self.rng.sample(self.sku_ids, min(3, len(self.sku_ids)))
        sku = min(candidates, key=lambda s: (dest.on_hand(s) + dest.incoming.get(s, 0))
                  / max(dest.daily.get(s, 1.0), 1e-9))
        quantity = min(self.skus[sku].case_size * self.rng.randint(1, 2),
                       source.sellable_lots(sku))
        if quantity < 1:
            return None
        return self.transfer(source.location_id, dest.location_id, sku, quantity)

    def transfer(self, source: str, destination: str, sku: str, quantity: int, *,
                 transit_hours: float | None = None) -> dict[str, Any]:
        """Ship stock now; the matching ``transfer_in`` is recorded after the transit.

        Returns the ``transfer_out`` event. ``transit_hours`` is simulated time (random
        when None); 0 books the arrival at the next step.
        """
        src, dst = self.by_id[source], self.by_id[destination]
        if transit_hours is None:
            transit_hours = round(self.rng.uniform(*TRANSIT_HOURS), 1)
        event = self._emit(src, src.agent.transfer_out(
            sku, quantity, destination=destination, transfer_id=f"TR-{self._next_id()}",
            expected_transit_hours=transit_hours))
        dst.incoming[sku] = dst.incoming.get(sku, 0) + quantity
        self._schedule(self.sim_now + timedelta(hours=transit_hours), "transfer_in",
                       (dst, event))
        self._check_reorder(src, sku)
        return event

    def _do_order(self, src: Location, order: dict[str, Any]) -> dict[str, Any] | None:
        """Ship an approved transfer the way a store would: its lot, to its destination,
        arriving after its transit time (simulated)."""
        if order.get("cancelled"):
            return None
        if order.get("kind") == HOLD_KIND:  # a recall: staff pull the lot off the shelf
            return self._pull_recalled(src, order) if order["on_hold"] else None
        dst = self.by_id.get(order["destination"])
        if dst is None:
            log.warning("%s: order %s is for %s, not in this fleet; left pending",
                        src.location_id, order["order_id"], order["destination"])
            return None
        try:
            out = src.agent.dispatch_order(order["order_id"])
        except ContractError as exc:  # shipped already, cancelled, or the lot is short
            log.warning("%s: order %s not shipped: %s", src.location_id, order["order_id"],
                        exc)
            return None
        event = self._emit(src, out)
        self.orders_shipped += 1
        dst.incoming[order["sku"]] = dst.incoming.get(order["sku"], 0) + order["quantity"]
        self._schedule(self.sim_now + timedelta(hours=order["transit_hours"]), "transfer_in",
                       (dst, event))
        self._check_reorder(src, order["sku"])
        return event

    def _pull_recalled(self, loc: Location, hold: dict[str, Any]) -> dict[str, Any] | None:
        """What staff do with a recalled lot: waste what is left of it, reason ``recall``."""
        sku, lot = hold["sku"], hold["lot"]
        entry = loc.cohorts.get(sku, {}).get(lot)
        if entry is None or entry[1] <= 0:
            return None
        event = self._emit(loc, loc.agent.waste(sku, entry[1], lot=lot, reason_code="recall",
                                                disposal_method="returned to supplier"))
        self._check_reorder(loc, sku)
        return event

    def _do_transfer_in(self, dst: Location, out: dict[str, Any]) -> dict[str, Any]:
        p = out["payload"]
        dst.incoming[p["sku"]] = max(0, dst.incoming.get(p["sku"], 0) - p["quantity"])
        event = self._emit(dst, dst.agent.transfer_in(
            p["sku"], p["quantity"], source=out["location_id"], transfer_id=p["transfer_id"],
            lots=p["lots"], causation_id=out["event_id"]))
        return event

    def _random_adjustment(self) -> dict[str, Any] | None:
        loc = self.rng.choice(self.stores)
        sku = self.rng.choice(self.sku_ids)
        lots = [(lot, q) for lot, (_e, q) in loc.cohorts.get(sku, {}).items()
                if q > 0 and lot != UNALLOCATED_LOT]
        if not lots:
            return None
        lot, system = self.rng.choice(lots)
        counted = max(0, system - self.rng.randint(1, 2))
        event = self._emit(loc, loc.agent.adjust(sku, lot=lot, counted_quantity=counted))
        self._check_reorder(loc, sku)
        return event

    def _random_count(self) -> dict[str, Any]:
        loc = self.rng.choice(self.stores)
        items = []
        for sku in sorted(loc.cohorts):
            for lot, (expires_on, quantity) in sorted(loc.cohorts[sku].items()):
                if self.rng.random() < 0.1:
                    quantity += self.rng.choice((-1, 1))
                if quantity > 0:
                    items.append({"sku": sku, "lot": lot, "expires_on": expires_on,
                                  "quantity": quantity})
        event = self._emit(loc, loc.agent.count(items))
        for sku in self.sku_ids:
            self._check_reorder(loc, sku)
        return event

    def _random_price_change(self) -> dict[str, Any]:
        loc = self.rng.choice(self.stores)
        sku = self.rng.choice(self.sku_ids)
        item = self.skus[sku]
        price = round(max(item.unit_cost, item.unit_price * self.rng.uniform(0.8, 1.05)), 2)
        loc.prices[sku] = price
        return self._emit(loc, loc.agent.update_item(sku, price=price))

    # --- consequences -----------------------------------------------------------------

    def _order_size(self, loc: Location, sku: str, position: int) -> int:
        item = self.skus[sku]
        daily = loc.daily.get(sku, item.typical_daily_units)
        if loc.kind == "store":
            cover, reorder = STORE_COVER_DAYS, STORE_REORDER_DAYS
        else:
            usable = item.shelf_life_days - item.min_sellable_days("warehouse")
            cover, reorder = min(WAREHOUSE_COVER_DAYS, usable / 2), WAREHOUSE_REORDER_DAYS
        wanted = daily * (cover + reorder) - position
        if self.rng.random() < OVERORDER_SHARE:
            wanted *= OVERORDER_FACTOR  # a forecast miss: some of it will expire unsold
        return max(1, math.ceil(wanted / item.case_size)) * item.case_size

    def _reorder_point(self, loc: Location, sku: str) -> float:
        daily = loc.daily.get(sku, self.skus[sku].typical_daily_units)
        days = STORE_REORDER_DAYS if loc.kind == "store" else WAREHOUSE_REORDER_DAYS
        return daily * days + 1

    def _check_reorder(self, loc: Location, sku: str) -> None:
        if loc.incoming.get(sku, 0) > 0:
            return
        position = loc.on_hand(sku)
        if position >= self._reorder_point(loc, sku):
            return
        quantity = self._order_size(loc, sku, position)
        loc.incoming[sku] = quantity
        due = self.sim_now + timedelta(hours=self.rng.uniform(*DELIVERY_HOURS))
        self._schedule(due, "delivery", (loc, sku, quantity))

    def _receive(self, loc: Location, sku: str, quantity: int) -> dict[str, Any]:
        item = self.skus[sku]
        today = self.sim_now.date()
        n = self._next_id()
        return self._emit(loc, loc.agent.receive(
            sku, quantity, lot=f"L{today:%Y%m%d}-{n}",
            expires_on=(today + timedelta(days=item.shelf_life_days)).isoformat(),
            supplier_ref=f"PO-{n}", unit_cost=item.unit_cost))

    def _do_delivery(self, loc: Location, sku: str, quantity: int) -> dict[str, Any]:
        loc.incoming[sku] = max(0, loc.incoming.get(sku, 0) - quantity)
        return self._receive(loc, sku, quantity)

    def _do_waste(self, loc: Location, sku: str, lot: str) -> dict[str, Any] | None:
        entry = loc.cohorts.get(sku, {}).get(lot)
        if entry is None or entry[1] <= 0:
            return None  # sold or counted away since the sweep
        event = self._emit(loc, loc.agent.waste(sku, entry[1], lot=lot, reason_code="expired",
                                                disposal_method=self.rng.choice(DISPOSAL)))
        self._check_reorder(loc, sku)
        return event

    def _stock_up(self, loc: Location) -> None:
        """A new location's first delivery: each SKU once, enough for a day and a bit."""
        for sku in self.sku_ids:
            self._receive(loc, sku, self._order_size(loc, sku, 0))


def fleet_layout(config: FleetConfig) -> list[tuple[str, str, LocationKind]]:
    """Every location the fleet simulates: (location id, region, kind), in build order.

    The demo issues their credentials from this before the brokers start."""
    per_region, extra = divmod(config.stores, len(config.regions))
    out: list[tuple[str, str, LocationKind]] = []
    for r, region in enumerate(config.regions):
        out += [(f"WH-{region.upper()}-{w}", region, "warehouse")
                for w in range(1, config.warehouses_per_region + 1)]
        out += [(f"{region.upper()}-S{s:03d}", region, "store")
                for s in range(1, per_region + (1 if r < extra else 0) + 1)]
    return out


def _item_prices(agent: StoreAgent) -> dict[str, float]:
    """Prices a location changed in an earlier run, so a restart keeps selling at them."""
    rows = agent.db.conn.execute("SELECT sku, fields FROM items").fetchall()
    out = {}
    for sku, fields in rows:
        price = json.loads(fields).get("price")
        if isinstance(price, int | float):
            out[sku] = float(price)
    return out


def run_fleet(config: FleetConfig, stop: threading.Event | None = None) -> FleetSummary:
    """Start a fleet, trade until ``stop`` or ``duration_s``, stop it; for the CLI."""
    fleet = Fleet(config)
    log.info("fleet: %d stores and %d warehouses in %s, %.0f events/s, x%g time, data in %s",
             len(fleet.stores), sum(len(w) for w in fleet.warehouses.values()),
             ", ".join(config.regions), config.events_per_s, config.time_compression,
             Path(config.data_dir) / "agents")
    try:
        fleet.start()
        fleet.run(stop)
    finally:
        fleet.stop()
    return fleet.summary()
