"""Threshold tuning: the right threshold on constructed cases, written into model and card."""

from __future__ import annotations

import importlib.util
import json
import stat
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
from affine import Affine
from rasterio.crs import CRS
from scipy import ndimage
from shapely.geometry import box, shape

from idou.errors import InvalidOption, OutputConflict, UserInputError
from idou.geo.files.file_mode import usual_file_mode
from idou.geo.raster.grid import Grid
from idou.inference.contract import ModelContract
from idou.inference.model_card import card_paths, read_card
from idou.inference.model_source import resolve_model
from idou.training.evaluate import ScenePrediction, evaluate_model, find_scenes
from idou.training.tune import tune_model, tune_predictions

from .. import onnx_builders

GSD = 0.5
ORIGIN = (1000.0, 2000.0)
CONTRACT = ModelContract(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), tile_size=64,
                         tile_overlap=16, gsd_m=GSD, model_version="0.1.0")
# Object k of the new channel has probability NEW_LEVELS[k] / 255: 0.078, 0.176, ... 0.961.
NEW_LEVELS = [20 + 25 * k for k in range(10)]
DEM_LEVELS = [200] * 4


def passthrough_model(path: Path, contract: ModelContract = CONTRACT) -> Path:
    """probabilities = after bands (0, 1) / 255: the 'after' flight *is* the probability raster."""
    return onnx_builders.passthrough_model(path, contract, metrics={"trained": "kept"})


def _square(k: int, row: int) -> tuple[int, int]:
    return row, 4 + 24 * k


