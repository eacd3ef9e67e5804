"""Smooth blending of overlapping tile predictions.

Each tile's prediction is weighted by a separable window that ramps up (a raised cosine) over
the overlap band at its edges, with a small floor so a pixel only one tile covers still counts.
The weights are normalised by what every lattice tile contributes at that pixel, so at each
pixel the weights of the tiles covering it sum to one, and the blend is a plain sum. Because
the lattice is separable, the normaliser is a product of one row and one column profile, known
before any tile runs.

Sums are accumulated as integers in fixed point (``SCALE``): integer addition does not depend on
order, so a pixel's value is bit-identical whichever window or block computed it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from idou.geo.raster.probability_cog import to_uint8 as to_uint8  # the one uint8 scale, re-exported
from idou.inference.tiling import TilePlan

SCALE = 1 << 20
"""Fixed-point scale of blended sums: a probability of 1 is ``SCALE``."""

DEFAULT_FLOOR = 0.01


def ramp(size: int, overlap: int, floor: float = DEFAULT_FLOOR) -> np.ndarray:
    """A 1-D window of ``size`` values: raised cosine over ``overlap`` at each end, 1 inside.

    Args:
        size: tile side in pixels.
        overlap: width of the ramp at each end (0 gives a flat window).
        floor: the smallest weight, so edge pixels covered by one tile keep a weight.

    Returns:
        float64 weights in ``[floor, 1]``, symmetric.
    """
    weights = np.ones(size, dtype=np.float64)
    if overlap > 0:
        distance = np.minimum(np.arange(size), np.arange(size)[::-1]).astype(np.float64)
        inside = distance < overlap
        weights[inside] = 0.5 - 0.5 * np.cos(np.pi * (distance[inside] + 0.5) / overlap)
    return np.maximum(weights, floor)


@lru_cache(maxsize=64)
def _axis_weights(offsets: tuple[int, ...], size: int, overlap: int, floor: float
                  ) -> tuple[np.ndarray, ...]:
    """Normalised 1-D weights of every tile along an axis, given the tile origins."""
    base = ramp(size, overlap, floor)
    starts = np.asarray(offsets, dtype=np.int64)
    out = []
    for k, start in enumerate(starts):
        total = base.copy()
        lo = int(np.searchsorted(starts, start - size, side="right"))
        hi = int(np.searchsorted(starts, start + size, side="left"))
        for n in range(lo, hi):
            if n == k:
                continue
            shift = int(starts[n] - start)
            a0, a1 = max(0, shift), min(size, size + shift)
            total[a0:a1] += base[a0 - shift:a1 - shift]
        out.append(base / total)
    return tuple(out)


class BlendWeights:
    """Precomputed, normalised blending weights for the tiles of one plan."""

    def __init__(self, plan: TilePlan, floor: float = DEFAULT_FLOOR) -> None:
        self.plan = plan
        size, overlap = plan.tile_size, plan.overlap
        self._rows = _axis_weights(tuple(int(v) for v in plan.row_offsets), size, overlap, floor)
        self._cols = _axis_weights(tuple(int(v) for v in plan.col_offsets), size, overlap, floor)

    def tile_weights(self, row_index: int, col_index: int) -> np.ndarray:
        """float64 ``(size, size)`` weights of one tile; over all tiles they sum to one."""
        return np.outer(self._rows[row_index], self._cols[col_index])

    def fixed_point(self, row_index: int, col_index: int) -> np.ndarray:
        """float32 ``(size, size)`` weights times ``SCALE``, ready to multiply probabilities."""
        return (self.tile_weights(row_index, col_index) * SCALE).astype(np.float32)


def accumulate(acc: np.ndarray, probs: np.ndarray, weights_fixed: np.ndarray,
               row: int, col: int) -> None:
    """Add one tile's weighted probabilities into an int32 accumulator, in place.

    Args:
        acc: int32 ``(channels, H, W)`` accumulator whose pixel (0, 0) is at some origin.
        probs: float32 ``(channels, size, size)`` tile probabilities.
        weights_fixed: ``BlendWeights.fixed_point`` of the tile.
        row: tile origin row relative to the accumulator's origin.
        col: tile origin column relative to the accumulator's origin.
    """
    size = weights_fixed.shape[0]
    height, width = acc.shape[1:]
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + size, height), min(col + size, width)
    if r1 <= r0 or c1 <= c0:
        return
    tr, tc = r0 - row, c0 - col
    part = probs[:, tr:tr + r1 - r0, tc:tc + c1 - c0] * weights_fixed[tr:tr + r1 - r0,
                                                                       tc:tc + c1 - c0]
    acc[:, r0:r1, c0:c1] += np.rint(part).astype(np.int32)


def to_probabilities(acc: np.ndarray) -> np.ndarray:
    """Fixed-point sums to float32 probabilities in [0, 1] (exact: sums stay below 2**24)."""
    return np.clip(acc.astype(np.float32) / np.float32(SCALE), 0.0, 1.0)


def sums_to_uint8(acc: np.ndarray) -> np.ndarray:
    """Fixed-point sums to uint8 0..255 in integer arithmetic, reusing ``acc`` (overwritten).

    Equals ``to_uint8(to_probabilities(acc))`` bit for bit, without float temporaries.
    """
    np.clip(acc, 0, SCALE, out=acc)
    acc *= 255
    acc += SCALE // 2
    acc >>= 20
    return acc.astype(np.uint8)
