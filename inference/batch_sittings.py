"""A batch run's sittings: each start of the run (resumes included), kept in its journal."""

from __future__ import annotations

import json
from typing import Any

from idou.inference.batch_report import merge_sitting, sitting
from idou.inference.journal import Journal

SITTINGS_KEY = "sittings"  # journal meta: each start of the run (resumes included), as JSON


def sittings(journal: Journal) -> list[dict[str, Any]]:
    """The run's sittings so far (oldest first)."""
    found = json.loads(journal.meta().get(SITTINGS_KEY, "[]"))
    return found if isinstance(found, list) else []


def record_sitting(journal: Journal, status: dict[str, Any]) -> list[dict[str, Any]]:
    """Save this sitting as ``status`` shows it; returns all sittings."""
    merged = merge_sitting(sittings(journal), sitting(status))
    journal.set_meta(SITTINGS_KEY, json.dumps(merged))
    return merged