def ladder_scene(folder: Path, *, false_alarm: int = 100) -> Path:
    """A validation scene: 10 new objects at NEW_LEVELS, 4 demolished at 200, one false alarm.

    Squares are 12 x 12 px = 36 m2 (min area 8 m2 = 32 px). The 'after' flight's bands 1 and 2
    hold the new/demolished probabilities for :func:`passthrough_model`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    h, w = 96, 256
    after = np.zeros((3, h, w), dtype=np.uint8)
    rows = []
    transform = Affine(GSD, 0, ORIGIN[0], 0, -GSD, ORIGIN[1])

    def world(r: int, c: int, size: int = 12) -> object:
        x0, y0 = ORIGIN[0] + c * GSD, ORIGIN[1] - r * GSD
        return box(x0, y0 - size * GSD, x0 + size * GSD, y0)

    for k, level in enumerate(NEW_LEVELS):
        r, c = _square(k, 8)
        after[0, r:r + 12, c:c + 12] = level
        rows.append({"change_id": k, "change_type": "new" if k % 2 else "extension",
                     "channel": "new", "地番": f"{k + 1}", "geometry": world(r, c)})
    for k, level in enumerate(DEM_LEVELS):
        r, c = _square(k, 40)
        after[1, r:r + 12, c:c + 12] = level
        rows.append({"change_id": 100 + k, "change_type": "demolished", "channel": "demolished",
                     "地番": f"{101 + k}", "geometry": world(r, c)})
    after[0, 70:82, 200:212] = false_alarm             # a false alarm in the new channel
    profile = {"driver": "GTiff", "height": h, "width": w, "count": 3, "dtype": "uint8",
               "crs": CRS.from_epsg(6677), "transform": transform}
    with rasterio.open(folder / "flight_2024.tif", "w", **profile) as dst:
        dst.write(np.full((3, h, w), 90, dtype=np.uint8))
    with rasterio.open(folder / "flight_2025.tif", "w", **profile) as dst:
        dst.write(after)
    gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:6677").to_file(
        folder / "truth.gpkg", layer="truth")
    return folder


def _prediction(probs_new: np.ndarray, truth_new: np.ndarray, name: str = "s") -> ScenePrediction:
    """A scene prediction with a new-channel probability raster and truth as polygons."""
    h, w = probs_new.shape
    grid = Grid(CRS.from_epsg(6677), Affine(GSD, 0, ORIGIN[0], 0, -GSD, ORIGIN[1]), w, h)
    labels, n = ndimage.label(truth_new)
    geoms = [shape(g) for g, v in rasterio.features.shapes(
        labels.astype(np.int32), mask=labels > 0, transform=grid.transform)]
    truth = gpd.GeoDataFrame({"channel": ["new"] * len(geoms), "geometry": geoms},
                             geometry="geometry", crs="EPSG:6677")
    probs = np.stack([probs_new, np.zeros_like(probs_new)])
    return ScenePrediction(name=name, grid=grid, probs=probs, valid=np.ones((h, w), bool),
                           truth=truth)


def test_tune_picks_highest_threshold_reaching_recall_pooled_over_scenes() -> None:
    # Scene A: objects at 0.30 and 0.60; scene B: objects at 0.10 and 0.80 (uint8 scale).
    def scene(levels: list[int], name: str) -> ScenePrediction:
        probs = np.zeros((20, 80), dtype=np.uint8)
        truth = np.zeros((20, 80), dtype=bool)
        for k, v in enumerate(levels):
            probs[4:14, 4 + 20 * k:14 + 20 * k] = v
            truth[4:14, 4 + 20 * k:14 + 20 * k] = True
        return _prediction(probs, truth, name)

    preds = [scene([77, 153], "A"), scene([26, 204], "B")]   # 0.302, 0.6, 0.102, 0.8
    result = tune_predictions(preds, 0.75, min_area_m2=8.0)
    new = result.channels["new"]
    # 3 of 4 objects are found up to 0.30 (the 0.102 one is lost above 0.10): pick 0.30.
    assert new.threshold == 0.30 and new.scores.n_found == 3 and new.scores.n_true == 4
    assert new.reached and not new.no_truth and result.scenes == ["A", "B"]
    assert new.pixels.recall == pytest.approx(0.75)
    # No demolished truth: nothing to tune on; the current threshold is kept and flagged.
    assert result.channels["demolished"].threshold == 0.5
    assert result.channels["demolished"].no_truth and not result.reached
    kept = tune_predictions(preds, 0.75, current={"new": 0.5, "demolished": 0.33})
    assert kept.channels["demolished"].threshold == 0.33


def test_tune_flags_unreachable_target() -> None:
    probs = np.zeros((20, 20), dtype=np.uint8)
    truth = np.zeros((20, 20), dtype=bool)
    truth[5:15, 5:15] = True                               # never predicted
    result = tune_predictions([_prediction(probs, truth)], 0.5, min_area_m2=1.0)
    assert not result.channels["new"].reached and not result.reached
    with pytest.raises(InvalidOption, match="--recall"):
        tune_predictions([], 1.5)


def test_tune_lowers_the_pick_until_detects_polygons_reach_the_recall() -> None:
    # A 10x10 px true object; its 5x6 px corner (30 px, under the 32 px minimum area) is at
    # 0.9, the rest at 0.4. Another blob at 0.9 touches the corner diagonally only. The raster
    # sweep (8-connected) counts corner + blob as one object covering 30% of the truth up to
    # 0.9; detect's polygons (4-connected) drop the lone corner as too small above 0.4.
    probs = np.zeros((40, 40), dtype=np.uint8)
    truth = np.zeros((40, 40), dtype=bool)
    truth[10:20, 10:20] = True
    probs[10:20, 10:20] = 102                    # 0.4
    probs[15:20, 14:20] = 230                    # 0.9 corner inside the truth
    probs[20:30, 20:30] = 230                    # 0.9 blob outside, diagonal contact
    pred = _prediction(probs, truth)
    raster_only = tune_predictions([pred], 1.0, confirm=False)
    assert raster_only.channels["new"].threshold == 0.90
    checked = tune_predictions([pred], 1.0, max_confirm_steps=60)
    new = checked.channels["new"]
    assert new.threshold == 0.40 and new.reached
    assert new.detect_scores is not None and new.detect_scores.recall == 1.0
    capped = tune_predictions([pred], 1.0, max_confirm_steps=10)
    assert capped.channels["new"].threshold == 0.80 and not capped.channels["new"].reached


def test_tune_model_end_to_end_through_the_engine(tmp_path: Path) -> None:
    scene = ladder_scene(tmp_path / "validation")
    model = passthrough_model(tmp_path / "model.onnx")
    has_mlflow = importlib.util.find_spec("mlflow") is not None   # the train extra
    outcome = tune_model(model, scene, 0.869, min_area_m2=8.0, log_mlflow=has_mlflow)
    new, dem = outcome.result.channels["new"], outcome.result.channels["demolished"]
    # 9 of 10 objects are needed: the second lowest (45/255 = 0.176) must be kept -> 0.17.
    assert new.threshold == 0.17 and new.scores.n_found == 9
    assert new.detect_scores == new.scores       # detect's polygons agree with the sweep
    # The false alarm (100/255 = 0.39) is predicted at 0.17: precision 9/10.
    assert new.scores.precision == pytest.approx(0.9)
    # Demolished objects are all at 200/255 = 0.784 -> highest threshold 0.78.
    assert dem.threshold == 0.78 and dem.scores.recall == 1.0

    written = outcome.model
    assert written == tmp_path / "model.tuned.onnx"
    assert stat.S_IMODE(written.stat().st_mode) == usual_file_mode()   # not mkstemp's 0600
    tuned = resolve_model(str(written))                  # the card hash matches the new file
    assert tuned.contract.thresholds == (0.17, 0.78)
    assert tuned.contract.recall_target == 0.869
    assert resolve_model(str(model)).contract.thresholds == (0.5, 0.5)   # source untouched
    card = read_card(card_paths(written)[0])
    assert card.thresholds == {"new": 0.17, "demolished": 0.78}
    assert card.metrics["trained"] == "kept"
    assert card.metrics["tuned.object_precision_new"] == pytest.approx(0.9)
    names = {p.name for p in outcome.artifacts}
    assert {"model.tuned.pr_new.png", "model.tuned.pr_demolished.png",
            "model.tuned.tune.json"} <= names
    assert (tmp_path / "model.tuned.pr_new.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((tmp_path / "model.tuned.tune.json").read_text())
    assert report["thresholds"] == {"new": 0.17, "demolished": 0.78}

    if has_mlflow:  # the run is in mlflow (conftest's per-test store) with figures, artifacts
        from mlflow import MlflowClient

        from idou.inference.registry import tracking_uri

        client = MlflowClient(tracking_uri=tracking_uri())  # not whatever URI another test set
        run = client.get_run(str(outcome.mlflow_run_id))
        assert run.data.metrics["threshold_new"] == 0.17
        assert run.data.params["recall_target"] == "0.869"
        logged = {a.path for folder in ("tune", "model")
                  for a in client.list_artifacts(run.info.run_id, folder)}
        assert {"tune/model.tuned.pr_new.png", "model/model.tuned.onnx",
                "model/model.tuned.card.json"} <= logged

    # Evaluating the tuned model at its own thresholds gives the same figures.
    ev = evaluate_model(str(written), scenes=find_scenes(scene))
    assert ev.channels["new"] == new.scores
    assert ev.change_types["extension"].n_true == 5 and ev.change_types["new"].n_found == 5
    pair = (scene / "flight_2024.tif", scene / "flight_2025.tif", scene / "truth.gpkg")
    assert evaluate_model(str(written), pair=pair).channels == ev.channels


def test_tune_output_rules(tmp_path: Path) -> None:
    scene = ladder_scene(tmp_path / "validation")
    model = passthrough_model(tmp_path / "model.onnx")
    with pytest.raises(OutputConflict, match="--in-place"):
        tune_model(model, scene, 0.9, output=model)
    outcome = tune_model(model, scene, 0.869, in_place=True)
    assert outcome.model == model
    assert resolve_model(str(model)).contract.thresholds == (0.17, 0.78)   # card matches too
    assert read_card(card_paths(model)[0]).recall_target == 0.869
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="truth.gpkg"):
        tune_model(model, tmp_path / "empty", 0.9)
    (scene / "flight_2023.tif").write_bytes(b"")          # three flights: which pair?
    with pytest.raises(UserInputError, match="exactly two"):
        tune_model(model, tmp_path, 0.9)                 # a folder of scene folders


def test_tune_picks_the_footprint_threshold_on_scenes_with_a_building_map() -> None:
    from idou.training.tune import tune_footprints

    # four registered houses with demolished probability 0.2, 0.4, 0.6, 0.8 inside; the first
    # three were demolished (truth), the fourth stands (a false alarm above 0.8 only)
    h, w = 20, 100
    grid = Grid(CRS.from_epsg(6677), Affine(GSD, 0, ORIGIN[0], 0, -GSD, ORIGIN[1]), w, h)
    probs = np.zeros((2, h, w), dtype=np.uint8)
    houses = []
    for k, level in enumerate((0.2, 0.4, 0.6, 0.8)):
        probs[1, 4:16, 4 + 24 * k:16 + 24 * k] = round(level * 255)
        x0 = ORIGIN[0] + (4 + 24 * k) * GSD
        houses.append(box(x0, ORIGIN[1] - 16 * GSD, x0 + 12 * GSD, ORIGIN[1] - 4 * GSD))
    truth = gpd.GeoDataFrame({"channel": ["demolished"] * 3}, geometry=houses[:3],
                             crs="EPSG:6677")
    buildings = gpd.GeoDataFrame({"building_id": ["a", "b", "c", "d"]}, geometry=houses,
                                 crs="EPSG:6677")
    pred = ScenePrediction(name="m", grid=grid, probs=probs, valid=np.ones((h, w), bool),
                           truth=truth, buildings=buildings)
    ts = [0.1, 0.3, 0.5, 0.7, 0.9]
    tuned = tune_footprints([pred], 2 / 3, ts)
    assert tuned is not None and tuned.reached
    assert tuned.threshold == 0.3  # 0.4 and 0.6 found; above 0.3 the 0.4 house is lost
    assert (tuned.scores.n_found, tuned.scores.n_false_alarm) == (2, 1)
    pred.buildings = None
    assert tune_footprints([pred], 2 / 3, ts) is None  # no map: nothing to tune
