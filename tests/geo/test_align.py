"""AlignedPair: both flights on one grid, whatever their CRS, size, GSD and masks."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, Resampling
from rasterio.warp import reproject, transform
from rasterio.windows import Window
from shapely.geometry import box

from idou.geo.raster.align import AlignedPair
from idou.geo.raster.preflight import PreflightReport, preflight
from idou.geo.raster.sources import open_source
from idou.inference.contract import ModelContract

from .conftest import CRS_IX, ORIGIN, texture, write_raster

CONTRACT = ModelContract(tile_size=512, tile_overlap=64, gsd_m=0.2)  # a 0.2 m model
RGBA = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]


def _report(before: Path, after: Path, **kw: object) -> PreflightReport:
    return preflight(open_source(before), open_source(after), CONTRACT,
                     estimate_misregistration=False, **kw)  # type: ignore[arg-type]


def test_same_grid_reads_the_pixels_unchanged(tmp_path: Path) -> None:
    b, a = texture(64, 80, seed=1), texture(64, 80, seed=2)
    report = _report(write_raster(tmp_path / "b.tif", b), write_raster(tmp_path / "a.tif", a))
    with AlignedPair(report) as pair:
        assert not pair.before.warped and not pair.after.warped
        rb, ra, valid = pair.read(Window(10, 5, 32, 16))
    assert rb.dtype == np.uint8 and rb.shape == (3, 16, 32)
    assert np.array_equal(rb, b[:, 5:21, 10:42])
    assert np.array_equal(ra, a[:, 5:21, 10:42])
    assert valid.all()


def test_window_beyond_the_edge_is_zero_and_invalid(tmp_path: Path) -> None:
    data = texture(40, 40)
    report = _report(write_raster(tmp_path / "b.tif", data), write_raster(tmp_path / "a.tif", data))
    with AlignedPair(report) as pair:
        rb, ra, valid = pair.read(Window(-8, 30, 16, 16))
        assert np.array_equal(rb[:, :10, 8:], data[:, 30:, :8])
        assert valid[:10, 8:].all()
        assert not valid[:, :8].any() and not valid[10:].any()
        assert (rb[:, 10:] == 0).all() and (ra[:, :, :8] == 0).all()
        _, _, far = pair.read(Window(100, 100, 8, 8))
        assert not far.any()
        assert pair.valid_fraction(Window(100, 100, 8, 8)) == 0.0
        assert pair.valid_fraction(Window(0, 0, 40, 40)) == 1.0
        assert pair.valid_fraction(Window(-40, 0, 80, 40)) == pytest.approx(0.5, abs=0.05)


def test_thin_valid_strip_is_not_skipped(tmp_path: Path) -> None:
    data = texture(512, 512)
    strip = np.zeros((512, 512), bool)
    strip[:, 301:303] = True  # 2 px wide: thinner than a sample cell
    report = _report(write_raster(tmp_path / "b.tif", data, mask=strip),
                     write_raster(tmp_path / "a.tif", data))
    with AlignedPair(report) as pair:
        assert pair.valid_fraction(Window(0, 0, 512, 512)) > 0.0
        assert pair.valid_fraction(Window(0, 0, 300, 512)) == 0.0


def test_partly_overlapping_pair_reads_the_intersection(tmp_path: Path) -> None:
    big = texture(120, 140, seed=3)
    # before covers big; after is a 60 x 100 piece starting at column 30, row 20
    before = write_raster(tmp_path / "b.tif", big)
    after_data = big[:, 20:80, 30:130].copy()
    after = write_raster(tmp_path / "a.tif", after_data,
                         origin=(ORIGIN[0] + 30 * 0.2, ORIGIN[1] - 20 * 0.2))
    report = _report(before, after)
    assert (report.grid.width, report.grid.height) == (100, 60)
    with AlignedPair(report) as pair:
        rb, ra, valid = pair.read(pair.grid.full_window)
    assert np.array_equal(rb, ra) and valid.all()


def test_crs_mismatch_matches_the_aligned_pair(tmp_path: Path) -> None:
    after_data = texture(160, 160, seed=5, sigma=4.0)
    after = write_raster(tmp_path / "a.tif", after_data)
    # the same ground recorded in zone VIII at 0.1 m: warp the after image there
    src_t = Affine(0.2, 0, ORIGIN[0], 0, -0.2, ORIGIN[1])
    xs, ys = transform(CRS_IX, "EPSG:6676", [ORIGIN[0], ORIGIN[0] + 32], [ORIGIN[1],
                                                                           ORIGIN[1] - 32])
    x0, y0 = min(xs) - 3, max(ys) + 3
    n = int((max(xs) - min(xs) + 6) / 0.1)
    dst_t = Affine(0.1, 0, x0, 0, -0.1, y0)
    before_data = np.zeros((3, n, n), np.uint8)
    reproject(after_data, before_data, src_transform=src_t, src_crs=CRS_IX, dst_transform=dst_t,
              dst_crs="EPSG:6676", resampling=Resampling.cubic)
    before = write_raster(tmp_path / "b.tif", before_data, crs="EPSG:6676", transform=dst_t)
    report = _report(before, after)
    assert report.grid == open_source(after).grid
    with AlignedPair(report) as pair:
        assert pair.before.warped and not pair.after.warped
        rb, ra, valid = pair.read(Window(0, 0, 160, 160))
    inner = (slice(None), slice(4, -4), slice(4, -4))
    assert valid[4:-4, 4:-4].all()
    diff = np.abs(rb[inner].astype(int) - ra[inner].astype(int))
    assert diff.mean() < 1.5 and np.percentile(diff, 99) < 6


def test_gsd_resampled_pair_keeps_the_picture(tmp_path: Path) -> None:
    data = texture(50, 50, seed=6, sigma=4.0)
    b = write_raster(tmp_path / "b.tif", data, gsd=0.4)
    a = write_raster(tmp_path / "a.tif", data, gsd=0.4)
    report = _report(b, a)
    assert (report.grid.width, report.grid.height) == (100, 100)
    with AlignedPair(report) as pair:
        rb, ra, valid = pair.read(pair.grid.full_window)
    assert valid[2:-2, 2:-2].all()
    down = rb.astype(float).reshape(3, 50, 2, 50, 2).mean(axis=(2, 4))
    assert np.abs(down[:, 2:-2, 2:-2] - data[:, 2:-2, 2:-2]).mean() < 2.0


@pytest.mark.parametrize("kind", ["nodata", "alpha", "mask"])
def test_masks_of_either_flight_make_pixels_invalid(tmp_path: Path, kind: str) -> None:
    data = texture(48, 48)
    hole = np.zeros((48, 48), bool)
    hole[10:20, 5:30] = True
    if kind == "nodata":
        masked = data.copy()
        masked[:, hole] = 0
        before = write_raster(tmp_path / "b.tif", masked, nodata=0)
    elif kind == "alpha":
        alpha = np.where(hole, 0, 255).astype(np.uint8)[None]
        before = write_raster(tmp_path / "b.tif", np.concatenate([data, alpha]),
                              colorinterp=RGBA)
    else:
        before = write_raster(tmp_path / "b.tif", data, mask=~hole)
    after_data = data.copy()
    after_hole = np.zeros((48, 48), bool)
    after_hole[30:, 40:] = True
    after = write_raster(tmp_path / "a.tif", after_data, mask=~after_hole)
    report = _report(before, after)
    assert report.band_indexes_before == [1, 2, 3]
    with AlignedPair(report) as pair:
        rb, _, valid = pair.read(pair.grid.full_window)
        assert rb.shape[0] == 3
        assert np.array_equal(valid, ~hole & ~after_hole)
        assert pair.valid_fraction(Window(5, 10, 25, 10)) == 0.0


@pytest.mark.parametrize("kind", ["nodata", "alpha", "mask"])
def test_masks_survive_warping(tmp_path: Path, kind: str) -> None:
    data = texture(64, 64)
    hole = np.zeros((64, 64), bool)
    hole[:, :32] = True
    origin = (ORIGIN[0] + 0.05, ORIGIN[1])  # off the after lattice: before is warped
    if kind == "nodata":
        masked = data.copy()
        masked[:, hole] = 0
        before = write_raster(tmp_path / "b.tif", masked, nodata=0, origin=origin)
    elif kind == "alpha":
        alpha = np.where(hole, 0, 255).astype(np.uint8)[None]
        before = write_raster(tmp_path / "b.tif", np.concatenate([data, alpha]),
                              colorinterp=RGBA, origin=origin)
    else:
        before = write_raster(tmp_path / "b.tif", data, mask=~hole, origin=origin)
    after = write_raster(tmp_path / "a.tif", data)
    report = _report(before, after)
    with AlignedPair(report) as pair:
        assert pair.before.warped
        rb, _, valid = pair.read(pair.grid.full_window)
        assert pair.valid_fraction(Window(0, 0, 30, 64)) == 0.0
    assert rb.shape == (3, 64, 64)
    assert not valid[:, :31].any() and valid[:, 34:].all()


def test_aoi_masks_the_window(tmp_path: Path) -> None:
    data = texture(50, 50)
    aoi = tmp_path / "aoi.gpkg"
    x0, y0 = ORIGIN
    gpd.GeoDataFrame(geometry=[box(x0, y0 - 10, x0 + 4, y0)], crs="EPSG:6677").to_file(aoi)
    report = _report(write_raster(tmp_path / "b.tif", data), write_raster(tmp_path / "a.tif", data),
                     aoi=aoi)
    assert (report.grid.width, report.grid.height) == (20, 50)
    with AlignedPair(report) as pair:
        _, _, valid = pair.read(Window(0, 0, 20, 50))
        assert valid.all()
    big = tmp_path / "l.gpkg"
    gpd.GeoDataFrame(geometry=[box(x0, y0 - 10, x0 + 4, y0).union(box(x0, y0 - 10, x0 + 10,
                                                                      y0 - 6))],
                     crs="EPSG:6677").to_file(big)
    report = _report(write_raster(tmp_path / "b.tif", data), write_raster(tmp_path / "a.tif", data),
                     aoi=big)
    with AlignedPair(report) as pair:
        _, _, valid = pair.read(pair.grid.full_window)
        assert valid[:, :20].all() and valid[30:, 20:].all() and not valid[:30, 20:].any()
        assert 0.0 < pair.valid_fraction(pair.grid.full_window) < 1.0


def test_reads_touch_only_the_window(tmp_path: Path) -> None:
    """A huge sparse raster reads as fast as a small one: nothing beyond the window is read."""
    path = tmp_path / "big.tif"
    profile = {"driver": "GTiff", "width": 200_000, "height": 200_000, "count": 3,
               "dtype": "uint8", "crs": CRS_IX, "tiled": True, "blockxsize": 512,
               "blockysize": 512, "compress": "deflate", "sparse_ok": True, "BIGTIFF": "YES",
               "transform": Affine(0.2, 0, ORIGIN[0], 0, -0.2, ORIGIN[1])}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(texture(64, 64), window=Window(1000, 1000, 64, 64))
    src = open_source(path)
    report = PreflightReport(before=src, after=src, grid=src.grid, band_indexes_before=[1, 2, 3],
                             band_indexes_after=[1, 2, 3])
    with AlignedPair(report) as pair:
        rb, _, valid = pair.read(Window(1000, 1000, 64, 64))
        assert rb.any() and valid.all()


def _block_mean(data: np.ndarray) -> np.ndarray:
    c, h, w = data.shape
    return data.reshape(c, h // 2, 2, w // 2, 2).astype(np.float64).mean(axis=(2, 4))


def test_finer_flights_are_read_decimated_as_the_mean_of_their_pixels(tmp_path: Path) -> None:
    """0.2 m flights for a 0.4 m model: each grid pixel is the mean of the valid 2 x 2 source
    pixels under it (what training resamples to), read straight from the file, not warped."""
    b, a = texture(64, 80, seed=3), texture(64, 80, seed=4)
    b[:, 10, 33] = 0  # one nodata source pixel, left out of its grid pixel's mean
    before = write_raster(tmp_path / "b.tif", b, nodata=0)
    # the after flight starts one source pixel further east: its own 2 x 2 blocks differ
    after = write_raster(tmp_path / "a.tif", a, origin=(ORIGIN[0] + 0.2, ORIGIN[1]))
    report = preflight(open_source(before), open_source(after), ModelContract(gsd_m=0.4),
                       estimate_misregistration=False)
    assert report.grid.gsd == pytest.approx(0.4)
    with AlignedPair(report) as pair:
        assert pair.before.scaled and pair.after.scaled
        assert not pair.before.warped and not pair.after.warped
        rb, ra, valid = pair.read(pair.grid.full_window)
    t = report.grid.transform
    for data, read, x0 in ((a, ra, ORIGIN[0] + 0.2), (b, rb, ORIGIN[0])):
        # grid pixel (r, c) covers source pixels from (2r + dr, 2c + dc) on
        dc, dr = round((t.c - x0) / 0.2), round((ORIGIN[1] - t.f) / 0.2)
        assert dr == 0 and dc in (0, -1)
        c0 = -dc  # 1 when the flight starts half a grid pixel in: that column is invalid
        cols = (data.shape[2] - c0) // 2
        valid_mean = data.astype(np.float64)
        weights = (data[:1] > 0).astype(np.float64) if data is b else np.ones_like(data[:1],
                                                                                    float)
        sums = (valid_mean * weights)[:, :, c0:c0 + 2 * cols].reshape(3, 32, 2, cols, 2)
        counts = weights[:, :, c0:c0 + 2 * cols].reshape(1, 32, 2, cols, 2)
        want = sums.sum(axis=(2, 4)) / counts.sum(axis=(2, 4))
        got = read[:, :32, c0:c0 + cols].astype(float)
        assert np.abs(got - want)[:, :, 1 - c0:].max() <= 1  # column 0 is checked below
    assert valid[:32, 1:39].all()
    assert not valid[:, 0].any()  # the after flight covers only half of column 0


def test_a_flight_at_a_non_integer_ratio_is_averaged_by_gdal(tmp_path: Path) -> None:
    """0.25 m for a 0.4 m grid (ratio 1.6): GDAL's area-weighted average, nodata left out."""
    b = np.full((3, 96, 96), 100, np.uint8)
    b[:, :, 40] = 0  # nodata column
    before = write_raster(tmp_path / "b.tif", b, nodata=0, gsd=0.25)
    after = write_raster(tmp_path / "a.tif", np.full((3, 120, 120), 150, np.uint8))
    report = preflight(open_source(before), open_source(after), ModelContract(gsd_m=0.4),
                       estimate_misregistration=False)
    with AlignedPair(report) as pair:
        assert pair.before.scaled and pair.before.factor == 0 and pair.after.factor == 2
        rb, ra, valid = pair.read(pair.grid.full_window)
    assert valid.mean() > 0.9
    assert (rb[:, valid] == 100).all() and (ra[:, valid] == 150).all()


