"""The coverage layer: processed and nodata areas from the windows the engine wrote."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from idou.geo.raster.grid import Grid
from idou.inference.coverage import CoverageSink


def test_coverage_marks_processed_and_nodata_cells() -> None:
    grid = Grid(CRS.from_epsg(6677), Affine(0.5, 0, 100.0, 0, -0.5, 200.0), 100, 64)
    sink = CoverageSink(grid, cell=16)
    probs = np.zeros((2, 64, 50), dtype=np.uint8)
    valid = np.ones((64, 50), dtype=bool)
    valid[:, 40:] = False  # columns 40..49 of the left window hold no data
    sink.write(Window(0, 0, 50, 64), probs, valid)
    sink.write(Window(50, 0, 50, 64), probs, np.zeros((64, 50), dtype=bool))
    frame = sink.frame()
    areas = dict(zip(frame["status"], frame.geometry.area, strict=True))
    # cells of 16 px: columns 0..47 hold data (the cell 32..47 has some), the rest none
    assert areas["processed"] == pytest.approx(48 * 64 * 0.25)
    assert areas["nodata"] == pytest.approx((100 - 48) * 64 * 0.25)
    assert frame.crs == grid.crs
