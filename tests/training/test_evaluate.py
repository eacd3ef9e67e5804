"""Evaluation helpers: scene discovery, truth layers, detect's clean-up, coverage."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS
from scipy import ndimage
from shapely.geometry import box

from idou.errors import InputNotFound, UserInputError
from idou.geo.changes.vectorize import clean_mask
from idou.geo.raster.grid import Grid
from idou.training.evaluate import (
    detect_clean,
    evaluate_geopackage,
    find_scenes,
    processed_truth,
    rasterize_labels,
    read_truth,
)

CRS_ = "EPSG:6677"


def test_detect_clean_equals_vectorize_clean_mask() -> None:
    rng = np.random.default_rng(3)
    for k in range(12):
        mask = ndimage.gaussian_filter(rng.random((60, 90)), 1.5) > 0.45 + 0.02 * (k % 4)
        if k % 3 == 0:
            mask[:, :4] = True                     # set along the raster's edge
        assert np.array_equal(detect_clean(mask), clean_mask(mask, 1))
    empty = np.zeros((5, 5), dtype=bool)
    assert not detect_clean(empty).any()


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_find_scenes_layouts(tmp_path: Path) -> None:
    _touch(tmp_path / "a", "flight_2025.tif", "flight_2024.tif", "truth.gpkg")
    _touch(tmp_path / "b", "before.tif", "after.tif", "flight_x.tif", "truth.gpkg")
    _touch(tmp_path / "c", "flight_2024.tif")      # no truth: not a scene
    scenes = find_scenes(tmp_path)
    assert [s.name for s in scenes] == ["a", "b"]
    assert (scenes[0].before.name, scenes[0].after.name) == ("flight_2024.tif",
                                                             "flight_2025.tif")
    assert (scenes[1].before.name, scenes[1].after.name) == ("before.tif", "after.tif")
    assert [s.name for s in find_scenes(tmp_path / "a")] == ["a"]
    with pytest.raises(InputNotFound):
        find_scenes(tmp_path / "nope")
    with pytest.raises(UserInputError, match="truth.gpkg"):
        find_scenes(tmp_path / "c")


def test_read_truth_needs_channel(tmp_path: Path) -> None:
    path = tmp_path / "t.gpkg"
    gpd.GeoDataFrame({"x": [1]}, geometry=[box(0, 0, 1, 1)], crs=CRS_).to_file(path, layer="t")
    with pytest.raises(UserInputError, match="channel"):
        read_truth(path)
    with pytest.raises(InputNotFound):
        read_truth(tmp_path / "missing.gpkg")


def test_rasterize_labels_one_label_per_row() -> None:
    grid = Grid(CRS.from_epsg(6677), Affine(1.0, 0, 0, 0, -1.0, 10.0), 20, 10)
    truth = gpd.GeoDataFrame({"channel": ["new", "new", "demolished"]},
                             geometry=[box(0, 0, 5, 5), box(5, 0, 10, 5), box(10, 5, 20, 10)],
                             crs=CRS_)
    labels = rasterize_labels(truth, grid)
    assert sorted(np.unique(labels["new"]).tolist()) == [0, 1, 2]     # touching, still two
    assert (labels["new"] == 1).sum() == 25
    assert (labels["demolished"] > 0).sum() == 50


def test_truth_outside_coverage_is_left_out(tmp_path: Path) -> None:
    truth = gpd.GeoDataFrame(
        {"channel": ["new", "new"], "change_type": ["new", "new"], "地番": ["1", "2"]},
        geometry=[box(0, 0, 10, 10), box(100, 0, 110, 10)], crs=CRS_)
    coverage = gpd.GeoDataFrame({"status": ["processed", "nodata"]},
                                geometry=[box(-5, -5, 50, 50), box(50, -5, 200, 50)], crs=CRS_)
    kept, outside = processed_truth(truth, coverage)
    assert kept["地番"].tolist() == ["1"] and outside == 1
    result = tmp_path / "r.gpkg"
    gpd.GeoDataFrame({"channel": ["new"]}, geometry=[box(0, 0, 10, 10)], crs=CRS_).to_file(
        result, layer="changes")
    coverage.to_file(result, layer="coverage")
    truth_path = tmp_path / "truth.gpkg"
    truth.to_file(truth_path, layer="truth")
    ev = evaluate_geopackage(result, truth_path)
    assert ev.channels["new"].recall == 1.0 and ev.truth_outside == 1
    assert ev.parcels is None                         # no candidate_parcels layer


def test_rows_a_rerun_no_longer_detects_are_not_scored(tmp_path: Path) -> None:
    """A --force re-run keeps rows it no longer finds (検出状況 = 再実行で未検出) for their
    review edits; evaluate scores only what the latest run detected."""
    truth = gpd.GeoDataFrame({"channel": ["new", "new"], "change_type": ["new", "new"],
                              "地番": ["1", "2"]},
                             geometry=[box(0, 0, 10, 10), box(50, 50, 60, 60)], crs=CRS_)
    truth_path = tmp_path / "truth.gpkg"
    truth.to_file(truth_path, layer="truth")
    result = tmp_path / "r.gpkg"
    status = {"検出状況": ["検出", "再実行で未検出"]}  # the earlier run's find, kept
    gpd.GeoDataFrame({"channel": ["new", "new"], **status},
                     geometry=[box(0, 0, 10, 10), box(50, 50, 60, 60)], crs=CRS_).to_file(
        result, layer="changes")
    gpd.GeoDataFrame({"地番": ["1", "2"], **status},
                     geometry=[box(0, 0, 10, 10), box(50, 50, 60, 60)], crs=CRS_).to_file(
        result, layer="candidate_parcels")
    ev = evaluate_geopackage(result, truth_path)
    assert ev.channels["new"].recall == 0.5 and ev.channels["new"].precision == 1.0
    assert ev.parcels == (2, 1)


def test_other_changes_of_a_building_map_run_are_not_scored(tmp_path: Path) -> None:
    """その他の変化 (change the building map does not support) is no candidate: not a false
    alarm of the run, and counted apart."""
    truth = gpd.GeoDataFrame({"channel": ["demolished"], "change_type": ["demolished"]},
                             geometry=[box(0, 0, 10, 10)], crs=CRS_)
    truth.to_file(tmp_path / "truth.gpkg", layer="truth")
    result = tmp_path / "r.gpkg"
    gpd.GeoDataFrame({"channel": ["demolished", "demolished"],
                      "change_type": ["demolished", "other"]},
                     geometry=[box(0, 0, 10, 10), box(50, 50, 60, 60)], crs=CRS_).to_file(
        result, layer="changes")
    ev = evaluate_geopackage(result, tmp_path / "truth.gpkg")
    assert ev.channels["demolished"].n_false_alarm == 0 and ev.not_candidates == 1


def test_scenes_with_a_building_map_are_scored_with_and_without_it() -> None:
    from idou.training.evaluate import ScenePrediction, score_predictions

    # 0.4 m grid, 100 x 100 px: a demolished house on the map, a tree felled off the map
    grid = Grid(CRS.from_epsg(6677), Affine(0.4, 0, 0.0, 0, -0.4, 40.0), 100, 100)
    probs = np.zeros((2, 100, 100), dtype=np.uint8)
    probs[1, 10:35, 10:35] = 230  # house: x 4..14, y 26..36
    probs[1, 60:80, 60:80] = 230  # tree: x 24..32, y 8..16
    house = box(4, 26, 14, 36)
    truth = gpd.GeoDataFrame({"channel": ["demolished"], "change_type": ["demolished"]},
                             geometry=[house], crs=CRS_)
    buildings = gpd.GeoDataFrame({"building_id": ["H"]}, geometry=[house], crs=CRS_)
    pred = ScenePrediction(name="s", grid=grid, probs=probs, valid=np.ones((100, 100), bool),
                           truth=truth, buildings=buildings)
    ev = score_predictions([pred], {"new": 0.5, "demolished": 0.5}, footprint_threshold=0.5)
    assert ev.channels["demolished"].n_false_alarm == 1  # the tree, without the map
    assert ev.with_map is not None and ev.footprint_threshold == 0.5
    assert (ev.with_map["demolished"].n_found, ev.with_map["demolished"].n_false_alarm) == (1, 0)
    assert "objects_with_building_map" in ev.to_dict()
