"""Open the review GeoPackage and its .qgz in real QGIS (headless) and render a PNG.

Needs Debian's PyQGIS for the SYSTEM python (``apt-get install -y python3-qgis
qgis-providers``); skipped when ``/usr/bin/python3 -c "import qgis.core"`` fails.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

SYSTEM_PYTHON = "/usr/bin/python3"
SCRIPT = Path(__file__).with_name("qgis_check_script.py")

_spec = importlib.util.spec_from_file_location(
    "review_builders", Path(__file__).with_name("review_builders.py"))
assert _spec is not None and _spec.loader is not None
builders = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(builders)


def _pyqgis_available() -> bool:
    if not Path(SYSTEM_PYTHON).exists():
        return False
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import qgis.core"], capture_output=True,
                           timeout=60, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    return probe.returncode == 0


def _orthophoto(path: Path, level: int) -> Path:
    import rasterio
    from affine import Affine

    rgb = np.full((3, 60, 130), level, dtype=np.uint8)
    rgb[:, 20:40, 10:50] = 220
    with rasterio.open(path, "w", driver="GTiff", width=130, height=60, count=3,
                       dtype="uint8", crs=builders.CRS,
                       transform=Affine.translation(-5, 50) @ Affine.scale(1, -1)) as dst:
        dst.write(rgb)
    return path


@pytest.mark.slow
def test_qgis_opens_styled_layers_and_the_project(tmp_path: Path) -> None:
    if not _pyqgis_available():
        pytest.skip("PyQGIS not installed for /usr/bin/python3 "
                    "(apt-get install -y python3-qgis qgis-providers)")
    flights = tmp_path / "flights"
    flights.mkdir()
    before = _orthophoto(flights / "2024.tif", 70)
    after = _orthophoto(flights / "2025.tif", 110)
    out = tmp_path / "out"
    out.mkdir()
    builders.write_run(out / "run.gpkg", orthophotos=(before, after))
    png = tmp_path / "qgis_render.png"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
    env.update({"QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(tmp_path)})
    env["PATH"] = "/usr/bin:/bin"
    env.pop("PYTHONPATH", None)
    done = subprocess.run([SYSTEM_PYTHON, str(SCRIPT), str(out / "run.gpkg"),
                           str(out / "run.qgz"), str(png), str(after), "edit"],
                          capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("QGIS_REPORT=")]
    assert lines, f"no report from QGIS (rc {done.returncode}): {done.stderr[-2000:]}"
    report = json.loads(lines[-1].removeprefix("QGIS_REPORT="))

    layers = report["layers"]
    assert all(info["valid"] for info in layers.values()), layers
    for name in ("candidate_parcels", "changes"):
        info = layers[name]
        assert info["renderer"] == "categorizedSymbol"
        assert info["widgets"]["調査状況"] == "ValueMap"
        assert info["widgets"]["調査日"] == "DateTime"
        assert info["types"]["調査日"] == "Date"
        assert info["defaults"]["調査状況"] == "'未確認'"
        assert set(info["categories"]) >= {"新築", "増築", "滅失", "建替"}
    assert "主な異動区分" in layers["candidate_parcels"]["category_field"]  # by 調査状況 first
    assert {"調査済", "要再調査"} <= set(layers["candidate_parcels"]["categories"])
    assert layers["candidate_parcels"]["labels"] is True
    assert layers["changes"]["aliases"]["area_m2"] == "面積㎡"
    assert layers["changes"]["aliases"]["score_max"] == "確信度"
    assert layers["missed"]["widgets"]["channel"] == "ValueMap"
    assert layers["coverage"]["category_field"] == "status"
    assert layers["run_info"]["features"] == len(builders.run_info()) + 3

    project = report["project"]
    assert project["read"] is True
    assert project["crs"] == "EPSG:6677"
    assert len(project["layers"]) == 8  # five vector layers, run_info, two orthophotos
    assert all(info["valid"] for info in project["layers"].values()), project["layers"]

    assert report["png_saved"] is True
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3).astype(int)
    assert len(np.unique(pixels, axis=0)) > 20  # not blank
    red = (pixels[:, 0] > 150) & (pixels[:, 1] < 90) & (pixels[:, 2] < 90)
    assert red.sum() > 50  # the 新築 change is drawn in its class colour

    # staff's edit saved by QGIS itself survives a re-run with --force
    edit = report["edit"]
    assert edit["committed"] is True, edit["errors"]
    assert not Path(f"{out / 'run.gpkg'}-wal").exists()
    builders.write_run(out / "run.gpkg", orthophotos=(before, after), force=True)
    import pyogrio

    parcels = pyogrio.read_dataframe(out / "run.gpkg", layer="candidate_parcels")
    row = parcels.set_index("parcel_id").loc[edit["parcel_id"]]
    assert (row["調査状況"], row["調査者"]) == ("課税対象", "QGIS 太郎")
    assert str(row["調査日"].date()) == "2025-06-01"
