"""Where things live: the lakehouse root and each table's folder.

Tables live at ``<root>/<layer>/<table>``; the root comes from ``SHELFLIFE_LAKEHOUSE``
(default ``./lakehouse``). Landing batches live under ``<root>/landing/``
(:mod:`lakehouse.landing`).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_ROOT = "SHELFLIFE_LAKEHOUSE"
LAYERS = ("bronze", "silver", "gold")


def lakehouse_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The explicit root if given, else ``$SHELFLIFE_LAKEHOUSE``, else ``./lakehouse``."""
    return Path(root or os.environ.get(ENV_ROOT) or "lakehouse").resolve()


def table_path(layer: str, table: str, root: str | os.PathLike[str] | None = None) -> Path:
    if layer not in LAYERS:
        raise ValueError(f"layer: expected one of {', '.join(LAYERS)}, got {layer!r}")
    return lakehouse_root(root) / layer / table


def checkpoint_dir(query: str, root: str | os.PathLike[str] | None = None) -> Path:
    return lakehouse_root(root) / "_checkpoints" / query
