"""A GeoPackage's SQLite, opened for a short transaction and always closed again.

``with sqlite3.connect(path) as con:`` commits (or rolls back) but leaves the connection open
until it is garbage-collected, holding the file (and on Windows its lock) longer than needed.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def connect(path: str | Path, read_only: bool = False) -> Iterator[sqlite3.Connection]:
    """A connection to ``path`` that commits on success, rolls back on error, and is closed.

    Args:
        path: the GeoPackage (an SQLite file).
        read_only: open it ``mode=ro`` (never creates the file, never writes).
    """
    database = f"file:{path}?mode=ro" if read_only else str(path)
    with contextlib.closing(sqlite3.connect(database, uri=read_only)) as con, con:
        yield con
