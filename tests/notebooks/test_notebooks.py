"""Every analyst notebook runs top to bottom on a small lakehouse and shows real figures."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ..lakehouse.demo_tables import write_demo_lakehouse

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def run_notebook(path: Path) -> dict:
    """Execute the code cells in order in one namespace, as a kernel would."""
    namespace: dict = {"__name__": "__main__"}
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), f"{path.name}", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("where", ["folder", "s3"])
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_on_a_lakehouse(path, where, tmp_path, monkeypatch, request):
    root = str(tmp_path) if where == "folder" else request.getfixturevalue("s3_lake")
    write_demo_lakehouse(root, datetime.now(UTC))
    monkeypatch.setenv("SHELFLIFE_LAKEHOUSE", root)
    ns = run_notebook(path)
    if path.name == "stock_overview.ipynb":
        levels = ns["levels"]
        assert ns["by_region"]["on_hand"].sum() == levels["on_hand"].sum()
        assert set(ns["by_region"].index) == set(levels["region"])
        assert (ns["negative"]["on_hand"] < 0).all()
        assert len(ns["negative"]) == int((levels["on_hand"] < 0).sum())
        assert (ns["expiring_by_sku"] > 0).all()


def test_there_is_a_notebook():
    assert NOTEBOOKS, "notebooks/ should hold at least one analyst notebook"
