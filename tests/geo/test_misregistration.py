"""Phase correlation recovers known integer and sub-pixel shifts."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS
from scipy import ndimage

from idou.geo.raster.grid import Grid
from idou.geo.raster.misregistration import phase_correlation, sample_windows

from .conftest import texture


@pytest.mark.parametrize(("dx", "dy"), [(0.0, 0.0), (4.0, -7.0), (-1.5, 0.5), (0.3, 2.7)])
def test_phase_correlation_recovers_the_shift(dx: float, dy: float) -> None:
    base = texture(600, 600, bands=1, seed=7, sigma=3.0)[0].astype(np.float64)
    moved = ndimage.shift(base, (dy, dx), order=3, mode="wrap")
    ex, ey, peak = phase_correlation(base[44:556, 44:556], moved[44:556, 44:556])
    assert abs(ex - dx) < 0.3 and abs(ey - dy) < 0.3
    assert peak > 0.1


def test_unrelated_images_peak_lower_than_a_noisy_match() -> None:
    a = texture(256, 256, bands=1, seed=1)[0].astype(np.float64)
    b = texture(256, 256, bands=1, seed=2)[0]
    noisy = a + np.random.default_rng(0).normal(0, 15, a.shape)
    *_, unrelated = phase_correlation(a, b)
    *_, related = phase_correlation(a, noisy)
    assert unrelated < 0.5 * related


def test_sample_windows_lie_inside_and_start_at_the_centre() -> None:
    grid = Grid(CRS.from_epsg(6677), Affine(0.2, 0, 0, 0, -0.2, 0), 3000, 2000)
    wins = sample_windows(grid, size=512)
    assert 4 <= len(wins) <= 25
    for i, w in enumerate(wins):  # disjoint
        for v in wins[i + 1:]:
            assert (abs(w.col_off - v.col_off) >= 512 or abs(w.row_off - v.row_off) >= 512)
    assert all(w.col_off >= 0 and w.col_off + w.width <= 3000 and w.row_off + w.height <= 2000
               for w in wins)
    first = wins[0]
    assert abs(first.col_off + 256 - 1500) <= 1 and abs(first.row_off + 256 - 1000) <= 1
    tiny = Grid(grid.crs, grid.transform, 40, 40)
    assert sample_windows(tiny) == []
