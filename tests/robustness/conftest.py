"""Shared inputs of the robustness tests: one tiny good flight pair, a constructed model, the CLI.

Everything is generated here (no fetched files): two 256 x 256 px RGB GeoTIFFs at 0.2 m in
EPSG:6677 where a few bright roofs appear in the later flight, parcels over them, and a tiny
ONNX change model (onnx.helper, following :mod:`idou.inference.contract`) with its model card.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import onnx
import pytest
import rasterio
from affine import Affine
from onnx import helper, numpy_helper
from rasterio.errors import NotGeoreferencedWarning
from shapely.geometry import box

from idou.inference.contract import ModelContract

from ..onnx_builders import contract_model, save_with_card

CRS = "EPSG:6677"
GSD = 0.2
SIZE = 256
ORIGIN = (-69400.0, 43600.0)  # upper-left corner (x, y), near 前橋市 in zone IX
CONTRACT = ModelContract(tile_size=128, tile_overlap=16, gsd_m=GSD, model_version="0.0.1",
                         model_name="idou-robustness")
REPO = Path(__file__).resolve().parents[2]
# (row, col, side) of the roofs that appear in the later flight
ROOFS = ((40, 40, 30), (150, 60, 24), (60, 170, 36), (180, 180, 28))


def transform(origin: tuple[float, float] = ORIGIN, gsd: float = GSD) -> Affine:
    """North-up geotransform with its upper-left corner at ``origin``."""
    return Affine(gsd, 0.0, origin[0], 0.0, -gsd, origin[1])


def texture(bands: int = 3, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """Smooth-ish random uint8 ground (bands, size, size)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(60, 140, size=(bands, size // 8, size // 8), dtype=np.uint8)
    fine = rng.integers(0, 12, size=(bands, size, size), dtype=np.uint8)
    return np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2) + fine


def with_roofs(ground: np.ndarray) -> np.ndarray:
    """The later flight: the same ground with bright roofs added."""
    after = ground.copy()
    for r, c, s in ROOFS:
        after[:, r:r + s, c:c + s] = 235
    return after


def write_raster(path: Path, data: np.ndarray, *, crs: str | None = CRS,
                 tr: Affine | None = None, georef: bool = True, **profile: Any) -> Path:
    """Write (bands, h, w) ``data`` with rasterio; ``georef=False`` writes no geotransform."""
    meta: dict[str, Any] = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1],
                            "count": data.shape[0], "dtype": data.dtype.name, **profile}
    if crs is not None:
        meta["crs"] = crs
    if georef:
        meta["transform"] = tr if tr is not None else transform()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **meta) as ds:
            ds.write(data)
    return path


def build_model(contract: ModelContract = CONTRACT, *, channels: int | None = None,
                spatial: int | None = None, metadata: bool = True) -> onnx.ModelProto:
    """probabilities = sigmoid(±8 (mean(after) - mean(before)) - 3): new where it brightened.

    ``channels``/``spatial`` fix the input shape (to build models that break the contract);
    ``metadata=False`` leaves out the idou contract.
    """
    inits = [numpy_helper.from_array(np.array(8.0, dtype=np.float32), "gain"),
             numpy_helper.from_array(np.array(-8.0, dtype=np.float32), "neg_gain"),
             numpy_helper.from_array(np.array(-3.0, dtype=np.float32), "bias")]
    nodes = [helper.make_node("ReduceMean", ["before"], ["mb"], axes=[1], keepdims=1),
             helper.make_node("ReduceMean", ["after"], ["ma"], axes=[1], keepdims=1),
             helper.make_node("Sub", ["ma", "mb"], ["diff"]),
             helper.make_node("Mul", ["diff", "gain"], ["zn"]),
             helper.make_node("Mul", ["diff", "neg_gain"], ["zd"]),
             helper.make_node("Add", ["zn", "bias"], ["yn"]),
             helper.make_node("Add", ["zd", "bias"], ["yd"]),
             helper.make_node("Sigmoid", ["yn"], ["pn"]),
             helper.make_node("Sigmoid", ["yd"], ["pd"]),
             helper.make_node("Concat", ["pn", "pd"], ["probabilities"], axis=1)]
    return contract_model(nodes, inits, contract if metadata else None, channels=channels,
                          spatial=spatial, name="idou-robustness")


