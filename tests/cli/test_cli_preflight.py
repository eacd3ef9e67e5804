"""`idou preflight`: a report and exit 0 on a good pair; one line and exit 2 on a bad one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from idou.inference.model_source import resolve_model


def _write(path: Path, data: np.ndarray, crs: str | None = "EPSG:6677") -> Path:
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1],
               "count": data.shape[0], "dtype": data.dtype.name,
               "transform": Affine(0.2, 0, -5000.0, 0, -0.2, -30000.0)}
    if crs:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path


def _idou(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "idou.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})


def test_good_pair_reports_and_exits_0(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (3, 160, 240), dtype=np.uint8)
    before = _write(tmp_path / "flight_2024.tif", data)
    after = _write(tmp_path / "flight_2025.tif", data)
    result = _idou("preflight", before, after)
    assert result.returncode == 0, result.stderr
    assert "flight_2024.tif" in result.stdout and "flight_2025.tif" in result.stdout
    gsd = resolve_model("default").contract.gsd_m   # the grid is at the shipped model's GSD
    width, height = round(240 * 0.2 / gsd), round(160 * 0.2 / gsd)
    assert f"common grid: {width} x {height} px" in result.stdout
    assert "dx +0.00 px, dy +0.00 px" in result.stdout


def test_bad_pair_is_one_line_and_exit_2(tmp_path: Path) -> None:
    good = _write(tmp_path / "flight_2025.tif", np.ones((3, 16, 16), np.uint8))
    gray = _write(tmp_path / "flight_2024.tif", np.ones((1, 16, 16), np.uint8))
    result = _idou("preflight", gray, good)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "flight_2024.tif has 1 band" in lines[0]
    assert not any(p.suffix == ".vrt" for p in tmp_path.iterdir())
