"""The dashboard's pages: one script per question under ``screens/``, in the sections the
sidebar shows. Kept apart from the entry script, which runs the app when imported."""

from __future__ import annotations

from pathlib import Path

SCREENS = Path(__file__).resolve().with_name("screens")
PAGES: dict[str, list[tuple[str, str, str]]] = {
    "Today": [("network.py", "Network today", ":material/monitoring:"),
              ("stock.py", "Stock and expiry", ":material/inventory_2:"),
              ("stores.py", "Stores", ":material/storefront:"),
              ("pipeline.py", "Pipeline", ":material/conveyor_belt:")],
    "Decisions": [("transfers.py", "Transfers", ":material/local_shipping:"),
                  ("review.py", "Review", ":material/rule:"),
                  ("reorders.py", "Reorders", ":material/shopping_cart:"),
                  ("forecasts.py", "Forecasts", ":material/query_stats:"),
                  ("recall.py", "Recall", ":material/block:")],
}
"""Section -> each page's script, title and icon; the first page opens by default."""
