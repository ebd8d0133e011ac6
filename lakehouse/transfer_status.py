"""The words a transfer recommendation's life is told in, with nothing to import.

Kept apart from :mod:`lakehouse.decisions` (which needs pandas and delta-rs) because the
``shelflife`` command offers them as choices, and that command must start on a store's
small machine where only the agent is installed.
"""

from __future__ import annotations

from typing import Literal

Decision = Literal["approved", "rejected"]
DECISIONS: tuple[Decision, ...] = ("approved", "rejected")
"""What a person may decide about a recommendation."""
TRANSFER_STATUSES = ("proposed", "approved", "shipped", "arrived", "rejected")
"""A recommendation's life: proposed, then decided; an approved one ships, then arrives
(:func:`lakehouse.decisions.transfer_progress`)."""
