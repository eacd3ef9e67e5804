"""The tile plan covers every pixel, stays on one global lattice, and answers window queries."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.windows import Window

from idou.inference.tiling import TilePlan, axis_offsets


@st.composite
def plans(draw: st.DrawFn) -> TilePlan:
    size = draw(st.integers(2, 80))
    overlap = draw(st.integers(0, size - 1))
    return TilePlan.for_grid(draw(st.integers(1, 300)), draw(st.integers(1, 300)), size, overlap)


@settings(max_examples=300, deadline=None)
@given(plans())
def test_plan_covers_every_pixel_and_stays_in_bounds(plan: TilePlan) -> None:
    count = np.zeros((plan.height, plan.width), dtype=np.int32)
    for tile in plan.tiles():
        if plan.height >= plan.tile_size:
            assert 0 <= tile.row <= plan.height - plan.tile_size
        else:  # a grid smaller than a tile: one tile at the origin, padded
            assert tile.row == 0
        if plan.width >= plan.tile_size:
            assert 0 <= tile.col <= plan.width - plan.tile_size
        else:
            assert tile.col == 0
        count[tile.row:tile.row + tile.size, tile.col:tile.col + tile.size] += 1
    assert count.min() >= 1
    # neighbours overlap by at least the model's overlap, and never by more than needed
    for offsets, length in ((plan.row_offsets, plan.height), (plan.col_offsets, plan.width)):
        steps = np.diff(offsets)
        assert np.all(steps >= 1)
        assert np.all(steps <= plan.stride)
        if length > plan.tile_size:
            assert offsets[-1] + plan.tile_size == length
            assert np.all(steps[:-1] == plan.stride)


@settings(max_examples=200, deadline=None)
@given(plans(), st.data())
def test_tiles_for_window_are_exactly_the_intersecting_tiles(plan: TilePlan,
                                                             data: st.DataObject) -> None:
    r0 = data.draw(st.integers(-10, plan.height))
    c0 = data.draw(st.integers(-10, plan.width))
    window = Window(c0, r0, data.draw(st.integers(0, 120)), data.draw(st.integers(0, 120)))
    got = {(t.row_index, t.col_index) for t in plan.tiles_for_window(window)}
    r1, c1 = r0 + int(window.height), c0 + int(window.width)
    expected = {(t.row_index, t.col_index) for t in plan.tiles()
                if t.row < r1 and t.row + t.size > r0 and t.col < c1 and t.col + t.size > c0}
    assert got == expected


def test_lattice_is_global_and_last_tile_shifted_inward() -> None:
    assert axis_offsets(1000, 256, 32).tolist() == [0, 224, 448, 672, 744]
    assert axis_offsets(256, 256, 32).tolist() == [0]
    assert axis_offsets(100, 256, 32).tolist() == [0]
    # a window in the middle asks for the same lattice tiles the whole grid has
    plan = TilePlan.for_grid(1000, 1000, 256, 32)
    tiles = plan.tiles_for_window(Window(300, 300, 10, 10))
    assert {(t.row, t.col) for t in tiles} == {(224, 224)}
