"""Detect gives the same changes however the flights arrive: reprojected, resampled, partly
overlapping, as a folder of TIFF + world-file sheets with --crs."""

from __future__ import annotations

import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import Resampling, calculate_default_transform, reproject
from scipy import ndimage

from idou.inference.contract import ModelContract
from idou.inference.detect import DetectJob, run_detect

from .conftest import build_change_model, save_with_card

CRS = "EPSG:6677"
GSD = 0.2
SIZE = 360
ORIGIN = (-5000.0, -30000.0)
CONTRACT = ModelContract(tile_size=128, tile_overlap=16, gsd_m=GSD)
NEW = [(40, 50, 20), (150, 200, 24), (280, 90, 18), (300, 300, 22)]  # row, col, side
GONE = [(60, 250, 22), (200, 40, 20)]


def _texture(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((3, SIZE, SIZE), dtype=np.uint8)
    for b in range(3):
        f = ndimage.gaussian_filter(rng.normal(size=(SIZE, SIZE)), 6, mode="wrap")
        out[b] = np.clip(f / f.std() * 12 + 100, 1, 255).astype(np.uint8)
    return out


def _write(path: Path, data: np.ndarray, transform: Affine | None, crs: str | None = CRS
           ) -> Path:
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": 3,
               "dtype": "uint8"}
    if transform is not None:
        profile["transform"] = transform
    if crs:
        profile["crs"] = crs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
    return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("scene")
    ground = _texture(0)
    before, after = ground.copy(), ground.copy()
    for r, c, s in NEW:
        after[:, r:r + s, c:c + s] = 215
    for r, c, s in GONE:
        before[:, r:r + s, c:c + s] = 215
    transform = Affine(GSD, 0, ORIGIN[0], 0, -GSD, ORIGIN[1])
    paths = {"before": _write(folder / "before.tif", before, transform),
             "after": _write(folder / "after.tif", after, transform)}
    # the before flight in another CRS (zone VIII), at 0.25 m, and cut to its western 60 %
    with rasterio.open(paths["before"]) as src:
        for name, crs, res in (("reprojected", "EPSG:6676", None), ("coarser", CRS, 0.25)):
            dst_t, w, h = calculate_default_transform(src.crs, crs, src.width, src.height,
                                                      *src.bounds, resolution=res)
            data = np.zeros((3, h, w), dtype=np.uint8)
            reproject(src.read(), data, src_transform=src.transform, src_crs=src.crs,
                      dst_transform=dst_t, dst_crs=crs, resampling=Resampling.bilinear)
            paths[name] = _write(folder / f"{name}.tif", data, dst_t, crs)
    paths["west"] = _write(folder / "west.tif", before[:, :, :216], transform)
    # the after flight as four TIFF + .tfw sheets without a CRS
    sheets = folder / "sheets"
    sheets.mkdir()
    half = SIZE // 2
    for i in range(2):
        for j in range(2):
            stem = sheets / f"sheet_{i}{j}"
            _write(stem.with_suffix(".tif"), after[:, i * half:(i + 1) * half,
                                                    j * half:(j + 1) * half],
                   None, crs=None)
            x0, y0 = ORIGIN[0] + j * half * GSD, ORIGIN[1] - i * half * GSD
            stem.with_suffix(".tfw").write_text(
                f"{GSD}\n0\n0\n{-GSD}\n{x0 + GSD / 2}\n{y0 - GSD / 2}\n")
    paths["sheets"] = sheets
    paths["model"] = save_with_card(build_change_model(CONTRACT, box=3), folder / "m.onnx",
                                    CONTRACT)
    return paths


def _changes(before: Path, after: Path, model: Path, out: Path, **kwargs: object
             ) -> gpd.GeoDataFrame:
    run_detect(DetectJob(before, after, out, model=str(model), threads=1, write_project=False,
                         **kwargs))  # type: ignore[arg-type]
    return gpd.read_file(out, layer="changes")


def _assert_same(got: gpd.GeoDataFrame, want: gpd.GeoDataFrame) -> None:
    assert len(got) == len(want)
    for _, row in want.iterrows():
        near = got[got.geometry.centroid.distance(row.geometry.centroid) < 0.5]
        assert len(near) == 1, f"no match for the change at {row.geometry.centroid}"
        match = near.iloc[0]
        assert match["channel"] == row["channel"]
        overlap = match.geometry.intersection(row.geometry).area
        assert overlap / match.geometry.union(row.geometry).area > 0.8


def test_aligned_pair_finds_every_change(scene: dict[str, Path], tmp_path: Path) -> None:
    found = _changes(scene["before"], scene["after"], scene["model"], tmp_path / "a.gpkg")
    assert sorted(found["channel"]) == ["demolished"] * len(GONE) + ["new"] * len(NEW)


@pytest.mark.parametrize("variant", ["reprojected", "coarser"])
def test_reprojected_or_resampled_before_gives_the_same_changes(
        scene: dict[str, Path], tmp_path: Path, variant: str) -> None:
    want = _changes(scene["before"], scene["after"], scene["model"], tmp_path / "a.gpkg")
    got = _changes(scene[variant], scene["after"], scene["model"], tmp_path / "b.gpkg")
    _assert_same(got, want)


def test_partial_overlap_gives_the_same_changes_inside_the_overlap(
        scene: dict[str, Path], tmp_path: Path) -> None:
    want = _changes(scene["before"], scene["after"], scene["model"], tmp_path / "a.gpkg")
    got = _changes(scene["west"], scene["after"], scene["model"], tmp_path / "b.gpkg")
    inside = ORIGIN[0] + 216 * GSD - 0.5  # changes cut by the edge of the overlap are partial
    assert (got.geometry.bounds["maxx"] < ORIGIN[0] + 216 * GSD + 1e-6).all()
    _assert_same(got[got.geometry.bounds["maxx"] < inside],
                 want[want.geometry.bounds["maxx"] < inside])


def test_tfw_sheets_with_crs_give_the_same_changes_as_one_file(
        scene: dict[str, Path], tmp_path: Path) -> None:
    want = _changes(scene["before"], scene["after"], scene["model"], tmp_path / "a.gpkg")
    got = _changes(scene["before"], scene["sheets"], scene["model"], tmp_path / "b.gpkg",
                   crs=CRS)
    _assert_same(got, want)


def test_aoi_limits_the_changes_to_its_area(scene: dict[str, Path], tmp_path: Path) -> None:
    from shapely.geometry import box

    edge = ORIGIN[0] + 180 * GSD
    aoi = tmp_path / "aoi.gpkg"
    gpd.GeoDataFrame(geometry=[box(ORIGIN[0] - 10, ORIGIN[1] - SIZE * GSD - 10, edge,
                                   ORIGIN[1] + 10)], crs=CRS).to_file(aoi)
    want = _changes(scene["before"], scene["after"], scene["model"], tmp_path / "a.gpkg")
    got = _changes(scene["before"], scene["after"], scene["model"], tmp_path / "b.gpkg", aoi=aoi)
    assert (got.geometry.bounds["maxx"] <= edge + 1e-6).all()
    _assert_same(got, want[want.geometry.bounds["maxx"] < edge])
