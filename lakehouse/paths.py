"""Where things live: the lakehouse's tables and this machine's working state.

Tables live at ``<lakehouse>/<layer>/<table>``, where the lakehouse is a folder or an
``s3://bucket/prefix`` (:mod:`lakehouse.storage`); the root comes from
``SHELFLIFE_LAKEHOUSE`` (default ``./lakehouse``). Landing batches live under
``<lakehouse>/landing/`` (:mod:`lakehouse.landing`). Checkpoints, spills and other state
of one machine live under :func:`lakehouse_root`, which is the lakehouse folder itself
when the lakehouse is local.
"""

from __future__ import annotations

import os
from pathlib import Path

from lakehouse.storage import ENV_ROOT, join, lake_url, state_dir

__all__ = ["ENV_ROOT", "LAYERS", "checkpoint_dir", "lakehouse_root", "table_path",
           "table_url"]

LAYERS = ("bronze", "silver", "gold")


def lakehouse_root(root: str | os.PathLike[str] | None = None) -> Path:
    """This machine's working-state folder: the lakehouse folder itself when it is local,
    else ``$SHELFLIFE_STATE_DIR/<bucket>/<prefix>`` (:func:`lakehouse.storage.state_dir`)."""
    return state_dir(root)


def _check_layer(layer: str) -> None:
    if layer not in LAYERS:
        raise ValueError(f"layer: expected one of {', '.join(LAYERS)}, got {layer!r}")


def table_url(layer: str, table: str, root: str | os.PathLike[str] | None = None) -> str:
    """A table's location: an ``s3://`` URL or an absolute folder, as a string."""
    _check_layer(layer)
    return join(lake_url(root), layer, table)


def table_path(layer: str, table: str, root: str | os.PathLike[str] | None = None) -> Path:
    """A table's folder, for code that only ever runs on a local lakehouse (tests, benches)."""
    url = table_url(layer, table, root)
    if url.startswith("s3://"):
        raise ValueError(f"{layer}/{table} is on S3 ({url}); use table_url")
    return Path(url)


def checkpoint_dir(query: str, root: str | os.PathLike[str] | None = None) -> Path:
    return lakehouse_root(root) / "_checkpoints" / query
