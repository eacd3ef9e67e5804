"""`idou batch` keeps a presence model's building presence and fills ``unmapped_buildings``.

The flight of ``test_batch`` with two houses standing in both photos: one registered in the
building map, one not (the 未評価家屋の候補 to find). The model is ``test_batch``'s tiny change
model plus a ``presence`` output: a sigmoid of each date's first band (bright roofs).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import geopandas as gpd
import numpy as np
import onnx
import pyogrio
import pytest
import rasterio
from affine import Affine
from onnx import TensorProto, helper
from shapely.geometry import box

from idou.inference.batch import EXIT_OK, run_batch
from idou.inference.batch_config import load_flight_config
from idou.inference.contract import ModelContract

from ..onnx_builders import save_with_card
from .test_batch import (
    CRS,
    GONE,
    GSD,
    ORIGIN,
    SHEET,
    TRANSFORM,
    _idou,
    _scenes,
    _sheets,
    _toml,
    _write,
    tiny_model,
)

STANDING = [(5, 200, 40, 40), (150, 150, 40, 60)]  # (row, col, height, width) in both photos
UNMAPPED_SHEET = "09LD11"  # the after sheet that holds the whole of STANDING[1]
REGISTERED = [STANDING[0], GONE[0]]  # on the building map; STANDING[1] is not
ROOF = np.array([215, 210, 200], dtype=np.uint8)[:, None, None]


def presence_change_model(path: Path, contract: ModelContract) -> Path:
    """``tiny_model``'s probabilities, and ``presence`` = sigmoid(3 (first band - 0.6)) per date
    (with the default normalisation: about 0.07 on the ground, 0.93 on a roof)."""
    tiny_model(path, contract)
    model = onnx.load(str(path))
    graph = model.graph
    graph.initializer.extend([
        helper.make_tensor("first", TensorProto.INT64, [1], [0]),
        helper.make_tensor("roof_level", TensorProto.FLOAT, [], [0.6])])
    graph.node.extend([
        helper.make_node("Gather", ["before", "first"], ["b0"], axis=1),
        helper.make_node("Gather", ["after", "first"], ["a0"], axis=1),
        helper.make_node("Concat", ["b0", "a0"], ["both"], axis=1),
        helper.make_node("Sub", ["both", "roof_level"], ["lifted"]),
        helper.make_node("Mul", ["lifted", "k"], ["scaled"]),
        helper.make_node("Sigmoid", ["scaled"], ["presence"])])
    graph.output.append(helper.make_tensor_value_info("presence", TensorProto.FLOAT,
                                                      ["N", 2, "H", "W"]))
    onnx.checker.check_model(model)
    return save_with_card(model, path, contract, name=contract.model_name,
                          version=contract.model_version, trained_on="")


def _footprint(r: int, c: int, h: int, w: int) -> object:
    x0, y1 = ORIGIN[0] + c * GSD, ORIGIN[1] - r * GSD
    return box(x0, y1 - h * GSD, x0 + w * GSD, y1)


@pytest.fixture(scope="module")
def flight_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sheets and mosaics with the standing houses, the building map, both models."""
    from .test_batch import _parcels

    root = tmp_path_factory.mktemp("presence_flight")
    before, after = _scenes()
    for r, c, h, w in STANDING:
        before[:, r:r + h, c:c + w] = ROOF
        after[:, r:r + h, c:c + w] = ROOF
    _sheets(root / "sheets_2024", before, crs=None)
    _sheets(root / "sheets_2025", after, crs=CRS)
    _write(root / "mosaic_2024.tif", before, TRANSFORM, CRS)
    _write(root / "mosaic_2025.tif", after, TRANSFORM, CRS)
    _parcels(root / "parcels.gpkg")
    gpd.GeoDataFrame({"building_id": [f"B{k}" for k in range(len(REGISTERED))]},
                     geometry=[_footprint(*b) for b in REGISTERED], crs=CRS
                     ).to_file(root / "buildings.gpkg", driver="GPKG")
    common = {"tile_size": 64, "tile_overlap": 16, "gsd_m": GSD, "model_version": "1.0.0"}
    presence_change_model(root / "presence.onnx", ModelContract(
        model_name="tiny_presence", extra_outputs=("presence",), **common))
    tiny_model(root / "tiny.onnx", ModelContract(model_name="tiny", **common))
    return root


def _batch(flight_dir: Path, out: Path, model: str = "presence.onnx", **options: object
           ) -> Path:
    config = load_flight_config(_toml(flight_dir, out, model=model,
                                      extra='buildings = "buildings.gpkg"\n'))
    assert run_batch(config, **options).exit_code == EXIT_OK  # type: ignore
    return out / "review.gpkg"


def _unmapped(gpkg: Path) -> list[tuple[object, ...]]:
    """The unmapped_buildings layer as sorted rows (WKB, attributes)."""
    frame = pyogrio.read_dataframe(gpkg, layer="unmapped_buildings")
    cols = sorted(c for c in frame.columns if c != "geometry")
    return sorted((g.wkb_hex, *(str(v) for v in vals)) for g, vals in
                  zip(frame.geometry, frame[cols].itertuples(index=False), strict=True))


def _run_info(gpkg: Path, key: str) -> str:
    with sqlite3.connect(gpkg) as con:
        return str(con.execute("SELECT value FROM run_info WHERE key = ?", (key,)).fetchone()[0])


