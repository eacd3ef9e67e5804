"""Vectorising probabilities: whole polygons across block borders, areas kept, tiny ones dropped."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from idou.geo.changes.vectorize import clean_mask, vectorize
from idou.geo.raster.grid import Grid

GSD = 0.5


class ArrayReader:
    def __init__(self, probs: np.ndarray) -> None:
        self.probs = probs

    def read(self, window: Window) -> np.ndarray:
        r0, c0 = int(window.row_off), int(window.col_off)
        return self.probs[:, r0:r0 + int(window.height), c0:c0 + int(window.width)].copy()


def grid_for(probs: np.ndarray) -> Grid:
    _, h, w = probs.shape
    return Grid(CRS.from_epsg(6677), Affine(GSD, 0, -5000.0, 0, -GSD, 3000.0), w, h)


def test_shapes_crossing_block_borders_are_one_polygon_each() -> None:
    probs = np.zeros((2, 70, 70), dtype=np.uint8)
    probs[0, 10:40, 12:36] = 200  # a rectangle over the corner of four 16 px blocks
    probs[0, 45:65, 5:9] = 180  # a U: two arms joined only at the bottom, in another block
    probs[0, 45:65, 25:29] = 180
    probs[0, 61:65, 5:29] = 180
    probs[0, 20, 20] = 255  # the highest score inside the rectangle
    probs[1, 3:30, 50:66] = 220  # demolished, across a border
    split = vectorize(ArrayReader(probs), grid_for(probs), (0.5, 0.5), block_size=16)
    whole = vectorize(ArrayReader(probs), grid_for(probs), (0.5, 0.5), block_size=4096)
    assert list(split["channel"]) == ["new", "new", "demolished"]
    assert all(g.geom_type == "Polygon" for g in split.geometry)
    for a, b in zip(split.geometry, whole.geometry, strict=True):
        assert shapely.equals_exact(shapely.normalize(a), shapely.normalize(b), 1e-9)
    np.testing.assert_allclose(split[["area_m2", "score_max", "score_mean"]].to_numpy(),
                               whole[["area_m2", "score_max", "score_mean"]].to_numpy())
    rect = split.iloc[0]
    assert rect["score_max"] == pytest.approx(1.0)
    assert rect["area_m2"] == pytest.approx(30 * 24 * GSD**2)
    assert rect["score_mean"] == pytest.approx((200 * (30 * 24 - 1) + 255) / (30 * 24) / 255)
    left, bottom, right, top = rect.geometry.bounds  # in the grid's CRS
    assert (left, top) == pytest.approx((-5000 + 12 * GSD, 3000 - 10 * GSD))


def test_area_is_conserved_within_a_pixel() -> None:
    rng = np.random.default_rng(0)
    probs = np.zeros((2, 200, 200), dtype=np.uint8)
    yy, xx = np.mgrid[:200, :200]
    centres = [(40, 40, 15), (120, 60, 22), (60, 150, 9), (160, 160, 30)]
    for cy, cx, r in centres:
        probs[0][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = rng.integers(150, 255)
    grid = grid_for(probs)
    exact = vectorize(ArrayReader(probs), grid, (0.5, 0.5), simplify_tolerance=0.0,
                      clean_radius=0, block_size=64)
    simplified = vectorize(ArrayReader(probs), grid, (0.5, 0.5), block_size=64)
    assert len(exact) == len(simplified) == len(centres)
    for cy, cx, r in centres:
        centre = shapely.Point(-5000 + (cx + 0.5) * GSD, 3000 - (cy + 0.5) * GSD)
        (e,) = exact[exact.contains(centre)].itertuples()
        (s,) = simplified[simplified.contains(centre)].itertuples()
        pixels = int(((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).sum())
        assert e.area_m2 == pytest.approx(pixels * GSD**2)  # pixel-exact outline
        # simplification moves the outline by under a pixel: the area changes by less than a
        # one-pixel-wide band along the outline
        assert abs(s.area_m2 - pixels * GSD**2) < e.geometry.length * GSD
        assert s.area_m2 == pytest.approx(pixels * GSD**2, rel=0.05)


def test_min_area_and_thresholds_per_channel() -> None:
    probs = np.zeros((2, 60, 60), dtype=np.uint8)
    probs[0, 5:10, 5:10] = 200  # 25 px = 6.25 m² < 8 m²
    probs[0, 20:26, 20:26] = 200  # 36 px = 9 m²
    probs[1, 40:50, 40:50] = 100  # 0.39: below 0.5, above 0.3
    grid = grid_for(probs)
    out = vectorize(ArrayReader(probs), grid, (0.5, 0.5), clean_radius=0)
    assert list(out["channel"]) == ["new"] and out.iloc[0]["area_m2"] == pytest.approx(9.0)
    out = vectorize(ArrayReader(probs), grid, (0.5, 0.3), clean_radius=0, min_area_m2=1.0)
    assert sorted(out["channel"]) == ["demolished", "new", "new"]
    assert out.crs == grid.crs


def test_cleanup_removes_speckle_fills_gaps_and_keeps_edge_objects() -> None:
    mask = np.zeros((30, 30), dtype=bool)
    mask[3, 3] = True  # speckle
    mask[10:20, 10:20] = True
    mask[14, 10:20] = False  # a one-pixel crack
    mask[0:6, 24:30] = True  # touching the raster's corner
    cleaned = clean_mask(mask, 1)
    assert not cleaned[3, 3]
    assert cleaned[10:20, 10:20].all()
    assert cleaned[0:6, 24:30].all()


def test_small_holes_are_filled_large_ones_kept() -> None:
    probs = np.zeros((2, 80, 80), dtype=np.uint8)
    probs[0, 5:35, 5:35] = 220
    probs[0, 10:13, 10:13] = 0  # 9 px = 2.25 m²: filled
    probs[0, 15:30, 15:30] = 0  # 225 px = 56 m²: a courtyard, kept
    out = vectorize(ArrayReader(probs), grid_for(probs), (0.5, 0.5), clean_radius=0)
    assert len(out) == 1 and len(out.iloc[0].geometry.interiors) == 1
    assert out.iloc[0]["area_m2"] == pytest.approx((900 - 225) * GSD**2)


def test_nothing_detected_gives_an_empty_frame_with_the_columns() -> None:
    probs = np.zeros((2, 40, 40), dtype=np.uint8)
    out = vectorize(ArrayReader(probs), grid_for(probs), (0.5, 0.5))
    assert len(out) == 0
    assert {"channel", "area_m2", "score_max", "score_mean", "geometry"} <= set(out.columns)


def test_cleanup_on_the_mask_bounding_box_equals_the_whole_raster() -> None:
    rng = np.random.default_rng(5)
    mask = np.zeros((120, 140), dtype=bool)
    mask[40:70, 50:90] = rng.random((30, 40)) > 0.3
    mask[41, 51] = True
    from scipy import ndimage

    square = np.ones((3, 3), dtype=bool)
    opened = ndimage.binary_dilation(ndimage.binary_erosion(mask, square, border_value=1),
                                     square)
    whole = ndimage.binary_erosion(ndimage.binary_dilation(opened, square), square,
                                   border_value=1)
    np.testing.assert_array_equal(clean_mask(mask, 1), whole)


@pytest.mark.parametrize("radius", [1, 2])
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (61, 45)])
def test_clean_mask_equals_scipy_opening_then_closing(shape: tuple[int, int], radius: int
                                                      ) -> None:
    """The fast separable filters give exactly scipy's square opening and closing."""
    from scipy import ndimage

    square = np.ones((3, 3), bool)
    for seed in range(5):
        mask = np.random.default_rng(seed).random(shape) > 0.6
        opened = ndimage.binary_dilation(
            ndimage.binary_erosion(mask, square, iterations=radius, border_value=1), square,
            iterations=radius)
        want = ndimage.binary_erosion(ndimage.binary_dilation(opened, square, iterations=radius),
                                      square, iterations=radius, border_value=1)
        assert np.array_equal(clean_mask(mask, radius), want)
