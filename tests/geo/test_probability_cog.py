"""ProbabilityWriter: a valid 2-band uint8 COG with overviews, written atomically."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from idou.errors import OutputConflict
from idou.geo.files.file_mode import usual_file_mode
from idou.geo.raster.grid import Grid
from idou.geo.raster.probability_cog import ProbabilityWriter, to_uint8

GRID = Grid(CRS.from_epsg(6677), Affine(0.2, 0, -5000.0, 0, -0.2, -30000.0), 700, 600)


def _probs(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((2, h, w), dtype=np.float32)


def test_cog_layout_bands_and_values(tmp_path: Path) -> None:
    target = tmp_path / "prob.tif"
    written = {}
    with ProbabilityWriter(target, GRID, blocksize=256) as writer:
        for r in range(0, 600, 256):
            for c in range(0, 700, 256):
                p = _probs(256, 256, seed=r + c)
                valid = np.ones((256, 256), bool)
                valid[:8] = r != 0  # the first rows of the grid are invalid
                writer.write(Window(c, r, 256, 256), p, valid)  # last ones run past the edge
                written[(r, c)] = p
        assert not target.exists()
        assert writer.finish() == target
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prob.tif"]
    assert stat.S_IMODE(target.stat().st_mode) == usual_file_mode()   # not mkstemp's 0600
    with rasterio.open(target) as ds:
        assert ds.count == 2 and ds.dtypes == ("uint8", "uint8")
        assert ds.descriptions == ("new", "demolished")
        assert ds.nodata is None
        assert ds.profile["tiled"] and ds.block_shapes[0] == (256, 256)
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.overviews(1) and ds.overviews(2)
        assert (ds.crs, ds.transform, ds.width, ds.height) == (GRID.crs, GRID.transform, 700, 600)
        mask = ds.dataset_mask()
        assert not mask[:8].any() and mask[8:].all()
        got = ds.read(window=Window(256, 256, 256, 256))
        assert np.array_equal(got, to_uint8(written[(256, 256)]))


def test_to_uint8_scales_and_clips() -> None:
    p = np.array([0.0, 0.5, 1.0, 1.2, -0.1, np.nan], dtype=np.float32)
    assert to_uint8(p).tolist() == [0, 128, 255, 255, 0, 0]


def test_to_uint8_rounds_half_up_as_the_stored_scale() -> None:
    # k + 0.5 steps round up (not to even): the scale the engine's fixed-point sums are stored in
    halves = (np.arange(255) + 0.5) / 255
    assert to_uint8(halves).tolist() == list(range(1, 256))


def test_one_uint8_scale_for_geo_and_inference() -> None:
    from idou.inference import blending

    assert blending.to_uint8 is to_uint8


def test_unwritten_areas_are_masked(tmp_path: Path) -> None:
    target = tmp_path / "prob.tif"
    with ProbabilityWriter(target, GRID) as writer:
        writer.write(Window(0, 0, 100, 100), _probs(100, 100))
        writer.finish()
    with rasterio.open(target) as ds:
        mask = ds.dataset_mask()
    assert mask[:100, :100].all() and not mask[100:].any() and not mask[:, 100:].any()


def test_failure_leaves_nothing_at_the_target(tmp_path: Path) -> None:
    target = tmp_path / "prob.tif"
    with pytest.raises(RuntimeError), ProbabilityWriter(target, GRID) as writer:
        writer.write(Window(0, 0, 10, 10), _probs(10, 10))
        raise RuntimeError("model crashed")
    assert list(tmp_path.iterdir()) == []


def test_existing_target_is_replaced_only_on_finish(tmp_path: Path) -> None:
    target = tmp_path / "prob.tif"
    target.write_bytes(b"old")
    with ProbabilityWriter(target, GRID) as writer:
        writer.write(Window(0, 0, 10, 10), _probs(10, 10))
        assert target.read_bytes() == b"old"
        writer.finish()
    with rasterio.open(target) as ds:
        assert ds.count == 2


def test_missing_folder_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(OutputConflict):
        ProbabilityWriter(tmp_path / "nowhere" / "prob.tif", GRID)


def test_wrong_shape_is_refused(tmp_path: Path) -> None:
    with ProbabilityWriter(tmp_path / "p.tif", GRID) as writer, pytest.raises(ValueError):
        writer.write(Window(0, 0, 10, 10), _probs(10, 12))
