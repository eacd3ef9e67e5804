"""Grid: pixel size, bounds and window helpers."""

from __future__ import annotations

import pytest
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from idou.geo.raster.grid import Grid

CRS_IX = CRS.from_epsg(6677)


def _grid(gsd: float = 0.2, width: int = 100, height: int = 50) -> Grid:
    return Grid(CRS_IX, Affine(gsd, 0, 1000.0, 0, -gsd, 2000.0), width, height)


def test_gsd_bounds_and_shape() -> None:
    g = _grid()
    assert g.gsd == pytest.approx(0.2)
    assert g.res == pytest.approx((0.2, 0.2))
    assert g.bounds == pytest.approx((1000.0, 1990.0, 1020.0, 2000.0))
    assert g.shape == (50, 100)
    assert g.is_north_up


def test_window_bounds_and_transform_agree() -> None:
    g = _grid()
    w = Window(10, 5, 20, 10)
    assert g.window_bounds(w) == pytest.approx((1002.0, 1997.0, 1006.0, 1999.0))
    t = g.window_transform(w)
    assert (t.c, t.f) == pytest.approx((1002.0, 1999.0))


def test_window_from_bounds_covers_partial_pixels() -> None:
    g = _grid()
    w = g.window_from_bounds((1002.05, 1997.0, 1006.0, 1998.95))
    assert (w.col_off, w.row_off, w.width, w.height) == (10, 5, 20, 10)


def test_clip_and_beyond_the_edge() -> None:
    g = _grid()
    assert g.clip(Window(-10, -10, 20, 20)) == Window(0, 0, 10, 10)
    assert g.clip(Window(100, 0, 10, 10)) is None


def test_lattice_offset_only_for_the_same_lattice() -> None:
    g = _grid()
    sub = Grid(CRS_IX, Affine(0.2, 0, 1002.0, 0, -0.2, 1999.0), 10, 10)
    assert sub.lattice_offset(g) == (10, 5)
    half = Grid(CRS_IX, Affine(0.2, 0, 1002.1, 0, -0.2, 1999.0), 10, 10)
    assert half.lattice_offset(g) is None
    coarse = Grid(CRS_IX, Affine(0.4, 0, 1002.0, 0, -0.4, 1999.0), 10, 10)
    assert coarse.lattice_offset(g) is None
    other = Grid(CRS.from_epsg(6676), sub.transform, 10, 10)
    assert other.lattice_offset(g) is None
