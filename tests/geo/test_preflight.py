"""preflight: the common grid, band selection, and one-sentence errors for unusable pairs."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from rasterio.enums import ColorInterp
from rasterio.warp import transform
from scipy import ndimage
from shapely.geometry import box

from idou.errors import FlightsDoNotOverlap, UnusableCRS, UserInputError
from idou.geo.raster.preflight import preflight, select_bands
from idou.geo.raster.sources import open_source
from idou.inference.contract import ModelContract

from .conftest import ORIGIN, texture, write_raster

RGB = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
CONTRACT = ModelContract(tile_size=512, tile_overlap=64, gsd_m=0.2)  # a 0.2 m model


def _pair(tmp_path: Path, before: np.ndarray | None = None, after: np.ndarray | None = None,
          before_kw: dict | None = None, after_kw: dict | None = None):
    b = write_raster(tmp_path / "flight_2024.tif",
                     texture(96, 128, seed=1) if before is None else before, **(before_kw or {}))
    a = write_raster(tmp_path / "flight_2025.tif",
                     texture(96, 128, seed=1) if after is None else after, **(after_kw or {}))
    return open_source(b), open_source(a)


def test_same_grid_pair(tmp_path: Path) -> None:
    before, after = _pair(tmp_path)
    report = preflight(before, after, CONTRACT)
    assert report.grid == after.grid
    assert report.band_indexes_before == [1, 2, 3]
    assert report.overlap_fraction == pytest.approx(1.0)
    assert report.valid_fraction == pytest.approx(1.0)
    assert report.warnings == []


def test_partial_overlap_gives_the_intersection(tmp_path: Path) -> None:
    # before starts 40 px right and 20 px down of after's origin, and is larger
    before, after = _pair(
        tmp_path, before=texture(150, 150),
        before_kw={"origin": (ORIGIN[0] + 8.0, ORIGIN[1] - 4.0)})
    report = preflight(before, after, CONTRACT, estimate_misregistration=False)
    g = report.grid
    assert (g.width, g.height) == (88, 76)
    assert (g.transform.c, g.transform.f) == pytest.approx((ORIGIN[0] + 8.0, ORIGIN[1] - 4.0))
    assert report.overlap_fraction == pytest.approx(88 * 76 / (128 * 96))
    assert any("overlap" in n for n in report.notes)


def test_no_overlap_names_both_files(tmp_path: Path) -> None:
    before, after = _pair(tmp_path, before_kw={"origin": (ORIGIN[0] + 1000.0, ORIGIN[1])})
    with pytest.raises(FlightsDoNotOverlap,
                       match=r"flight_2024\.tif and flight_2025\.tif do not overlap"):
        preflight(before, after, CONTRACT)


def test_gsd_is_resampled_to_the_model(tmp_path: Path) -> None:
    before, after = _pair(tmp_path, before_kw={"gsd": 0.25}, after_kw={"gsd": 0.25})
    report = preflight(before, after, CONTRACT, estimate_misregistration=False)
    assert report.grid.gsd == pytest.approx(0.2)
    assert (report.grid.width, report.grid.height) == (160, 120)
    assert report.warnings == []
    assert any("resampled" in n for n in report.notes)


def test_gsd_far_off_warns(tmp_path: Path) -> None:
    before, after = _pair(tmp_path, before_kw={"gsd": 0.5}, after_kw={"gsd": 0.5})
    report = preflight(before, after, CONTRACT, estimate_misregistration=False)
    assert report.grid.gsd == pytest.approx(0.2)
    assert len(report.warnings) == 2
    assert "2.5x off" in report.warnings[0]


def test_crs_difference_is_a_note(tmp_path: Path) -> None:
    # the before flight is recorded in zone VIII over the same ground as after (zone IX)
    xs, ys = transform("EPSG:6677", "EPSG:6676", [ORIGIN[0]], [ORIGIN[1]])
    b = write_raster(tmp_path / "b.tif", texture(64, 64), crs="EPSG:6676",
                     origin=(xs[0] - 2.0, ys[0] + 2.0))
    a = write_raster(tmp_path / "a.tif", texture(64, 64))
    report = preflight(open_source(b), open_source(a), CONTRACT, estimate_misregistration=False)
    assert report.grid.crs.to_epsg() == 6677
    assert report.grid.gsd == pytest.approx(0.2)
    assert any("b.tif (EPSG:6676) is warped" in n for n in report.notes)
    assert report.warnings == []


def test_geographic_after_is_refused(tmp_path: Path) -> None:
    before, after = _pair(tmp_path, after_kw={"crs": "EPSG:6668", "gsd": 2e-6,
                                              "origin": (139.8, 35.7)})
    with pytest.raises(UnusableCRS, match=r"flight_2025\.tif is in a geographic CRS"):
        preflight(before, after, CONTRACT)


def test_all_nodata_flight_is_refused(tmp_path: Path) -> None:
    before, after = _pair(tmp_path, before=np.zeros((3, 96, 128), np.uint8),
                          before_kw={"nodata": 0})
    with pytest.raises(UserInputError, match=r"flight_2024\.tif holds no valid pixels"):
        preflight(before, after, CONTRACT)


def test_no_common_valid_pixels_is_refused(tmp_path: Path) -> None:
    left = np.zeros((96, 128), bool)
    left[:, :64] = True
    before, after = _pair(tmp_path, before_kw={"mask": left}, after_kw={"mask": ~left})
    with pytest.raises(FlightsDoNotOverlap, match=r"flight_2024\.tif and flight_2025\.tif have no "
                                             r"valid pixels in common"):
        preflight(before, after, CONTRACT)


def test_aoi_limits_the_grid(tmp_path: Path) -> None:
    before, after = _pair(tmp_path)
    aoi = tmp_path / "aoi.gpkg"
    x0, y0 = ORIGIN
    gpd.GeoDataFrame(geometry=[box(x0 + 2, y0 - 10, x0 + 6, y0 - 4)], crs="EPSG:6677").to_file(aoi)
    report = preflight(before, after, CONTRACT, aoi=aoi, estimate_misregistration=False)
    assert (report.grid.width, report.grid.height) == (20, 30)
    assert report.aoi is not None and report.aoi.area == pytest.approx(24.0)
    far = tmp_path / "far.geojson"
    gpd.GeoDataFrame(geometry=[box(0, 0, 10, 10)], crs="EPSG:6677").to_file(far)
    with pytest.raises(FlightsDoNotOverlap, match=r"AOI far\.geojson does not overlap"):
        preflight(before, after, CONTRACT, aoi=far)


@pytest.mark.parametrize(("shift", "tol"), [((3.0, -2.0), 0.3), ((0.5, 1.25), 0.3)])
def test_misregistration_is_recovered(tmp_path: Path, shift: tuple[float, float],
                                      tol: float) -> None:
    base = texture(700, 700, seed=4, sigma=3.0).astype(np.float64)
    dx, dy = shift
    moved = np.stack([ndimage.shift(b, (dy, dx), order=3, mode="wrap") for b in base])
    after = np.clip(np.rint(moved), 0, 255).astype(np.uint8)
    before_s, after_s = _pair(tmp_path, before=base.astype(np.uint8), after=after)
    report = preflight(before_s, after_s, CONTRACT)
    assert report.misregistration_px is not None
    est = report.misregistration_px
    assert abs(est[0] - dx) < tol and abs(est[1] - dy) < tol
    shifted = [w for w in report.warnings if "shifted" in w]
    assert len(shifted) == (1 if np.hypot(dx, dy) > 3 else 0)


def test_unrelated_flights_give_no_shift(tmp_path: Path) -> None:
    before, after = _pair(tmp_path, before=texture(600, 600, seed=1),
                          after=texture(600, 600, seed=2))
    report = preflight(before, after, CONTRACT)
    assert report.misregistration_px is None
    assert not any("shifted" in w for w in report.warnings)


def _source_with(tmp_path: Path, data: np.ndarray, name: str = "odd.tif", **kw):
    return open_source(write_raster(tmp_path / name, data, **kw))


@pytest.mark.parametrize(("data", "message"), [
    (texture(8, 8, bands=1), r"odd\.tif has 1 band; the model needs 3 bands"),
    (texture(8, 8, bands=2), r"odd\.tif has 2 bands .*the model needs 3 bands"),
    (texture(8, 8, bands=5), r"odd\.tif has 5 bands.*gdal_translate -b 1 -b 2 -b 3"),
    (texture(8, 8).astype(np.uint16) * 200, r"odd\.tif has 16-bit.*gdal_translate -ot Byte -scale"),
    (texture(8, 8).astype(np.float32), r"odd\.tif has floating-point pixels.*8-bit"),
])
def test_unusable_bands_are_refused(tmp_path: Path, data: np.ndarray, message: str) -> None:
    src = _source_with(tmp_path, data)
    with pytest.raises(UserInputError, match=message):
        select_bands(src, CONTRACT)


def test_float_with_nan_is_refused_in_preflight(tmp_path: Path) -> None:
    data = texture(96, 128).astype(np.float32)
    data[:, :10] = np.nan
    before, after = _pair(tmp_path, before=data)
    with pytest.raises(UserInputError, match=r"flight_2024\.tif has floating-point"):
        preflight(before, after, CONTRACT)


def test_rgba_uses_rgb(tmp_path: Path) -> None:
    data = np.concatenate([texture(8, 8), np.full((1, 8, 8), 255, np.uint8)])
    src = _source_with(tmp_path, data, colorinterp=[*RGB, ColorInterp.alpha])
    assert select_bands(src, CONTRACT) == [1, 2, 3]


def test_four_bands_by_colour_interpretation(tmp_path: Path) -> None:
    src = _source_with(tmp_path, texture(8, 8, bands=4),
                       colorinterp=[ColorInterp.nir, ColorInterp.blue, ColorInterp.green,
                                    ColorInterp.red])
    warnings: list[str] = []
    assert select_bands(src, CONTRACT, warnings) == [4, 3, 2]
    assert warnings == []
    four = ModelContract(band_order=("red", "green", "blue", "nir"), mean=(0.5,) * 4,
                         std=(0.25,) * 4)
    assert select_bands(src, four) == [4, 3, 2, 1]


def test_four_bands_without_interpretation_warn(tmp_path: Path) -> None:
    src = _source_with(tmp_path, texture(8, 8, bands=4), photometric="MINISBLACK")
    warnings: list[str] = []
    assert select_bands(src, CONTRACT, warnings) == [1, 2, 3]
    assert len(warnings) == 1 and "odd.tif" in warnings[0]


def test_report_pickles_for_workers(tmp_path: Path) -> None:
    import pickle

    before, after = _pair(tmp_path)
    aoi = tmp_path / "aoi.gpkg"
    x0, y0 = ORIGIN
    gpd.GeoDataFrame(geometry=[box(x0, y0 - 10, x0 + 10, y0)], crs="EPSG:6677").to_file(aoi)
    report = preflight(before, after, CONTRACT, aoi=aoi, estimate_misregistration=False)
    again = pickle.loads(pickle.dumps(report))
    assert again.grid == report.grid and again.aoi.equals(report.aoi)
    assert again.before.path == report.before.path


def test_cog_input_uses_its_overviews(tmp_path: Path) -> None:
    import rasterio.shutil

    plain = write_raster(tmp_path / "plain.tif", texture(600, 600))
    rasterio.shutil.copy(plain, tmp_path / "flight.cog.tif", driver="COG", blocksize=256)
    cog = open_source(tmp_path / "flight.cog.tif")
    assert cog.has_overviews
    report = preflight(cog, cog, CONTRACT, estimate_misregistration=False)
    assert report.valid_fraction == pytest.approx(1.0)
