"""Runs the real pipeline in-process for tests: brokers -> agents -> ingest -> Spark."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import deltalake

from edge_mqtt.agent import StoreAgent
from edge_mqtt.publisher import Publisher, PublisherConfig
from ingest.worker import IngestConfig, IngestWorker
from lakehouse import oracle
from lakehouse.paths import table_url
from lakehouse.storage import delta_options
from spark_jobs.stream.runner import RegionStream, StreamConfig, start_streams


def start_publishers(agents: list[StoreAgent], ports: dict[str, int]) -> list[Publisher]:
    pubs = [Publisher(a, PublisherConfig(port=ports[a.region], resend_after_s=5.0))
            for a in agents]
    for p in pubs:
        p.start()
    return pubs


def start_ingest(root: Path, ports: dict[str, int]) -> list[IngestWorker]:
    workers = [IngestWorker(IngestConfig(region=r, port=p, lakehouse=str(root)))
               for r, p in ports.items()]
    for w in workers:
        w.start()
    return workers


def start_spark(spark, root: Path, regions: list[str]) -> list[RegionStream]:
    return start_streams(spark, regions, StreamConfig(lakehouse=str(root)))


def all_acked(agents: list[StoreAgent], pubs: list[Publisher]) -> bool:
    return all(p.acked_seq >= a.last_seq for a, p in zip(agents, pubs, strict=True))


def drain(streams: list[RegionStream]) -> None:
    """Everything landed is in gold, and everything spilled is in bronze/silver."""
    for s in streams:
        assert s.query is not None
        s.query.processAllAvailable()
    for s in streams:
        s.record.flush()
        s.derived.write(aggregates=True)


def read(root: Path | str, layer: str, table: str):
    url = table_url(layer, table, root)
    return deltalake.DeltaTable(url, storage_options=delta_options(url)).to_pandas()


def gold_cohorts(root: Path) -> dict[tuple[str, str, str], int]:
    df = read(root, "gold", "stock_cohorts")
    return {(r.location_id, r.sku, r.lot): int(r.quantity) for r in df.itertuples()}


def gold_levels(root: Path) -> dict[tuple[str, str], int]:
    df = read(root, "gold", "stock_levels")
    return {(r.location_id, r.sku): int(r.on_hand) for r in df.itertuples() if r.on_hand != 0}


def check_against_oracle(root: Path, events: list[dict[str, Any]]) -> None:
    expected = oracle.fold(events)
    got = gold_cohorts(root)
    diff = {k: (got.get(k), expected.get(k)) for k in set(got) | set(expected)
            if got.get(k) != expected.get(k)}
    assert not diff, f"{len(diff)} cohorts differ (gold, oracle): {sorted(diff.items())[:10]}"
    assert gold_levels(root) == oracle.levels(expected)