@pytest.fixture(scope="module")
def reference(flight_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted batch run with the presence model and the building map."""
    return _batch(flight_dir, tmp_path_factory.mktemp("runs") / "presence_reference")


def test_batch_finds_the_unmapped_building_as_idou_detect_does(
        reference: Path, flight_dir: Path, tmp_path: Path) -> None:
    from idou.inference.detect import DetectJob, run_detect

    found = pyogrio.read_dataframe(reference, layer="unmapped_buildings")
    assert len(found) == 1  # the unregistered house; the registered one and NEW/GONE are not
    assert found.geometry.iloc[0].intersects(_footprint(*STANDING[1]).centroid)
    assert "1 buildings present in both photos" in _run_info(reference, "unmapped_buildings")
    with rasterio.open(reference.parent / "presence.vrt") as mosaic:
        assert [mosaic.descriptions, mosaic.count] == [("presence_before", "presence_after"), 2]

    out = tmp_path / "detect.gpkg"
    run_detect(DetectJob(flight_dir / "mosaic_2024.tif", flight_dir / "mosaic_2025.tif", out,
                         parcels=flight_dir / "parcels.gpkg",
                         buildings=flight_dir / "buildings.gpkg",
                         model=str(flight_dir / "presence.onnx"), threads=1,
                         write_project=False))
    assert _unmapped(reference) == _unmapped(out)
    assert _run_info(reference, "unmapped_buildings") == _run_info(out, "unmapped_buildings")


class _Stop(Exception):
    pass


def test_a_resumed_batch_keeps_the_unmapped_buildings(reference: Path, flight_dir: Path,
                                                      tmp_path: Path) -> None:
    """Stopped after some blocks, one done block left without presence (as an older idou
    wrote it), then resumed: the layer equals an uninterrupted run's."""
    out = tmp_path / "resumed"
    seen: list[int] = []

    def stop_after_six(status: dict[str, object]) -> None:
        seen.append(1)
        if len(seen) == 6:
            raise _Stop

    with pytest.raises(_Stop):
        _batch(flight_dir, out, on_block=stop_after_six)
    assert not (out / "review.gpkg").exists()
    with sqlite3.connect(out / "journal.sqlite") as con:
        done = [r[0] for r in con.execute("SELECT id FROM blocks WHERE state = 'done'")]
    assert len(done) >= 6
    old = out / "blocks" / f"{done[0]}.tif"
    with rasterio.open(old) as src:
        profile, probs = src.profile, src.read([1, 2])
    profile.update(count=2)
    with rasterio.open(old, "w", **profile) as dst:
        dst.write(probs)

    resumed = _batch(flight_dir, out)
    assert _unmapped(resumed) == _unmapped(reference)
    with rasterio.open(old) as src:
        assert src.count == 4  # computed again, with its presence
    sittings = json.loads(sqlite3.connect(out / "journal.sqlite").execute(
        "SELECT value FROM meta WHERE key = 'sittings'").fetchone()[0])
    assert len(sittings) == 2


def test_a_model_without_presence_leaves_the_layer_empty_and_says_why(
        flight_dir: Path, tmp_path: Path) -> None:
    gpkg = _batch(flight_dir, tmp_path / "no_presence", model="tiny.onnx")
    assert pyogrio.read_dataframe(gpkg, layer="unmapped_buildings").empty
    assert "declares no building-presence output" in _run_info(gpkg, "unmapped_buildings")
    assert not (gpkg.parent / "presence.vrt").exists()
    with rasterio.open(next((gpkg.parent / "blocks").glob("*.tif"))) as block:
        assert block.count == 2


def test_a_sheet_redelivered_without_the_house_empties_the_layer_on_resume(
        reference: Path, flight_dir: Path, tmp_path: Path) -> None:
    """Presence is fingerprinted with the probabilities: the after sheet re-delivered at the
    same path (same size and modification time) without the unregistered house is computed
    again, and the house leaves the layer."""
    flights = tmp_path / "flight"
    shutil.copytree(flight_dir, flights, ignore=shutil.ignore_patterns("*.toml"))
    out = tmp_path / "redelivered"
    assert len(_unmapped(_batch(flights, out))) == 1

    sheet = flights / "sheets_2025" / f"{UNMAPPED_SHEET}.tif"
    stat = sheet.stat()
    ground, _ = _scenes()
    r0, c0 = int(UNMAPPED_SHEET[-2]) * SHEET, int(UNMAPPED_SHEET[-1]) * SHEET
    part = np.ascontiguousarray(ground[:, r0:r0 + SHEET, c0:c0 + SHEET])
    _write(sheet, part, TRANSFORM @ Affine.translation(c0, r0), CRS)
    assert sheet.stat().st_size == stat.st_size
    os.utime(sheet, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    # a new process, as an operator resumes (GDAL keeps the old sheet open in this one)
    run = _idou("batch", str(flights / f"{out.name}.toml"), "--quiet")
    assert run.wait(timeout=300) == EXIT_OK, run.stderr.read()  # type: ignore[union-attr]
    assert _unmapped(out / "review.gpkg") == []
    assert "0 buildings present in both photos" in _run_info(out / "review.gpkg",
                                                             "unmapped_buildings")
