"""A deterministic mixed workload over real store agents, for pipeline tests.

Every event type of the contract appears: receipts, FEFO sales (some beyond stock),
transfers between stores with causation, waste, adjustments, full counts, item updates.
"""

from __future__ import annotations

import random
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from edge_mqtt.agent import StoreAgent

SKUS = ("DAIRY-MILK-WH-1L", "BAK-LOAF-WHT-800", "PROD-SALAD-MIX-200", "MEAT-CHK-BREAST-500")


def make_agents(db_dir: Path, per_region: int, regions: tuple[str, ...]) -> list[StoreAgent]:
    return [StoreAgent(f"{r[:1].upper()}{i:03d}", r, db_dir / f"{r}-{i}.sqlite")
            for r in regions for i in range(per_region)]


class Workload:
    """Drives agents with random but reproducible trading; remembers every event."""

    def __init__(self, agents: list[StoreAgent], seed: int = 1) -> None:
        self.agents = agents
        self.rng = random.Random(seed)
        self.events: list[dict[str, Any]] = []
        self._n = 0
        self._pending_in: list[tuple[StoreAgent, dict[str, Any]]] = []

    def _expiry(self) -> str:
        return (date(2026, 12, 1) + timedelta(days=self.rng.randint(1, 12))).isoformat()

    def stock_up(self) -> None:
        for a in self.agents:
            for sku in SKUS:
                self.events.append(a.receive(sku, 40, lot=f"L{self._next()}",
                                             expires_on=self._expiry(),
                                             supplier_ref="PO-1", unit_cost=1.0))

    def _next(self) -> int:
        self._n += 1
        return self._n

    def step(self) -> dict[str, Any]:
        rng, a = self.rng, self.rng.choice(self.agents)
        sku = rng.choice(SKUS)
        r = rng.random()
        if self._pending_in and r < 0.03:
            dest, out = self._pending_in.pop(0)
            p = out["payload"]
            ev = dest.transfer_in(p["sku"], p["quantity"], source=out["location_id"],
                                  transfer_id=p["transfer_id"], lots=p["lots"],
                                  causation_id=out["event_id"])
        elif r < 0.75:
            ev = a.sell(sku, rng.randint(1, 4), unit_price=2.5, transaction_ref=f"T{self._next()}")
        elif r < 0.85:
            ev = a.receive(sku, rng.randint(10, 30), lot=f"L{self._next()}",
                           expires_on=self._expiry(), supplier_ref="PO-2", unit_cost=1.1)
        elif r < 0.89:
            peers = [b for b in self.agents if b.region == a.region and b is not a]
            dest = rng.choice(peers)
            ev = a.transfer_out(sku, rng.randint(1, 5), destination=dest.location_id,
                                transfer_id=f"TR{self._next()}", expected_transit_hours=4.0)
            self._pending_in.append((dest, ev))
        elif r < 0.93:
            lots = [c for c in a.db.cohorts(sku) if c["quantity"] > 0]
            if not lots:
                return self.step()
            c = rng.choice(lots)
            ev = a.waste(sku, min(c["quantity"], rng.randint(1, 3)), lot=c["lot"],
                         reason_code="damaged", disposal_method="compost")
        elif r < 0.97:
            lots = a.db.cohorts(sku)
            if not lots:
                return self.step()
            c = rng.choice(lots)
            ev = a.adjust(sku, lot=c["lot"], counted_quantity=max(0, c["quantity"] - 1))
        elif r < 0.985:
            items = [{"sku": c["sku"], "lot": c["lot"], "expires_on": c["expires_on"],
                      "quantity": max(0, c["quantity"] + rng.randint(-2, 1))}
                     for c in a.db.cohorts() if c["expires_on"] is not None]
            ev = a.count(items)
        else:
            ev = a.update_item(sku, price=round(rng.uniform(1, 5), 2))
        self.events.append(ev)
        return ev

    def finish_transfers(self) -> None:
        while self._pending_in:
            dest, out = self._pending_in.pop(0)
            p = out["payload"]
            self.events.append(dest.transfer_in(
                p["sku"], p["quantity"], source=out["location_id"],
                transfer_id=p["transfer_id"], lots=p["lots"], causation_id=out["event_id"]))
