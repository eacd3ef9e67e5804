"""The GeoPackage's SQLite is opened for one transaction and closed again, every time."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from idou.geo.review.gpkg_sqlite import connect


def test_the_connection_commits_and_is_closed(tmp_path: Path) -> None:
    path = tmp_path / "a.gpkg"
    with connect(path) as con:
        con.execute("CREATE TABLE t (x INTEGER)")
        con.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        con.execute("SELECT 1")
    with connect(path, read_only=True) as con:
        assert con.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_an_error_rolls_back_and_still_closes(tmp_path: Path) -> None:
    path = tmp_path / "a.gpkg"
    with connect(path) as con:
        con.execute("CREATE TABLE t (x INTEGER)")
    with pytest.raises(RuntimeError), connect(path) as con:
        con.execute("INSERT INTO t VALUES (1)")
        raise RuntimeError("stop")
    with pytest.raises(sqlite3.ProgrammingError):
        con.execute("SELECT 1")
    with connect(path, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_read_only_never_creates_or_writes_the_file(tmp_path: Path) -> None:
    with pytest.raises(sqlite3.OperationalError), connect(tmp_path / "none.gpkg",
                                                          read_only=True) as con:
        con.execute("SELECT 1")
    assert not (tmp_path / "none.gpkg").exists()
