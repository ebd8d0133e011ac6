"""Every analyst notebook runs top to bottom in a real Jupyter kernel on a small lakehouse,
draws its charts, and shows figures that agree with the tables."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from ..apps.pages import write_transfer_recommendations
from ..lakehouse.demo_tables import write_demo_lakehouse, write_demo_pages

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))

CHECKS = {
    # Cells appended to each notebook: they run in its kernel, after its own cells, and
    # fail the run (CellExecutionError) when a figure disagrees with the tables.
    "stock_overview.ipynb": """
assert by_region["on_hand"].sum() == levels["on_hand"].sum()
assert set(by_region.index) == set(levels["region"])
assert (negative["on_hand"] < 0).all() and len(negative) == int((levels["on_hand"] < 0).sum())
assert len(expiring_by_sku) and (expiring_by_sku > 0).all()
assert set(freshness["mode"]) <= {"live", "syncing"}
""",
    "decisions.ipynb": """
assert by_route["units"].sum() == transfers["quantity"].sum()
assert (tightest["shelf_life_at_arrival_days"] >= tightest["min_sellable_days"]).all()
assert order_units.sum() == reorders["order_quantity"].sum()
""",
    "forecasts.ipynb": """
assert series == ("E-S001", "MILK-1L"), series
assert spread["forecast"].sum() == forecasts["forecast"].sum()
""",
}


def execute(path: Path, extra: str = "") -> nbformat.NotebookNode:
    """Run the notebook in a fresh ``python3`` kernel (ipykernel), from the repository
    folder as an analyst's Jupyter would; ``extra`` is appended as a last cell."""
    book = nbformat.read(path, as_version=4)
    if extra:
        book.cells.append(nbformat.v4.new_code_cell(extra))
    env = {k: v for k, v in os.environ.items()
           if k != "MPLBACKEND"}  # Streamlit's import sets Agg, which draws nothing inline
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    NotebookClient(book, timeout=300, startup_timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO)}}).execute(env=env)
    return book


@pytest.mark.parametrize("where", ["folder", "s3"])
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_in_a_kernel_on_a_lakehouse(path, where, tmp_path, monkeypatch, request):
    root = str(tmp_path) if where == "folder" else request.getfixturevalue("s3_lake")
    now = datetime.now(UTC)
    write_demo_lakehouse(root, now)
    write_demo_pages(root, now)
    write_transfer_recommendations(root, now, count=5)
    monkeypatch.setenv("SHELFLIFE_LAKEHOUSE", root)
    book = execute(path, CHECKS.get(path.name, ""))
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    charts = [o for o in outputs if "image/png" in o.get("data", {})]
    assert charts, f"{path.name} draws no chart"


def test_every_notebook_is_checked_and_saved_with_its_outputs():
    assert {p.name for p in NOTEBOOKS} == set(CHECKS), "a notebook without checks"
    for path in NOTEBOOKS:
        book = nbformat.read(path, as_version=4)
        code = [c for c in book.cells if c.cell_type == "code"]
        assert all(c.outputs for c in code if c.source.strip()), \
            f"{path.name} is saved without outputs: run scripts/notebooks.py"
        assert any("image/png" in o.get("data", {}) for c in code for o in c.outputs), \
            f"{path.name} is saved without its charts"
