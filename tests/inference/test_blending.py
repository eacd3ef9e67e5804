"""Blending weights sum to one everywhere and fall smoothly towards tile edges."""

from __future__ import annotations

import numpy as np
import pytest

from idou.inference.blending import (
    SCALE,
    BlendWeights,
    accumulate,
    ramp,
    sums_to_uint8,
    to_probabilities,
    to_uint8,
)
from idou.inference.tiling import TilePlan


@pytest.mark.parametrize("shape,size,overlap", [((300, 200), 64, 16), ((64, 64), 64, 16),
                                                ((50, 130), 64, 0), ((257, 97), 32, 15)])
def test_weights_sum_to_one_everywhere(shape: tuple[int, int], size: int, overlap: int) -> None:
    plan = TilePlan.for_grid(*shape, size, overlap)
    blend = BlendWeights(plan)
    total = np.zeros((max(shape[0], size), max(shape[1], size)))
    for tile in plan.tiles():
        total[tile.row:tile.row + size, tile.col:tile.col + size] += blend.tile_weights(
            tile.row_index, tile.col_index)
    np.testing.assert_allclose(total[:shape[0], :shape[1]], 1.0, rtol=0, atol=1e-12)


def test_ramp_is_smooth_and_floored() -> None:
    w = ramp(64, 16, floor=0.01)
    assert w.min() == pytest.approx(0.01, abs=0.01) and w.max() == 1.0
    assert np.all(np.diff(w[:16]) > 0) and np.all(w[16:48] == 1.0)
    np.testing.assert_array_equal(w, w[::-1])


def test_constant_probability_blends_to_itself() -> None:
    plan = TilePlan.for_grid(150, 170, 64, 16)
    blend = BlendWeights(plan)
    acc = np.zeros((2, 150, 170), dtype=np.int32)
    probs = np.full((2, 64, 64), 0.7, dtype=np.float32)
    for tile in plan.tiles():
        accumulate(acc, probs, blend.fixed_point(tile.row_index, tile.col_index),
                   tile.row, tile.col)
    np.testing.assert_allclose(acc / SCALE, 0.7, atol=1e-5)


def test_integer_and_float_quantisation_agree_bit_for_bit() -> None:
    # every rounding boundary k/255 (+-2 units), plus values just above one (rounding of sums)
    edges = np.rint(np.arange(256) / 255 * SCALE - SCALE / 510).astype(np.int64)
    sums = np.concatenate([edges + d for d in (-2, -1, 0, 1, 2)] + [np.arange(SCALE, SCALE + 9)])
    sums = np.clip(sums, 0, None).astype(np.int32).reshape(1, 1, -1)
    np.testing.assert_array_equal(sums_to_uint8(sums.copy()), to_uint8(to_probabilities(sums)))
