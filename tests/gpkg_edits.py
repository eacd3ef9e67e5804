"""Editing a review GeoPackage's attributes from a test, as staff do in QGIS."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path


@contextmanager
def staff_edit(path: Path) -> Iterator[sqlite3.Connection]:
    """A sqlite3 connection to ``path``, committed and closed on leaving.

    The GeoPackage's rtree triggers name spatial SQL functions that plain sqlite3 lacks (QGIS
    edits through GDAL, which has them); attribute updates never call them, so stubs do.
    """
    with closing(sqlite3.connect(path)) as con, con:
        for name in ("ST_IsEmpty", "ST_MinX", "ST_MaxX", "ST_MinY", "ST_MaxY"):
            con.create_function(name, 1, lambda blob: 0)
        yield con
