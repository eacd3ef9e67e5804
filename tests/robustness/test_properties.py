"""Property-based tests (hypothesis) of issue #7 that the stage tests do not already hold.

Already elsewhere: tiling covers every pixel for any raster, tile and overlap size
(tests/inference/test_tiling.py). Here: blending weights sum to one for any plan (the stage
test checks four fixed plans), vectorising conserves area within a pixel's tolerance for any
mask (the stage test checks four discs), JGD2011 zone ↔ geographic conversions round-trip, and
地図XML's X (northing) / Y (easting) axes land where they should for any parcel.
"""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pyproj import CRS as ProjCRS
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.windows import Window

from idou.geo.changes.vectorize import vectorize
from idou.geo.raster.grid import Grid
from idou.geo.vector.mojxml import parse_mojxml_bytes, zone_to_epsg
from idou.inference.blending import SCALE, BlendWeights, accumulate
from idou.inference.tiling import TilePlan

from ..mojxml_builder import moj_xml


@st.composite
def plans(draw: st.DrawFn) -> TilePlan:
    """Any plan a valid model contract allows (overlap below half the tile)."""
    size = draw(st.integers(4, 96))
    overlap = draw(st.integers(0, size // 2 - 1))
    return TilePlan.for_grid(draw(st.integers(1, 260)), draw(st.integers(1, 260)), size,
                             overlap)


@settings(max_examples=150, deadline=None)
@given(plans())
def test_blending_weights_sum_to_one_for_any_plan(plan: TilePlan) -> None:
    blend = BlendWeights(plan)
    size = plan.tile_size
    total = np.zeros((max(plan.height, size), max(plan.width, size)))
    for tile in plan.tiles():
        weights = blend.tile_weights(tile.row_index, tile.col_index)
        assert weights.min() >= 0.0
        total[tile.row:tile.row + size, tile.col:tile.col + size] += weights
    np.testing.assert_allclose(total[:plan.height, :plan.width], 1.0, rtol=0, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(plans(), st.floats(0.0, 1.0))
def test_blending_a_constant_gives_the_constant(plan: TilePlan, p: float) -> None:
    """The fixed-point accumulation of a constant tile output is that constant (± rounding)."""
    blend = BlendWeights(plan)
    acc = np.zeros((2, plan.height, plan.width), dtype=np.int32)
    probs = np.full((2, plan.tile_size, plan.tile_size), p, dtype=np.float32)
    tiles = list(plan.tiles())
    for tile in tiles:
        accumulate(acc, probs, blend.fixed_point(tile.row_index, tile.col_index), tile.row,
                   tile.col)
    # each tile adds at most 0.5 of rounding per pixel
    np.testing.assert_allclose(acc / SCALE, p, rtol=0, atol=1e-5 + 0.5 * len(tiles) / SCALE)


class _Reader:
    def __init__(self, probs: np.ndarray) -> None:
        self.probs = probs

    def read(self, window: Window) -> np.ndarray:
        r0, c0 = int(window.row_off), int(window.col_off)
        return self.probs[:, r0:r0 + int(window.height), c0:c0 + int(window.width)].copy()


GSD = 0.25


def _grid(h: int, w: int) -> Grid:
    return Grid(CRS.from_epsg(6677), Affine(GSD, 0, -5000.0, 0, -GSD, 3000.0), w, h)


masks = arrays(np.bool_, st.tuples(st.integers(1, 40), st.integers(1, 40)))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(masks, st.sampled_from([16, 24, 4096]))
def test_vectorising_conserves_area_exactly_without_simplification(mask: np.ndarray,
                                                                   block: int) -> None:
    """Pixel-exact outlines (no clean-up, no simplification, no hole filling, no minimum):
    the polygons cover exactly the change pixels, whatever the blocks."""
    probs = np.zeros((2,) + mask.shape, dtype=np.uint8)
    probs[0][mask] = 200
    frame = vectorize(_Reader(probs), _grid(*mask.shape), (0.5, 0.5), min_area_m2=0.0,
                      simplify_tolerance=0.0, clean_radius=0, hole_area_m2=0.0,
                      block_size=block)
    assert frame["area_m2"].sum() == pytest.approx(mask.sum() * GSD**2)
    assert shapely.union_all(frame.geometry.values).area == pytest.approx(mask.sum() * GSD**2)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(3, 20),
                          st.integers(3, 20)), min_size=1, max_size=5))
