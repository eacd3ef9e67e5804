"""Tiny ONNX change models built with onnx.helper (no torch) and an in-memory aligned pair."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from affine import Affine
from onnx import helper, numpy_helper
from rasterio.crs import CRS
from rasterio.windows import Window

from idou.geo.raster.grid import Grid
from idou.inference.contract import ModelContract

from .. import onnx_builders
from ..onnx_builders import contract_model


def build_change_model(contract: ModelContract, *, gain: float = 8.0, offset: float = 3.0,
                       box: int = 0, channels: int | None = None, batch: int | None = None
                       ) -> onnx.ModelProto:
    """probabilities = sigmoid(±gain * (mean over bands of after - before) - offset).

    No change gives sigmoid(-offset) (0.05 by default), a clear change close to 1.

    ``box`` > 0 adds a ``box x box`` mean filter (zero padded) so tiles have edge effects.
    """
    inits = [numpy_helper.from_array(np.array(gain, dtype=np.float32), "gain"),
             numpy_helper.from_array(np.array(-gain, dtype=np.float32), "neg_gain"),
             numpy_helper.from_array(np.array(-offset, dtype=np.float32), "bias")]
    nodes = [helper.make_node("ReduceMean", ["before"], ["mb"], axes=[1], keepdims=1),
             helper.make_node("ReduceMean", ["after"], ["ma"], axes=[1], keepdims=1),
             helper.make_node("Sub", ["ma", "mb"], ["diff"])]
    d = "diff"
    if box:
        kernel = np.full((1, 1, box, box), 1.0 / box**2, dtype=np.float32)
        inits.append(numpy_helper.from_array(kernel, "box"))
        nodes.append(helper.make_node("Conv", ["diff", "box"], ["blur"], pads=[box // 2] * 4))
        d = "blur"
    nodes += [helper.make_node("Mul", [d, "gain"], ["zn"]),
              helper.make_node("Mul", [d, "neg_gain"], ["zd"]),
              helper.make_node("Add", ["zn", "bias"], ["yn"]),
              helper.make_node("Add", ["zd", "bias"], ["yd"]),
              helper.make_node("Sigmoid", ["yn"], ["pn"]),
              helper.make_node("Sigmoid", ["yd"], ["pd"]),
              helper.make_node("Concat", ["pn", "pd"], ["probabilities"], axis=1)]
    model = contract_model(nodes, inits, contract, channels=channels, batch=batch)
    onnx.checker.check_model(model)
    return model


def save_with_card(model: onnx.ModelProto, path: Path, contract: ModelContract) -> Path:
    """Save a model and a matching card beside it."""
    return onnx_builders.save_with_card(
        model, path, contract, created="2026-01-01", terms="test only",
        metrics={"recall": 1.0}, thresholds={"new": contract.threshold_new,
                                             "demolished": contract.threshold_demolished})


@pytest.fixture
def small_contract() -> ModelContract:
    """A contract with small tiles so tests run in milliseconds."""
    return ModelContract(tile_size=64, tile_overlap=16, gsd_m=0.5, model_version="0.0.1")


@pytest.fixture
def model_factory(tmp_path: Path) -> Callable[..., Path]:
    """Write a constructed model (and its card) and return its path."""
    def make(contract: ModelContract, name: str = "model.onnx", card: bool = True,
             **kwargs: object) -> Path:
        model = build_change_model(contract, **kwargs)  # type: ignore[arg-type]
        path = tmp_path / name
        if card:
            return save_with_card(model, path, contract)
        onnx.save(model, str(path))
        return path
    return make


@dataclass
class ArrayPair:
    """An aligned pair held in memory, with the read semantics of ``AlignedPair``."""

    before: np.ndarray  # (C, H, W) uint8
    after: np.ndarray
    valid: np.ndarray  # (H, W) bool
    gsd: float = 0.5
    reads: int = 0

    @property
    def grid(self) -> Grid:
        h, w = self.valid.shape
        return Grid(CRS.from_epsg(6677), Affine(self.gsd, 0, 1000.0, 0, -self.gsd, 2000.0), w, h)

    def _cut(self, array: np.ndarray, window: Window) -> np.ndarray:
        r0, c0 = int(window.row_off), int(window.col_off)
        h, w = int(window.height), int(window.width)
        out = np.zeros(array.shape[:-2] + (h, w), dtype=array.dtype)
        H, W = array.shape[-2:]
        rr0, cc0, rr1, cc1 = max(r0, 0), max(c0, 0), min(r0 + h, H), min(c0 + w, W)
        if rr1 > rr0 and cc1 > cc0:
            out[..., rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0] = array[..., rr0:rr1, cc0:cc1]
        return out

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self.reads += 1
        return (self._cut(self.before, window), self._cut(self.after, window),
                self._cut(self.valid, window))

    def valid_fraction(self, window: Window) -> float:
        part = self._cut(self.valid, window)
        return float(part.mean()) if part.size else 0.0


def make_pair(height: int, width: int, *, seed: int = 0, buildings: int = 6,
              bands: int = 3) -> ArrayPair:
    """A textured pair in which some bright squares appear in the after date."""
    rng = np.random.default_rng(seed)
    before = rng.integers(60, 120, size=(bands, height, width), dtype=np.uint8)
    after = before.copy()
    for _ in range(buildings):
        s = int(rng.integers(6, 20))
        r, c = int(rng.integers(0, max(1, height - s))), int(rng.integers(0, max(1, width - s)))
        after[:, r:r + s, c:c + s] = 230
    return ArrayPair(before, after, np.ones((height, width), dtype=bool))
