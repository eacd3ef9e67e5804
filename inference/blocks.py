"""Work units of a batch run: blocks of the aligned grid, each with the model's overlap as halo.

A block is the part of the probability raster one task writes (its *core*). To compute it the
engine runs every tile of the grid's global tile lattice that touches the core, so a block's
probabilities equal those of a whole-grid pass; the halo is the overlap band those tiles reach
beyond the core. Block sides are snapped to a multiple of the lattice stride (tile size minus
overlap) so neighbouring blocks share as few tiles as possible.
"""

from __future__ import annotations

from dataclasses import dataclass

from rasterio.windows import Window


@dataclass(frozen=True, order=True)
class Block:
    """One work unit: a window of the grid (the core) and the halo the engine reads around it."""

    row: int
    col: int
    row_off: int
    col_off: int
    height: int
    width: int
    halo: int = 0

    @property
    def id(self) -> str:
        """A stable name, also the block file's stem (``r0003_c0012``)."""
        return f"r{self.row:04d}_c{self.col:04d}"

    @property
    def window(self) -> Window:
        """The core window, in grid pixels."""
        return Window(self.col_off, self.row_off, self.width, self.height)

    @property
    def pixels(self) -> int:
        """Pixels in the core."""
        return self.width * self.height

    def halo_window(self, grid_width: int, grid_height: int) -> Window:
        """The core grown by the halo on every side, clipped to the grid."""
        c0 = max(0, self.col_off - self.halo)
        r0 = max(0, self.row_off - self.halo)
        c1 = min(grid_width, self.col_off + self.width + self.halo)
        r1 = min(grid_height, self.row_off + self.height + self.halo)
        return Window(c0, r0, c1 - c0, r1 - r0)


def snap_block_size(block_size: int, stride: int) -> int:
    """The nearest multiple of ``stride`` to ``block_size`` (at least one stride)."""
    if stride <= 0:
        raise ValueError("stride must be positive")
    return max(stride, round(block_size / stride) * stride)


def plan_blocks(width: int, height: int, block_size: int, halo: int = 0,
                stride: int = 1) -> list[Block]:
    """Cover a ``width`` x ``height`` grid with blocks, row by row, the last ones cut to fit.

    Args:
        width: grid width in pixels.
        height: grid height in pixels.
        block_size: wanted block side in pixels; snapped to a multiple of ``stride``.
        halo: the model's tile overlap, recorded on each block.
        stride: the tile lattice's stride (tile size minus overlap).

    Returns:
        Blocks that tile the grid exactly: no gap, no overlap between cores.
    """
    if width <= 0 or height <= 0:
        raise ValueError("the grid is empty")
    size = snap_block_size(block_size, stride)
    blocks = []
    for row, r0 in enumerate(range(0, height, size)):
        for col, c0 in enumerate(range(0, width, size)):
            blocks.append(Block(row=row, col=col, row_off=r0, col_off=c0,
                                height=min(size, height - r0), width=min(size, width - c0),
                                halo=halo))
    return blocks
