"""The tile plan: a global lattice of model-sized tiles over an aligned grid.

Tiles have the model's size and overlap; their origins sit on a lattice of stride
``tile_size - tile_overlap`` that starts at the grid's top-left pixel, and the last tile of
each row and column is shifted inward so it ends exactly on the grid's last row or column.
A grid smaller than one tile gets a single tile at the origin that reaches past the edge
(the reader pads it as nodata). Because the lattice depends only on the grid's size and the
model, the tiles that touch any window are the same whichever window asks, which is what
makes block-by-block inference equal to one pass over the whole grid.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from rasterio.windows import Window


def axis_offsets(length: int, size: int, overlap: int) -> np.ndarray:
    """Tile origins along one axis of ``length`` pixels.

    Args:
        length: pixels along the axis (>= 1).
        size: tile side in pixels.
        overlap: pixels shared by neighbouring tiles (0 <= overlap < size).

    Returns:
        Increasing int64 origins: ``0, stride, 2*stride, ...`` with the last one moved to
        ``length - size`` so the tiles end on the last pixel; ``[0]`` when ``length <= size``.
    """
    if length < 1 or size < 1 or not 0 <= overlap < size:
        raise ValueError(f"bad tiling: length={length}, size={size}, overlap={overlap}")
    if length <= size:
        return np.zeros(1, dtype=np.int64)
    stride = size - overlap
    count = -(-(length - size) // stride) + 1
    offsets = np.arange(count, dtype=np.int64) * stride
    offsets[-1] = length - size
    return offsets


def _index_range(offsets: np.ndarray, size: int, start: int, stop: int) -> tuple[int, int]:
    """Indices ``[i0, i1)`` of tiles along an axis whose span meets ``[start, stop)``."""
    i0 = int(np.searchsorted(offsets + size, start, side="right"))
    i1 = int(np.searchsorted(offsets, stop, side="left"))
    return i0, max(i0, i1)


@dataclass(frozen=True)
class Tile:
    """One lattice tile: its lattice indices and its pixel origin in the grid."""

    row_index: int
    col_index: int
    row: int
    col: int
    size: int

    @property
    def window(self) -> Window:
        """The tile's window in grid pixels (may reach past the grid when the grid is small)."""
        return Window(self.col, self.row, self.size, self.size)


@dataclass(frozen=True)
class TilePlan:
    """The global tile lattice of a ``height`` x ``width`` grid."""

    height: int
    width: int
    tile_size: int
    overlap: int
    row_offsets: np.ndarray = field(init=False, repr=False, compare=False)
    col_offsets: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "row_offsets",
                           axis_offsets(self.height, self.tile_size, self.overlap))
        object.__setattr__(self, "col_offsets",
                           axis_offsets(self.width, self.tile_size, self.overlap))

    @classmethod
    def for_grid(cls, height: int, width: int, tile_size: int, overlap: int) -> TilePlan:
        """The plan for a grid of the given size and a model's tile size and overlap."""
        return cls(int(height), int(width), int(tile_size), int(overlap))

    @property
    def stride(self) -> int:
        """Distance between neighbouring tile origins (before the last, shifted tile)."""
        return self.tile_size - self.overlap

    @property
    def shape(self) -> tuple[int, int]:
        """Number of tiles as (rows, columns)."""
        return (len(self.row_offsets), len(self.col_offsets))

    def __len__(self) -> int:
        rows, cols = self.shape
        return rows * cols

    def tile(self, row_index: int, col_index: int) -> Tile:
        """The tile at lattice position (``row_index``, ``col_index``)."""
        return Tile(row_index, col_index, int(self.row_offsets[row_index]),
                    int(self.col_offsets[col_index]), self.tile_size)

    def tiles(self) -> Iterator[Tile]:
        """Every tile, row by row."""
        rows, cols = self.shape
        for i in range(rows):
            for j in range(cols):
                yield self.tile(i, j)

    def index_ranges(self, window: Window) -> tuple[tuple[int, int], tuple[int, int]]:
        """Lattice index ranges ``((i0, i1), (j0, j1))`` of the tiles meeting ``window``."""
        r0, c0 = int(window.row_off), int(window.col_off)
        r1, c1 = r0 + int(window.height), c0 + int(window.width)
        return (_index_range(self.row_offsets, self.tile_size, r0, r1),
                _index_range(self.col_offsets, self.tile_size, c0, c1))

    def tiles_for_window(self, window: Window) -> list[Tile]:
        """The lattice tiles that intersect ``window``, row by row (none for an empty window)."""
        (i0, i1), (j0, j1) = self.index_ranges(window)
        return [self.tile(i, j) for i in range(i0, i1) for j in range(j0, j1)]

    def footprint(self, tiles: list[Tile]) -> Window:
        """The smallest window holding every tile of ``tiles``."""
        if not tiles:
            return Window(0, 0, 0, 0)
        r0 = min(t.row for t in tiles)
        c0 = min(t.col for t in tiles)
        r1 = max(t.row for t in tiles) + self.tile_size
        c1 = max(t.col for t in tiles) + self.tile_size
        return Window(c0, r0, c1 - c0, r1 - r0)

    def span(self, rows: tuple[int, int], cols: tuple[int, int]) -> Window:
        """The window covered by the tiles with lattice indices in ``rows`` x ``cols``."""
        (i0, i1), (j0, j1) = rows, cols
        r0, c0 = int(self.row_offsets[i0]), int(self.col_offsets[j0])
        r1 = int(self.row_offsets[i1 - 1]) + self.tile_size
        c1 = int(self.col_offsets[j1 - 1]) + self.tile_size
        return Window(c0, r0, c1 - c0, r1 - r0)
