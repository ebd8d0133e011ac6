"""Approved transfers, sent down to the store or warehouse that ships them.

An approval (dashboard or ``shelflife transfers approve``) is a row in silver
``transfer_decisions``; on its own it moves nothing. The dispatcher turns each approved
recommendation into a transfer order on the source location's regional broker:

* one **retained** QoS 1 message per order, on ``.../{source}/orders/{order_id}``
  (:func:`lakehouse.contract.order_topic`), so an agent that is offline when the transfer
  is approved finds it when it reconnects, however long that takes;
* the agent keeps it in SQLite and ships it as a ``transfer_out`` of the approved lot with
  ``transfer_id`` = the order id (``StoreAgent.dispatch_order``);
* once silver ``events`` holds that ``transfer_out``, the retained message is cleared, so
  the broker does not keep every order ever made;
* an approval later overturned by a rejection sends a cancellation; an agent that has
  already shipped keeps its ``transfer_out`` (the goods are on the truck).

The order id is the recommendation id, so every step can be matched with the row a person
approved.

Recalls travel the same way (:mod:`lakehouse.recalls`): each lot on hold, or released, is
one retained message per location under the lot's hold id, and an approved transfer of a
held lot that has not shipped is cancelled.

Decisions are read with ``deltalake`` only: the dispatcher needs no JVM.

In secure mode (``keys``, from the brokers' ``credentials.json``) every order and
cancellation is signed with the source store's key (:func:`lakehouse.contract.sign_order`),
and an agent holding its key accepts nothing else: on a broker where a stranger can
publish, no order ships that this dispatcher did not send.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt

from lakehouse.catalogue import LOCATIONS, STOCK_LEVELS, TRANSFER_RECOMMENDATIONS
from lakehouse.contract import (
    DEFAULT_PORTS,
    REGIONS,
    build_hold,
    build_order,
    cancel_order,
    encode_message,
    order_topic,
    sign_order,
)
from lakehouse.credentials import SigningKeys
from lakehouse.decisions import approved_since, decision_history, transfer_progress
from lakehouse.mqtt import BrokerAddress, make_client
from lakehouse.readers import read_table
from lakehouse.recalls import current_holds

log = logging.getLogger(__name__)
Root = str | os.PathLike[str] | None
Say = Callable[[str], None]
PUBLISH_TIMEOUT_S = 10.0


__all__ = ["BrokerAddress", "OrderDispatcher", "default_brokers", "order_plan"]


def default_brokers(host: str = "127.0.0.1", *, tls_ca: str | None = None
                    ) -> dict[str, BrokerAddress]:
    """The brokers ``shelflife broker`` starts: one per region on its default port."""
    return {region: BrokerAddress(host, DEFAULT_PORTS[region], tls_ca=tls_ca)
            for region in REGIONS}


def order_plan(root: Root = None) -> dict[str, list[dict[str, Any]]]:
    """What the brokers should hold now, from decisions, recommendations and silver.

    Returns ``send`` (approved, not yet shipped: each an order plus its ``region``; and
    every lot's hold or release for every location), ``clear`` (shipped: ``region``,
    ``source``, ``order_id``) and ``cancel`` (approved once, rejected since or its lot put
    on hold, not shipped).
    """
    plan: dict[str, list[dict[str, Any]]] = {"send": [], "clear": [], "cancel": []}
    holds = current_holds(root)
    held: set[tuple[str, str]] = set()
    if len(holds):
        on = holds[holds["on_hold"].astype(bool)]
        held = set(zip(on["sku"], on["lot"], strict=True))
        plan["send"] += hold_messages(root, holds)
    history = decision_history(root)
    recs = read_table(TRANSFER_RECOMMENDATIONS, root)
    if history is None or recs is None or recs.empty:
        return plan
    latest = history.drop_duplicates("recommendation_id", keep="last").set_index(
        "recommendation_id")
    ever_approved = set(history.loc[history["decision"] == "approved", "recommendation_id"])
    recs = recs.drop_duplicates("recommendation_id", keep="last").set_index(
        "recommendation_id")
    ids = sorted(ever_approved & set(recs.index))
    _, since = approved_since(history, ids)  # every decision: the earliest approval counts
    shipped = set(transfer_progress(root, ids, since))
    for order_id in ids:
        rec, decision = recs.loc[order_id], latest.loc[order_id]
        where = {"region": rec["region"], "source": rec["source_location"],
                 "order_id": order_id}
        if order_id in shipped:
            plan["clear"].append(where)
        elif decision["decision"] == "rejected" or (rec["sku"], rec["lot"]) in held:
            plan["cancel"].append(where)
        else:
            plan["send"].append({**where, "order": build_order(
                order_id=order_id, sku=rec["sku"], lot=rec["lot"],
                quantity=int(rec["quantity"]), destination=rec["destination_location"],
                transit_hours=float(rec["transit_hours"]), approved_by=decision["decided_by"],
                approved_at=decision["decided_at"].to_pydatetime())})
    return plan


def hold_locations(root: Root = None) -> list[tuple[str, str]]:
    """(region, location) of every location a recall must reach: those in silver
    ``locations`` and every one gold holds stock for."""
    found: set[tuple[str, str]] = set()
    for table in (LOCATIONS, STOCK_LEVELS):
        frame = read_table(table, root, columns=["region", "location_id"])
        if frame is not None:
            found |= set(zip(frame["region"], frame["location_id"], strict=True))
    return sorted((r, loc) for r, loc in found if r in REGIONS and isinstance(loc, str))


def hold_messages(root: Root, holds: Any) -> list[dict[str, Any]]:
    """Each lot's latest hold or release, for every location (``send`` items whose key
    is ``order_id@at``: a release after a hold is news)."""
    places = hold_locations(root)
    out = []
    for h in holds.itertuples(index=False):
        message = build_hold(sku=h.sku, lot=h.lot, on_hold=bool(h.on_hold), reason=h.reason,
                             by=h.decided_by, at=h.decided_at.to_pydatetime())
        for region, location in places:
            out.append({"region": region, "source": location, "order_id": message["order_id"],
                        "order": message, "key": f"{message['order_id']}@{message['at']}"})
    return out


class OrderDispatcher:
    """Keeps each region's broker holding exactly the open transfer orders.

    On secure brokers it logs in as ``dispatcher@<region>``
    (:meth:`lakehouse.credentials.Credentials.dispatcher_credentials`), the only user allowed to
    write orders. Never give it ingest's login: mosquitto takes the username as client
    id, so the dispatcher would disconnect ingest and drop its persistent session.
    """

    def __init__(self, root: Root, brokers: Mapping[str, BrokerAddress], *,
                 say: Say = print, keys: SigningKeys | None = None) -> None:
        self.root = root
        self.brokers = dict(brokers)
        self.say = say
        self.keys = keys
        """Stores' signing keys (secure mode); None sends orders unsigned."""
        self._clients: dict[str, mqtt.Client] = {}
        self._done: dict[tuple[str, str], str] = {}
        """What this process last told the broker per order (sent, cleared, cancelled):
        each is said once; a restarted dispatcher says it all again, which is harmless."""

    def _client(self, region: str) -> mqtt.Client:
        client = self._clients.get(region)
        if client is not None and client.is_connected():
            return client
        if region not in self.brokers:
            raise ValueError(f"region {region!r}: no broker configured "
                             f"(have {', '.join(sorted(self.brokers)) or 'none'})")
        address = self.brokers[region]
        if client is None:
            client = make_client(address, client_id=f"shelflife-orders-{region}")
            client.connect(address.host, address.port, keepalive=30)
            client.loop_start()
            self._clients[region] = client
        deadline = time.monotonic() + PUBLISH_TIMEOUT_S
        while not client.is_connected():
            if time.monotonic() > deadline:
                raise ConnectionError(f"{region}: broker {address} not reachable")
            time.sleep(0.05)
        return client

    def _publish(self, region: str, source: str, order_id: str, body: bytes) -> None:
        info = self._client(region).publish(order_topic(region, source, order_id), body,
                                            qos=1, retain=True)
        info.wait_for_publish(timeout=PUBLISH_TIMEOUT_S)
        if not info.is_published():
            raise ConnectionError(f"{region}: order {order_id} not acknowledged by the "
                                  f"broker within {PUBLISH_TIMEOUT_S:g} s")

    def _key(self, source: str) -> bytes | None:
        if self.keys is None:
            return None
        key = self.keys.key_for(source)
        if key is None:
            raise ValueError(f"location {source!r} has no signing key in {self.keys.path}; "
                             "its agent would refuse an unsigned order")
        return key

    def send(self, region: str, source: str, order: Mapping[str, Any]) -> None:
        """Publish one transfer order (checked against the contract, signed in secure
        mode) as the retained message its source location reads; ConnectionError if the
        broker does not take it."""
        signed = sign_order(dict(order), source, self._key(source))
        self._publish(region, source, signed["order_id"], encode_message(signed))

    def run_once(self) -> dict[str, int]:
        """One round: send new orders, clear shipped ones, cancel overturned ones.

        A region whose broker is down is reported and retried next round; the others go on.
        """
        plan = order_plan(self.root)
        counts = {"sent": 0, "cleared": 0, "cancelled": 0, "failed": 0}
        down: dict[str, str] = {}
        """Regions whose broker failed this round: the rest of theirs waits for the next."""
        holds: dict[tuple[str, str], int] = {}
        for action, verb in (("send", "sent"), ("clear", "cleared"), ("cancel", "cancelled")):
            for item in plan[action]:
                order_id, region = item["order_id"], item["region"]
                done = (item["source"], item.get("key", order_id))
                if self._done.get(done) in (verb, f"refused: {verb}"):
                    continue  # said, or refused for good (e.g. a location without a key)
                if region in down:
                    counts["failed"] += 1
                    continue
                try:
                    if action == "send":
                        self.send(region, item["source"], item["order"])
                    elif action == "cancel":
                        self.send(region, item["source"], cancel_order(order_id))
                    else:  # an empty retained message clears the topic; it says nothing
                        self._publish(region, item["source"], order_id, b"")
                except (ConnectionError, OSError) as exc:
                    counts["failed"] += 1
                    down[region] = str(exc)
                    self.say(f"orders: {region}: {order_id} to {item['source']} not {verb} "
                             f"({exc}); the rest of {region}'s wait for the next round")
                    continue
                except ValueError as exc:  # says the same every round: said once
                    counts["failed"] += 1
                    self._done[done] = f"refused: {verb}"
                    self.say(f"orders: {order_id} to {item['source']} not {verb}: {exc}")
                    continue
                self._done[done] = verb
                counts[verb] += 1
                if "key" in item:  # a recall: one line per lot, not one per location
                    what = "hold" if item["order"]["on_hold"] else "release"
                    label = (f"{what} of {item['order']['sku']} lot {item['order']['lot']}",
                             order_id)
                    holds[label] = holds.get(label, 0) + 1
                else:
                    self.say(f"orders: {order_id} {verb} ({region}/{item['source']})")
        for (what, order_id), n in holds.items():
            self.say(f"orders: {what} ({order_id}) sent to {n} locations")
        return counts

    def run(self, every_s: float = 15.0, stop: threading.Event | None = None) -> None:
        """Rounds every ``every_s`` seconds until ``stop``; a failing round is reported."""
        stop = stop or threading.Event()
        self.say(f"orders: dispatching approved transfers every {every_s:g} s to "
                 + ", ".join(f"{r} {b}" for r, b in sorted(self.brokers.items()))
                 + ("" if self.keys else " (orders unsigned: --insecure)"))
        while not stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # noqa: BLE001 - report, keep going
                self.say(f"orders: round failed at {datetime.now(UTC):%H:%M:%S}: "
                         f"{type(exc).__name__}: {exc}")
            stop.wait(every_s)

    def close(self) -> None:
        for client in self._clients.values():
            client.disconnect()
            client.loop_stop()
        self._clients.clear()
