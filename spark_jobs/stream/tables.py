"""Creates the streaming job's Delta tables (empty, partitioned) before any query starts,
each from its catalogue entry.

They are created by delta-rs, the engine that commits every row to them, so on S3 the
first commit is a conditional PUT like every later one: two stream drivers starting at
once cannot overwrite each other's version 0.
"""

from __future__ import annotations

import logging
import os

from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from lakehouse.catalogue import STREAM_TABLES
from lakehouse.storage import delta_options, ensure_parent

CREATE_PROPERTIES = {"delta.checkpointInterval": "50"}
"""Frequent tiny commits make log checkpoints the main source of latency spikes, so take
one every 50 commits instead of 10."""

log = logging.getLogger(__name__)

def ensure_tables(root: str | os.PathLike[str]) -> None:
    """Create each missing table with its schema, partitioning and properties; leave
    others alone."""
    for table in STREAM_TABLES:
        url = table.uri(root)
        options = delta_options(url)
        if DeltaTable.is_deltatable(url, storage_options=options):
            continue
        ensure_parent(url)
        try:
            DeltaTable.create(url, table.schema, mode="ignore",
                              partition_by=list(table.partitions) or None,
                              configuration={**CREATE_PROPERTIES, **table.properties},
                              storage_options=options)
        except DeltaError:
            # Shards (one stream driver per region) started together race to create the
            # same empty tables; losing that race leaves the winner's table, which is
            # all this wanted.
            if not DeltaTable.is_deltatable(url, storage_options=options):
                raise
            log.info("%s: created by another stream driver meanwhile", table.name)