def test_vectorising_with_simplification_stays_within_a_pixel(
        rects: list[tuple[int, int, int, int]]) -> None:
    """With the default one-pixel simplification each object's area moves by less than a
    one-pixel band along its outline."""
    probs = np.zeros((2, 72, 72), dtype=np.uint8)
    for r, c, h, w in rects:
        probs[0, r:r + h, c:c + w] = 220
    grid = _grid(72, 72)
    exact = vectorize(_Reader(probs), grid, (0.5, 0.5), min_area_m2=0.0, simplify_tolerance=0.0,
                      clean_radius=0, hole_area_m2=0.0)
    simple = vectorize(_Reader(probs), grid, (0.5, 0.5), min_area_m2=0.0, clean_radius=0,
                       hole_area_m2=0.0)
    assert len(exact) == len(simple)
    for e in exact.itertuples():
        matches = simple[simple.intersects(e.geometry.representative_point())]
        assert len(matches) == 1
        assert abs(matches.iloc[0]["area_m2"] - e.area_m2) <= e.geometry.length * GSD


# --- CRS -----------------------------------------------------------------------------------

ZONES = list(range(6669, 6688))  # JGD2011 plane rectangular zones I..XIX


@st.composite
def zone_points(draw: st.DrawFn) -> tuple[int, float, float]:
    """A zone and a (lon, lat) inside its area of use."""
    epsg = draw(st.sampled_from(ZONES))
    area = ProjCRS.from_epsg(epsg).area_of_use
    assert area is not None
    lon = draw(st.floats(area.west, area.east))
    lat = draw(st.floats(area.south, area.north))
    return epsg, lon, lat


_transformers: dict[tuple[int, int], Transformer] = {}


def _transformer(a: int, b: int) -> Transformer:
    if (a, b) not in _transformers:
        _transformers[(a, b)] = Transformer.from_crs(a, b, always_xy=True)
    return _transformers[(a, b)]


@settings(max_examples=200, deadline=None)
@given(zone_points())
def test_jgd2011_zone_and_geographic_round_trip(point: tuple[int, float, float]) -> None:
    epsg, lon, lat = point
    x, y = _transformer(6668, epsg).transform(lon, lat)
    assert np.isfinite([x, y]).all()
    lon2, lat2 = _transformer(epsg, 6668).transform(x, y)
    # 1e-9 degree is about 0.1 mm
    assert lon2 == pytest.approx(lon, abs=1e-9) and lat2 == pytest.approx(lat, abs=1e-9)
    x2, y2 = _transformer(6668, epsg).transform(lon2, lat2)
    assert x2 == pytest.approx(x, abs=1e-4) and y2 == pytest.approx(y, abs=1e-4)


@settings(max_examples=60, deadline=None)
@given(zone_points(), st.sampled_from(ZONES))
def test_neighbouring_zone_conversions_round_trip(point: tuple[int, float, float],
                                                  other: int) -> None:
    """zone A → zone B → zone A returns to the same point (within a millimetre)."""
    epsg, lon, lat = point
    x, y = _transformer(6668, epsg).transform(lon, lat)
    u, v = _transformer(epsg, other).transform(x, y)
    x2, y2 = _transformer(other, epsg).transform(u, v)
    assert x2 == pytest.approx(x, abs=1e-3) and y2 == pytest.approx(y, abs=1e-3)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 19), st.floats(-150_000, 150_000), st.floats(-150_000, 150_000),
       st.floats(1.0, 500.0), st.floats(1.0, 500.0), st.booleans())
def test_mojxml_x_is_northing_and_y_easting(zone: int, north: float, east: float, dx: float,
                                            dy: float, fullwidth: bool) -> None:
    """A parcel given as 地図XML X (northing) / Y (easting) corners becomes the polygon with
    easting as x and northing as y, in the zone's EPSG code."""
    points = {"P1": (north, east), "P2": (north, east + dx), "P3": (north + dy, east + dx),
              "P4": (north + dy, east)}
    digits = str(zone).translate(str.maketrans("0123456789", "０１２３４５６７８９")) \
        if fullwidth else str(zone)
    moj = parse_mojxml_bytes(moj_xml(points, zone=f"公共座標{digits}系").encode(), "map.xml")
    assert moj.epsg == 6668 + zone == zone_to_epsg(f"公共座標{zone}系", "map.xml")
    [parcel] = moj.parcels
    assert parcel.geometry.bounds == pytest.approx((east, north, east + dx, north + dy))
    assert parcel.geometry.area == pytest.approx(dx * dy, rel=1e-9)