def test_a_window_over_a_damaged_jpeg_tile_is_a_user_error_not_garbage(tmp_path: Path) -> None:
    """libjpeg only warns about corrupt data and GDAL returns garbage pixels; every aligned read
    (what the engine runs on) raises one sentence naming the file instead."""
    from idou.geo.errors import UserInputError

    rng = np.random.default_rng(0)
    coarse = rng.integers(60, 140, size=(3, 16, 16), dtype=np.uint8)
    data = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2) + rng.integers(
        0, 12, size=(3, 128, 128), dtype=np.uint8)
    path = write_raster(tmp_path / "flight_jpeg.tif", data, tiled=True, blockxsize=32,
                        blockysize=32, compress="jpeg", photometric="ycbcr", jpeg_quality=95)
    with rasterio.open(path) as ds:
        off = int(ds.get_tag_item("BLOCK_OFFSET_1_2", "TIFF", bidx=1))
        size = int(ds.get_tag_item("BLOCK_SIZE_1_2", "TIFF", bidx=1))
    raw = bytearray(path.read_bytes())
    raw[off + size // 2:off + size] = rng.bytes(size - size // 2)
    path.write_bytes(bytes(raw))
    src = open_source(path)
    report = PreflightReport(before=src, after=src, grid=src.grid, band_indexes_before=[1, 2, 3],
                             band_indexes_after=[1, 2, 3])
    with AlignedPair(report) as pair:
        pair.read(Window(64, 0, 64, 64))  # clean tiles read without a word
        with pytest.raises(UserInputError, match=r"flight_jpeg\.tif is damaged at pixel "
                                                 r"column 32, row 64 .*Corrupt JPEG data"):
            pair.read(Window(32, 64, 32, 32))
