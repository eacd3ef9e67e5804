"""The engine: block-wise equals one pass, nodata tiles are skipped, borders blend seamlessly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rasterio.windows import Window

from idou.geo.changes.vectorize import vectorize
from idou.inference.blending import to_uint8
from idou.inference.contract import ModelContract
from idou.inference.engine import predict_grid, predict_window, predict_window_uint8
from idou.inference.probability_store import ProbabilityStore
from idou.inference.session import make_session
from idou.inference.tiling import TilePlan

from .conftest import ArrayPair, make_pair


class CountingSession:
    """An ONNX Runtime session that counts the tiles it is asked to run."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.tiles = 0

    def get_inputs(self) -> Any:
        return self.session.get_inputs()

    def run(self, names: Any, feeds: dict[str, np.ndarray]) -> Any:
        self.tiles += feeds["before"].shape[0]
        return self.session.run(names, feeds)


@pytest.fixture
def blur_session(small_contract: ModelContract, model_factory: Callable[..., Path]) -> Any:
    return make_session(model_factory(small_contract, box=5), threads=1)


def test_blockwise_grid_equals_one_pass(tmp_path: Path, small_contract: ModelContract,
                                        blur_session: Any) -> None:
    pair = make_pair(301, 263, seed=1, buildings=12)
    whole = to_uint8(predict_window(pair, blur_session, small_contract, Window(0, 0, 263, 301)))
    assert whole[0].max() > 200  # the model sees the new buildings
    with ProbabilityStore(tmp_path / "p.u8", 301, 263) as store:
        stats = predict_grid(pair, blur_session, small_contract, store, block_size=100,
                             batch_size=3)
        assert stats.blocks > 4
        np.testing.assert_array_equal(store.read(Window(0, 0, 263, 301)), whole)
        assert stats.tiles_run == len(TilePlan.for_grid(301, 263, 64, 16))  # each tile once
    # any window, even one reaching past the grid, equals the same part of the whole
    for window in (Window(40, 37, 90, 51), Window(200, 250, 100, 80), Window(-5, -7, 30, 30)):
        part = to_uint8(predict_window(pair, blur_session, small_contract, window))
        r0, c0 = int(window.row_off), int(window.col_off)
        rr0, cc0 = max(r0, 0), max(c0, 0)
        rr1, cc1 = min(r0 + int(window.height), 301), min(c0 + int(window.width), 263)
        np.testing.assert_array_equal(part[:, rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0],
                                      whole[:, rr0:rr1, cc0:cc1])
        direct, valid = predict_window_uint8(pair, blur_session, small_contract, window)
        np.testing.assert_array_equal(direct, part)
        assert valid[rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0].all() and valid.sum() == (
            (rr1 - rr0) * (cc1 - cc0))
        assert not part[:, :rr0 - r0].any() and not part[:, rr1 - r0:].any()
    # the windows path of predict_grid (as a batch block list would use it) agrees too
    with ProbabilityStore(tmp_path / "q.u8", 301, 263) as store:
        windows = [Window(c, r, min(128, 263 - c), min(128, 301 - r))
                   for r in range(0, 301, 128) for c in range(0, 263, 128)]
        predict_grid(pair, blur_session, small_contract, store, windows=windows)
        np.testing.assert_array_equal(store.read(Window(0, 0, 263, 301)), whole)


def test_small_grid_is_padded_to_one_tile(small_contract: ModelContract, blur_session: Any
                                          ) -> None:
    pair = make_pair(20, 45, seed=2, buildings=1)
    probs = predict_window(pair, blur_session, small_contract, Window(0, 0, 45, 20))
    assert probs.shape == (2, 20, 45) and probs[0].max() > 0.9


def test_nodata_tiles_are_skipped_and_stay_zero(tmp_path: Path, small_contract: ModelContract,
                                                blur_session: Any) -> None:
    pair = make_pair(240, 240, seed=3)
    pair.valid[:, 120:] = False  # the after flight ends half way
    pair.valid[:100, :] = False
    counting = CountingSession(blur_session)
    with ProbabilityStore(tmp_path / "p.u8", 240, 240) as store:
        stats = predict_grid(pair, counting, small_contract, store, block_size=100)
        probs = store.read(Window(0, 0, 240, 240))
    plan = TilePlan.for_grid(240, 240, 64, 16)
    needed = sum(1 for t in plan.tiles()
                 if pair.valid[t.row:t.row + 64, t.col:t.col + 64].any())
    assert counting.tiles == stats.tiles_run == needed < len(plan)
    assert stats.tiles_skipped == len(plan) - needed
    assert not probs[:, ~pair.valid].any()
    # with the cheap check first, blocks with nothing valid are not even read
    pair.reads = 0
    with ProbabilityStore(tmp_path / "q.u8", 240, 240) as store:
        checked = predict_grid(pair, blur_session, small_contract, store, block_size=100,
                               precheck=True)
        np.testing.assert_array_equal(store.read(Window(0, 0, 240, 240)), probs)
    assert checked.tiles_run == needed and pair.reads < checked.blocks


def test_building_on_tile_and_block_border_scores_as_in_a_tile_centre(
        tmp_path: Path, small_contract: ModelContract, model_factory: Callable[..., Path]) -> None:
    session = make_session(model_factory(small_contract), threads=1)
    before = np.full((3, 200, 200), 90, dtype=np.uint8)
    pair = ArrayPair(before, before.copy(), np.ones((200, 200), dtype=bool))
    plan = TilePlan.for_grid(200, 200, 64, 16)
    border = int(plan.row_offsets[2])  # a tile edge, and a block edge with block_size=96
    pair.after[:, border - 6:border + 6, border - 6:border + 6] = 200  # on the border
    pair.after[:, 20:32, 20:32] = 200  # inside the first tile's centre region
    with ProbabilityStore(tmp_path / "p.u8", 200, 200) as store:
        predict_grid(pair, session, small_contract, store, block_size=96)
        probs = store.read(Window(0, 0, 200, 200))
        changes = vectorize(store, pair.grid, small_contract.thresholds, block_size=96)
    on_border = probs[0, border - 6:border + 6, border - 6:border + 6]
    in_centre = probs[0, 20:32, 20:32]
    assert abs(int(on_border.max()) - int(in_centre.max())) <= 1
    assert abs(float(on_border.mean()) - float(in_centre.mean())) <= 1
    # one polygon each, with the same area and score, although one spans tiles and blocks
    assert list(changes["channel"]) == ["new", "new"]
    assert all(g.geom_type == "Polygon" for g in changes.geometry)
    assert changes["area_m2"].tolist() == pytest.approx([144 * 0.25, 144 * 0.25])
    assert abs(changes["score_max"].iloc[0] - changes["score_max"].iloc[1]) <= 1 / 255 + 1e-9


def test_a_model_with_a_fixed_batch_size_gives_the_same_result(
        small_contract: ModelContract, model_factory: Callable[..., Path]) -> None:
    pair = make_pair(150, 170, seed=4)
    window = Window(0, 0, 170, 150)
    dynamic = make_session(model_factory(small_contract, box=5), threads=1)
    fixed = make_session(model_factory(small_contract, name="fixed.onnx", box=5, batch=2),
                         threads=1)
    np.testing.assert_array_equal(
        predict_window(pair, fixed, small_contract, window, batch_size=3),
        predict_window(pair, dynamic, small_contract, window, batch_size=3))
