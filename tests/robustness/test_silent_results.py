"""Inputs that used to give a silently wrong answer (exit 0) are refused or handled correctly.

Each case runs the real ``idou detect`` (or ``idou harvest``) in a subprocess on inputs generated
here: a damaged model contract, a flight in latitude/longitude or Web Mercator, a mosaic whose
sheets disagree, a buildings file elsewhere, a JPEG tile that fails to decode. The README
(Reliability and security) lists them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from idou.inference.contract import METADATA_KEY

from .conftest import (
    CONTRACT,
    GSD,
    ORIGIN,
    GoodPair,
    build_model,
    error_line,
    parcels_frame,
    run_idou,
    save_model,
    transform,
    write_raster,
)
from .test_corpus import _warped_to, assert_roofs_found


def _detect(good: GoodPair, before: Path, after: Path, out_dir: Path, *options: str | Path,
            model: Path | None = None) -> object:
    out_dir.mkdir(exist_ok=True)
    return run_idou("detect", before, after, "-o", out_dir / "changes.gpkg", "--model",
                    model or good.model, "--quiet", "--threads", "1", *options,
                    cwd=out_dir.parent)


def _refused(run: object, out_dir: Path, *names: str) -> str:
    assert run.returncode == 2, (run.returncode, run.stderr)  # type: ignore[attr-defined]
    assert "Traceback" not in run.stderr  # type: ignore[attr-defined]
    sentence = error_line(run.stderr)  # type: ignore[attr-defined]
    for name in names:
        assert name in sentence, sentence
    assert sentence.endswith("."), sentence
    assert sorted(p.name for p in out_dir.iterdir()) == [], "something was left behind"
    return sentence


# --- model contracts out of range --------------------------------------------------------------

BAD_CONTRACTS = {
    "std_zero": {"std": [0.0, 0.224, 0.225]},
    "std_negative": {"std": [-0.229, 0.224, 0.225]},
    "mean_nan": {"mean": [float("nan"), 0.456, 0.406]},
    "std_inf": {"std": [float("inf"), 0.224, 0.225]},
    "threshold_nan": {"threshold_new": float("nan")},
    "threshold_zero": {"threshold_demolished": 0.0},
    "tile_size_huge": {"tile_size": 60000},
    "tile_size_not_multiple_of_32": {"tile_size": 100, "tile_overlap": 10},
    "tile_size_text": {"tile_size": "128"},
    "overlap_half_the_tile": {"tile_overlap": 64},
    "gsd_tiny": {"gsd_m": 1e-4},
    "gsd_huge": {"gsd_m": 1000.0},
    "gsd_nan": {"gsd_m": float("nan")},
    "std_tiny": {"std": [1e-9, 0.224, 0.225]},
    "mean_huge": {"mean": [255.0, 0.456, 0.406]},
    "band_order_repeated": {"band_order": ["red", "red", "blue"]},
}


@pytest.mark.parametrize("name", sorted(BAD_CONTRACTS))
def test_model_contract_out_of_range_is_refused(name: str, good: GoodPair,
                                                tmp_path: Path) -> None:
    """Never exit 0 with nothing found, a MemoryError or a hang: one sentence, exit 2."""
    data = json.loads(CONTRACT.to_metadata()[METADATA_KEY])
    data.update(BAD_CONTRACTS[name])
    model = build_model(metadata=False)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(data)  # NaN/Infinity as Python writes them
    path = save_model(model, tmp_path / f"model_{name}.onnx")
    run = _detect(good, good.before, good.after, tmp_path / "out", model=path)
    sentence = _refused(run, tmp_path / "out", path.name)
    assert "invalid idou metadata" in sentence and "`idou export`" in sentence
    field = next(iter(BAD_CONTRACTS[name])).split("_")[0]
    assert field in sentence, sentence


# --- CRS that are not ground metres --------------------------------------------------------------

@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:6668", "EPSG:3857"])
def test_flight_not_in_ground_metres_without_crs_is_refused(crs: str, good: GoodPair,
                                                             tmp_path: Path) -> None:
    after = _warped_to(good.after, tmp_path / "flight_2025_other.tif", crs)
    run = _detect(good, good.before, after, tmp_path / "out")
    sentence = _refused(run, tmp_path / "out", "flight_2025_other.tif", "--crs")
    assert "EPSG:6677" in sentence


@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:3857"])
def test_flight_not_in_ground_metres_is_warped_onto_crs(crs: str, good: GoodPair,
                                                        tmp_path: Path) -> None:
    """With --crs naming the working grid, the flight is warped and every roof found, with
    areas in ground metres (the largest roof, 36 x 36 px at 0.2 m, is 51.8 m², not 1.5x)."""
    import geopandas as gpd

    after = _warped_to(good.after, tmp_path / "flight_2025_other.tif", crs)
    out = tmp_path / "out"
    run = _detect(good, good.before, after, out, "--crs", "EPSG:6677")
    assert run.returncode == 0, run.stderr  # type: ignore[attr-defined]
    changes = assert_roofs_found(out / "changes.gpkg")
    assert changes.crs.to_epsg() == 6677
    biggest = gpd.GeoSeries(changes.geometry).area.max()
    assert 0.8 * 51.84 < biggest < 1.25 * 51.84, biggest


def test_crs_option_that_is_itself_distorting_is_refused(good: GoodPair, tmp_path: Path) -> None:
    after = _warped_to(good.after, tmp_path / "flight_2025_latlon.tif", "EPSG:4326")
    run = _detect(good, good.before, after, tmp_path / "out", "--crs", "EPSG:3857")
    _refused(run, tmp_path / "out", "--crs EPSG:3857", "EPSG:6677")


def test_both_flights_in_web_mercator_are_warped_onto_crs(good: GoodPair,
                                                          tmp_path: Path) -> None:
    before = _warped_to(good.before, tmp_path / "flight_2024_3857.tif", "EPSG:3857")
    after = _warped_to(good.after, tmp_path / "flight_2025_3857.tif", "EPSG:3857")
    run = _detect(good, before, after, tmp_path / "out", "--crs", "EPSG:6677")
    assert run.returncode == 0, run.stderr  # type: ignore[attr-defined]
    assert_roofs_found(tmp_path / "out" / "changes.gpkg")


# --- a buildings file elsewhere -------------------------------------------------------------------

def test_buildings_outside_the_flights_warn_naming_the_file(good: GoodPair,
                                                            tmp_path: Path) -> None:
    """Like parcels: a 家屋現況図 of another area (or in a wrong CRS) is said, not ignored."""
    frame = parcels_frame(offset=(5000.0, 0.0))[["geometry"]]
    path = tmp_path / "buildings_elsewhere.gpkg"
    frame.to_file(path, driver="GPKG")
    out = tmp_path / "out"
    out.mkdir()
    run = run_idou("detect", good.before, good.after, "-o", out / "changes.gpkg", "--model",
                   good.model, "--threads", "1", "--buildings", path, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    warnings = [ln for ln in run.stderr.splitlines() if ln.startswith("warning:")]
    assert any("buildings_elsewhere.gpkg" in ln and "overlap the flights" in ln
               for ln in warnings), run.stderr


# --- a damaged tile in the middle of a flight -------------------------------------------------

def _jpeg_flight(good: GoodPair, path: Path) -> Path:
    """The later flight as a JPEG-compressed (YCbCr) GeoTIFF in 32 px tiles."""
    with rasterio.open(good.after) as src:
        data = src.read()
    return write_raster(path, data, tiled=True, blockxsize=32, blockysize=32, compress="jpeg",
                        photometric="ycbcr", jpeg_quality=95)


def _damage_tile(path: Path, row: int, col: int, seed: int) -> None:
    """Overwrite the second half of one tile's compressed bytes (its header stays)."""
    with rasterio.open(path) as ds:
        off = int(ds.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=1))
        size = int(ds.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=1))
    raw = bytearray(path.read_bytes())
    start = off + size // 2
    raw[start:off + size] = np.random.default_rng(seed).bytes(off + size - start)
    path.write_bytes(bytes(raw))


