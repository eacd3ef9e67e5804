"""A raster grid: CRS, affine transform and size, with window and bounds helpers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window
from shapely.geometry import Polygon


@dataclass(frozen=True)
class Grid:
    """Where the pixels of a raster lie: CRS, transform (pixel → CRS) and size in pixels."""

    crs: CRS
    transform: Affine
    width: int
    height: int

    @classmethod
    def of(cls, dataset: Any) -> Grid:
        """The grid of an open rasterio dataset (or anything with crs/transform/width/height)."""
        return cls(dataset.crs, dataset.transform, int(dataset.width), int(dataset.height))

    @property
    def gsd(self) -> float:
        """Ground sampling distance: the side of a (square-equivalent) pixel in CRS units."""
        return math.sqrt(abs(self.transform.determinant))

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) in CRS units, both positive."""
        t = self.transform
        return (math.hypot(t.a, t.d), math.hypot(t.b, t.e))

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width)."""
        return (self.height, self.width)

    @property
    def is_north_up(self) -> bool:
        """True when the transform has no rotation and rows run north to south."""
        t = self.transform
        return t.b == 0 and t.d == 0 and t.a > 0 and t.e < 0

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) of the whole grid (the envelope if rotated)."""
        return self.window_bounds(self.full_window)

    @property
    def full_window(self) -> Window:
        """The window covering the whole grid."""
        return Window(0, 0, self.width, self.height)

    def footprint(self) -> Polygon:
        """The grid's outline as a polygon in its CRS (exact for rotated grids too)."""
        t = self.transform
        corners = [(0, 0), (self.width, 0), (self.width, self.height), (0, self.height)]
        return Polygon([t @ c for c in corners])

    def window_bounds(self, window: Window) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) of a window of this grid (it may extend past the edge)."""
        t = self.transform
        c0, r0 = window.col_off, window.row_off
        c1, r1 = c0 + window.width, r0 + window.height
        xs, ys = zip(*(t @ (c, r) for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1))),
                     strict=True)
        return (min(xs), min(ys), max(xs), max(ys))

    def window_transform(self, window: Window) -> Affine:
        """The transform of a window's pixels (its top-left corner at the window's origin)."""
        return self.transform @ Affine.translation(window.col_off, window.row_off)

    def window_from_bounds(self, bounds: tuple[float, float, float, float]) -> Window:
        """The smallest whole-pixel window covering ``bounds`` (not clipped to the grid)."""
        inv = ~self.transform
        left, bottom, right, top = bounds
        cols, rows = zip(*(inv @ (x, y) for x, y in ((left, top), (right, top), (right, bottom),
                                                      (left, bottom))), strict=True)
        eps = 1e-6
        c0, r0 = math.floor(min(cols) + eps), math.floor(min(rows) + eps)
        c1, r1 = math.ceil(max(cols) - eps), math.ceil(max(rows) - eps)
        return Window(c0, r0, max(c1 - c0, 0), max(r1 - r0, 0))

    def clip(self, window: Window) -> Window | None:
        """The part of ``window`` inside the grid, or None when they do not intersect."""
        c0 = max(int(window.col_off), 0)
        r0 = max(int(window.row_off), 0)
        c1 = min(int(window.col_off + window.width), self.width)
        r1 = min(int(window.row_off + window.height), self.height)
        if c1 <= c0 or r1 <= r0:
            return None
        return Window(c0, r0, c1 - c0, r1 - r0)

    def lattice_offset(self, other: Grid, tol: float = 1e-6) -> tuple[int, int] | None:
        """(col, row) of this grid's origin in ``other``'s pixels when both share one lattice.

        Same CRS, same pixel size and rotation, and an origin that falls on a whole pixel of
        ``other``: then a window of this grid is ``other``'s window shifted by the offset and can
        be read without resampling. None otherwise.
        """
        if self.crs != other.crs:
            return None
        a, b = self.transform, other.transform
        scale = max(abs(b.a), abs(b.e), 1e-12)
        if any(abs(x - y) > tol * scale for x, y in ((a.a, b.a), (a.b, b.b), (a.d, b.d),
                                                     (a.e, b.e))):
            return None
        col, row = ~b @ (a.c, a.f)
        icol, irow = round(col), round(row)
        if abs(col - icol) > 1e-3 or abs(row - irow) > 1e-3:
            return None
        return (icol, irow)