def save_model(model: onnx.ModelProto, path: Path, *, card: bool = True) -> Path:
    """Save a model, with a matching model card beside it unless ``card=False``."""
    if not card:
        onnx.save(model, str(path))
        return path
    return save_with_card(model, path, name="idou-robustness", version="0.0.1",
                          created="2026-01-01", trained_on="nothing: a constructed model",
                          terms="test only")

def parcels_frame(crs: str = CRS, offset: tuple[float, float] = (0.0, 0.0)) -> gpd.GeoDataFrame:
    """Four parcels, one around each roof (地番 1-1 .. 1-4), in ``crs`` (built in EPSG:6677)."""
    geoms = []
    for r, c, s in ROOFS:
        x0 = ORIGIN[0] + (c - 6) * GSD + offset[0]
        y1 = ORIGIN[1] - (r - 6) * GSD + offset[1]
        geoms.append(box(x0, y1 - (s + 12) * GSD, x0 + (s + 12) * GSD, y1))
    frame = gpd.GeoDataFrame({"地番": [f"1-{i}" for i in range(1, 5)],
                              "所在": ["大手町一丁目"] * 4}, geometry=geoms, crs=CRS)
    return frame.to_crs(crs)


@dataclass(frozen=True)
class GoodPair:
    """The module's known-good inputs."""

    folder: Path
    before: Path
    after: Path
    parcels: Path
    model: Path


def make_good_pair(folder: Path) -> GoodPair:
    """Write the good pair, parcels and model into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ground = texture()
    before = write_raster(folder / "flight_2024.tif", ground, tiled=True, blockxsize=128,
                          blockysize=128)
    after = write_raster(folder / "flight_2025.tif", with_roofs(ground), tiled=True,
                         blockxsize=128, blockysize=128)
    parcels = folder / "parcels.gpkg"
    parcels_frame().to_file(parcels, driver="GPKG")
    model = save_model(build_model(), folder / "model.onnx")
    return GoodPair(folder, before, after, parcels, model)


@pytest.fixture(scope="package")
def good(tmp_path_factory: pytest.TempPathFactory) -> GoodPair:
    """One tiny good flight pair, parcels and model shared by every robustness test."""
    return make_good_pair(tmp_path_factory.mktemp("good"))


def idou_env(**extra: str) -> dict[str, str]:
    """Environment of CLI subprocesses: wide, plain output; one thread."""
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", TERM="dumb", OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def run_idou(*args: str | Path, cwd: Path, timeout: float = 120,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real ``idou`` command line in a subprocess."""
    return subprocess.run([sys.executable, "-m", "idou.cli", *map(str, args)], cwd=cwd,
                          env=env or idou_env(), capture_output=True, text=True,
                          timeout=timeout)


def error_line(stderr: str) -> str:
    """The ``error:`` line of a failed run (the CLI prints one; warnings may precede it)."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, f"expected one 'error:' line, got: {stderr!r}"
    others = [ln for ln in lines if not ln.startswith(("error:", "warning:", "note:"))]
    assert not others, f"unexpected stderr lines besides the error: {others!r}"
    return errors[0].removeprefix("error:").strip()


TINY_TRAINING = """
name = "{name}"
seed = {seed}
run_dir = "{run_dir}"
experiment = "{name}"

[model]
backbone = "mobilenet_v3_large"
decoder_channels = [8, 8, 8, 8, 8]

[[train_data]]
kind = "synthetic"
seeds = [930001]
scene_size = 256
chip_size = 64
stride = 64
cache_dir = "{cache}"

[train]
epochs = {epochs}
batch_size = 2
chips_per_epoch = 4
threads = 1
sample_images = 1
export_onnx = false

[contract]
gsd_m = 0.4
tile_size = 64
tile_overlap = 8
"""


def tiny_training_config(path: Path, run_dir: Path, cache: Path, *, name: str, seed: int,
                         epochs: int) -> Path:
    """Write a training config that runs a few steps on one small generated scene."""
    path.write_text(TINY_TRAINING.format(name=name, seed=seed, run_dir=run_dir, cache=cache,
                                         epochs=epochs), encoding="utf-8")
    return path

