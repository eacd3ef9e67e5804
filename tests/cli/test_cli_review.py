"""`idou harvest` and `idou summary` from the command line."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "review_builders", Path(__file__).parents[1] / "geo" / "review_builders.py")
assert _spec is not None and _spec.loader is not None
builders = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(builders)


def _idou(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run([sys.executable, "-m", "idou.cli", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def test_harvest_and_summary_write_their_files(tmp_path: Path) -> None:
    builders.write_run(tmp_path / "run.gpkg")
    done = _idou("harvest", str(tmp_path / "run.gpkg"), "-o", str(tmp_path / "labels"))
    assert done.returncode == 0, done.stderr
    assert "observed precision n/a" in done.stdout
    report = json.loads((tmp_path / "labels" / "harvest.json").read_text(encoding="utf-8"))
    assert report["counts"]["confirmed"] == 0
    done = _idou("summary", str(tmp_path / "run.gpkg"), "-o", str(tmp_path / "summary"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "summary" / "district_summary.html").is_file()
    assert "2 districts" in done.stdout


def test_missing_file_is_exit_2_without_traceback(tmp_path: Path) -> None:
    done = _idou("harvest", str(tmp_path / "none.gpkg"), "-o", str(tmp_path / "x"))
    assert done.returncode == 2
    assert "none.gpkg does not exist" in done.stderr
    assert "Traceback" not in done.stderr


def test_harvest_warns_about_unknown_review_values(tmp_path: Path) -> None:
    from ..gpkg_edits import staff_edit

    builders.write_run(tmp_path / "run.gpkg")
    with staff_edit(tmp_path / "run.gpkg") as con:
        con.execute("UPDATE changes SET 調査状況 = '課税済'")
    done = _idou("harvest", str(tmp_path / "run.gpkg"), "-o", str(tmp_path / "labels"))
    assert done.returncode == 0, done.stderr
    assert "warning: run.gpkg:" in done.stderr and "'課税済'" in done.stderr
