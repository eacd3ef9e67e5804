"""Coverage: where a run had data in both flights (processed) and where it had not (nodata).

A sink for the engine: it records, per cell of ``cell`` x ``cell`` pixels, whether any pixel
was valid, and turns that coarse mask into polygons for the output's ``coverage`` layer.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import rasterio.features
import shapely
from rasterio.windows import Window
from shapely.geometry import shape

from idou.geo.raster.grid import Grid

DEFAULT_CELL = 16


class CoverageSink:
    """Collects a coarse validity mask from the windows the engine writes."""

    def __init__(self, grid: Grid, cell: int = DEFAULT_CELL) -> None:
        self.grid = grid
        self.cell = int(cell)
        self.valid = np.zeros((-(-grid.height // cell), -(-grid.width // cell)), dtype=bool)

    def write(self, window: Window, probs: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Mark the cells of ``window`` holding a valid pixel (all when ``valid`` is None)."""
        c = self.cell
        r0, c0 = int(window.row_off), int(window.col_off)
        h, w = int(window.height), int(window.width)
        if valid is None:
            valid = np.ones((h, w), dtype=bool)
        cr0, cc0 = r0 // c, c0 // c
        cr1, cc1 = -(-(r0 + h) // c), -(-(c0 + w) // c)
        padded = np.zeros(((cr1 - cr0) * c, (cc1 - cc0) * c), dtype=bool)
        padded[r0 - cr0 * c:r0 - cr0 * c + h, c0 - cc0 * c:c0 - cc0 * c + w] = valid
        cells = padded.reshape(cr1 - cr0, c, cc1 - cc0, c).any(axis=(1, 3))
        self.valid[cr0:cr1, cc0:cc1] |= cells

    def frame(self) -> gpd.GeoDataFrame:
        """Polygons with ``status`` 'processed' or 'nodata', clipped to the grid, in its CRS."""
        t = self.grid.transform @ self.grid.transform.scale(self.cell)
        values = self.valid.astype(np.uint8)
        footprint = self.grid.footprint()
        rows: list[str] = []
        geoms = []
        for geom, value in rasterio.features.shapes(values, transform=t, connectivity=4):
            part = shapely.intersection(shape(geom), footprint)
            if part.is_empty:
                continue
            rows.append("processed" if value else "nodata")
            geoms.append(part)
        frame = gpd.GeoDataFrame({"status": rows}, geometry=geoms, crs=self.grid.crs)
        return frame.dissolve(by="status", as_index=False) if len(frame) else frame

    @property
    def valid_fraction(self) -> float:
        """Share of cells with data (an approximation of the processed share of the grid)."""
        return float(self.valid.mean()) if self.valid.size else 0.0