def test_jpeg_flight_without_damage_is_handled(good: GoodPair, tmp_path: Path) -> None:
    """The control: JPEG tiles decode without a word from GDAL, and every roof is found."""
    after = _jpeg_flight(good, tmp_path / "flight_2025_jpeg.tif")
    run = _detect(good, good.before, after, tmp_path / "out")
    assert run.returncode == 0, run.stderr  # type: ignore[attr-defined]
    assert_roofs_found(tmp_path / "out" / "changes.gpkg")


@pytest.mark.parametrize(("row", "col", "seed"), [(2, 5, 1), (5, 2, 2)])
def test_damaged_jpeg_tile_in_the_middle_of_a_flight_is_refused(
        row: int, col: int, seed: int, good: GoodPair, tmp_path: Path) -> None:
    """A tile preflight's samples miss (pixels 64-96 / 160-192): libjpeg only warns ("Corrupt
    JPEG data"), GDAL returns garbage; the run stops with a sentence instead of scoring it."""
    after = _jpeg_flight(good, tmp_path / "flight_2025_jpeg.tif")
    _damage_tile(after, row, col, seed)
    run = _detect(good, good.before, after, tmp_path / "out")
    sentence = _refused(run, tmp_path / "out", "flight_2025_jpeg.tif")
    assert "damaged" in sentence and "re-copy it" in sentence


def test_damaged_jpeg_tile_in_a_sheet_of_a_folder_names_the_sheet(good: GoodPair,
                                                                  tmp_path: Path) -> None:
    folder = tmp_path / "ortho_2025"
    folder.mkdir()
    with rasterio.open(good.after) as src:
        data = src.read()
    for k, name in enumerate(("09LD0001.tif", "09LD0002.tif")):
        write_raster(folder / name, np.ascontiguousarray(data[:, :, k * 128:(k + 1) * 128]),
                     tr=transform((ORIGIN[0] + k * 128 * GSD, ORIGIN[1])), tiled=True,
                     blockxsize=32, blockysize=32, compress="jpeg", photometric="ycbcr",
                     jpeg_quality=95)
    _damage_tile(folder / "09LD0002.tif", 2, 1, seed=3)  # mosaic pixels 160-192, 64-96
    run = _detect(good, good.before, folder, tmp_path / "out")
    sentence = _refused(run, tmp_path / "out", "09LD0002.tif", "ortho_2025")
    assert "09LD0001.tif" not in sentence
