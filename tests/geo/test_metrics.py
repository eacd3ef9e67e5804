"""Object, pixel and parcel metrics on hand-made masks and polygons."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

from idou.errors import UnusableCRS, UserInputError
from idou.geo.scoring.metrics import (
    ObjectScores,
    PixelScores,
    change_type_recall,
    channel_scores,
    min_area_pixels,
    object_scores_from_masks,
    object_scores_from_polygons,
    parcel_recall,
    pick_threshold,
    pixel_scores,
    reaches,
    sweep_pixel_scores,
    sweep_thresholds,
    threshold_mask,
    uint8_cutoff,
)

CRS = "EPSG:6677"


def _mask(shape: tuple[int, int], *rects: tuple[int, int, int, int]) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    for r0, c0, r1, c1 in rects:
        m[r0:r1, c0:c1] = True
    return m


# ----------------------------------------------------------------------------------------- masks

def test_true_object_found_at_25_percent_cover_not_below() -> None:
    truth = _mask((40, 40), (0, 0, 10, 10))          # 100 px
    exactly = _mask((40, 40), (0, 0, 5, 5))          # 25 px = 25%
    below = _mask((40, 40), (0, 0, 4, 6))            # 24 px
    assert object_scores_from_masks(exactly, truth, min_area_px=4).n_found == 1
    assert object_scores_from_masks(below, truth, min_area_px=4).n_found == 0


def test_predicted_object_false_alarm_below_25_percent_overlap() -> None:
    truth = _mask((40, 40), (0, 0, 10, 10))
    # Predicted 4x10 = 40 px; 10 of them (25%) on truth -> not a false alarm.
    ok = _mask((40, 40), (9, 0, 13, 10))
    s = object_scores_from_masks(ok, truth, min_area_px=4)
    assert (s.n_pred, s.n_false_alarm) == (1, 0)
    # Predicted 4x11 = 44 px with 10 on truth (< 25%) -> false alarm; truth covered 10% -> missed.
    bad = _mask((40, 40), (9, 0, 13, 11))
    s = object_scores_from_masks(bad, truth, min_area_px=4)
    assert (s.n_pred, s.n_false_alarm, s.n_found) == (1, 1, 0)
    assert s.precision == 0.0 and s.recall == 0.0


def test_objects_under_min_area_left_out_of_both() -> None:
    truth = _mask((30, 30), (0, 0, 2, 2), (10, 10, 20, 20))       # 4 px and 100 px
    pred = _mask((30, 30), (25, 25, 27, 27), (10, 10, 20, 20))    # tiny false alarm + a hit
    s = object_scores_from_masks(pred, truth, min_area_px=5)
    assert s == ObjectScores(n_true=1, n_found=1, n_pred=1, n_false_alarm=0)
    # A tiny prediction cannot "find" a true object either.
    tiny_hit = _mask((30, 30), (10, 10, 12, 12))
    truth_small = _mask((30, 30), (10, 10, 14, 14))               # 16 px, tiny_hit covers 25%
    assert object_scores_from_masks(tiny_hit, truth_small, min_area_px=5).n_found == 0
    assert object_scores_from_masks(tiny_hit, truth_small, min_area_px=4).n_found == 1


def test_eight_connectivity_joins_diagonal_pixels() -> None:
    truth = _mask((10, 10), (0, 0, 2, 2), (2, 2, 4, 4))   # two squares touching at a corner
    s = object_scores_from_masks(np.zeros_like(truth), truth, min_area_px=1)
    assert s.n_true == 1


def test_truth_as_label_image_keeps_touching_objects_apart() -> None:
    labels = np.zeros((10, 20), dtype=np.int32)
    labels[0:10, 0:10] = 1
    labels[0:10, 10:20] = 2                        # touching: one component as a bool mask
    pred = _mask((10, 20), (0, 0, 10, 10))
    assert object_scores_from_masks(pred, labels > 0, min_area_px=1).recall == 1.0
    assert object_scores_from_masks(pred, labels, min_area_px=1).n_true == 1   # a mask
    s = object_scores_from_masks(pred, labels, min_area_px=1, labelled=True)
    assert (s.n_true, s.n_found) == (2, 1)
    curve = sweep_thresholds(pred.astype(np.float32), labels, [0.5], min_area_px=1,
                             labelled=True)
    assert curve[0][1] == s


def test_empty_cases_score_one() -> None:
    empty = np.zeros((8, 8), dtype=bool)
    s = object_scores_from_masks(empty, empty, min_area_px=1)
    assert s == ObjectScores(0, 0, 0, 0)
    assert s.recall == 1.0 and s.precision == 1.0
    p = pixel_scores(empty, empty)
    assert (p.precision, p.recall, p.f1, p.iou) == (1.0, 1.0, 1.0, 1.0)


def test_ignore_pixels_are_not_counted() -> None:
    truth = _mask((20, 20), (0, 0, 10, 10))
    pred = _mask((20, 20), (12, 12, 18, 18))      # a false alarm ...
    ignore = _mask((20, 20), (11, 11, 19, 19))    # ... entirely inside the ignore band
    s = object_scores_from_masks(pred, truth, min_area_px=1, ignore=ignore)
    assert (s.n_pred, s.n_false_alarm) == (0, 0)
    assert pixel_scores(pred, truth, ignore=ignore).fp == 0
    assert pixel_scores(pred, truth).fp == 36


def test_pixel_scores() -> None:
    truth = _mask((10, 10), (0, 0, 4, 5))        # 20 px
    pred = _mask((10, 10), (2, 0, 6, 5))         # 20 px, 10 shared
    p = pixel_scores(pred, truth)
    assert p == PixelScores(tp=10, fp=10, fn=10)
    assert p.precision == p.recall == p.f1 == 0.5
    assert p.iou == pytest.approx(1 / 3)


def test_min_area_pixels() -> None:
    assert min_area_pixels(8.0, 0.2) == 200
    assert min_area_pixels(8.0, 0.25) == 128
    assert min_area_pixels(0.0, 0.2) == 1


# -------------------------------------------------------------------------------------- sweeps

def _ladder() -> tuple[np.ndarray, np.ndarray]:
    """Ten true 10x10 objects; object k has probability 0.05 + 0.1 k (0.05 .. 0.95)."""
    prob = np.zeros((20, 220), dtype=np.float32)
    truth = np.zeros_like(prob, dtype=bool)
    for k in range(10):
        c = 2 + 22 * k
        truth[5:15, c:c + 10] = True
        prob[5:15, c:c + 10] = 0.05 + 0.1 * k
    return prob, truth


def test_sweep_and_pick_highest_threshold_reaching_recall() -> None:
    prob, truth = _ladder()
    thresholds = [round(0.01 * i, 2) for i in range(1, 100)]
    curve = sweep_thresholds(prob, truth, thresholds, min_area_px=4)
    recalls = {t: s.recall for t, s in curve}
    assert recalls[0.05] == 1.0 and recalls[0.06] == pytest.approx(0.9)
    # Recall 0.8 is first lost above 0.25 (objects 0.05, 0.15 missed at 0.26): pick 0.25.
    t, s = pick_threshold(curve, 0.8)
    assert t == 0.25 and s.recall == pytest.approx(0.8) and s.precision == 1.0
    assert reaches(s, 0.8)
    # Recall 0.869 needs 9 of 10 objects: highest threshold keeping 0.15 is 0.15.
    t, s = pick_threshold(curve, 0.869)
    assert t == 0.15 and s.n_found == 9


def test_pick_threshold_unreachable_returns_best_recall_flagged() -> None:
    prob, truth = _ladder()
    curve = sweep_thresholds(prob, truth, [0.1, 0.5, 0.9], min_area_px=4)
    t, s = pick_threshold(curve, 0.99)
    assert t == 0.1 and s.recall == pytest.approx(0.9)
    assert not reaches(s, 0.99)


def test_sweep_reads_uint8_as_fraction_of_255() -> None:
    prob, truth = _ladder()
    u8 = np.rint(prob * 255).astype(np.uint8)
    a = sweep_thresholds(prob, truth, [0.3, 0.6], min_area_px=4)
    b = sweep_thresholds(u8, truth, [0.3, 0.6], min_area_px=4)
    assert [s for _, s in a] == [s for _, s in b]
    pa = sweep_pixel_scores(prob, truth, [0.3, 0.6])
    assert pa == sweep_pixel_scores(u8, truth, [0.3, 0.6])
    assert pa[0][1].recall == pytest.approx(0.7) and pa[1][1].recall == pytest.approx(0.4)


def test_uint8_threshold_rule_is_detects() -> None:
    from idou.geo.changes.vectorize import threshold_uint8

    values = np.arange(256, dtype=np.uint8)
    for t in [round(0.01 * i, 2) for i in range(1, 100)] + [0.5, 1 / 3, 0.2]:
        assert uint8_cutoff(t) == threshold_uint8(t)
        assert threshold_mask(values, t).sum() == 256 - threshold_uint8(t)


def test_sweep_applies_clean_up_before_scoring() -> None:
    prob, truth = _ladder()
    # Drop every predicted object: a clean-up that erases all -> nothing found.
    curve = sweep_thresholds(prob, truth, [0.1], min_area_px=4,
                             clean=lambda m: np.zeros_like(m))
    assert curve[0][1].n_found == 0 and curve[0][1].n_pred == 0


def test_sweep_counts_false_alarms_and_valid_mask() -> None:
    prob, truth = _ladder()
    prob[16:20, 200:210] = 0.7                      # 40 px false alarm
    curve = dict(sweep_thresholds(prob, truth, [0.5, 0.8], min_area_px=4))
    assert curve[0.5].n_false_alarm == 1 and curve[0.5].n_pred == 6
    assert curve[0.8].n_false_alarm == 0
    valid = np.ones_like(truth)
    valid[16:, :] = False
    assert dict(sweep_thresholds(prob, truth, [0.5], min_area_px=4, valid=valid))[
        0.5].n_false_alarm == 0


# -------------------------------------------------------------------------------------- polygons

def _gdf(rows: list[dict[str, object]]) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(rows, geometry="geometry", crs=CRS)


def test_polygons_cover_rules_both_ways() -> None:
    truth = _gdf([{"geometry": box(0, 0, 10, 10)}, {"geometry": box(100, 0, 110, 10)}])
    pred = _gdf([
        {"geometry": box(0, 0, 10, 2.5)},        # covers exactly 25% of truth 1: found
        {"geometry": box(100, 0, 110, 2.4)},     # 24%: truth 2 missed (pred is not a FA: 100%)
        {"geometry": box(50, 50, 60, 60)},       # false alarm
        {"geometry": box(7, 0, 19, 4)},          # 48 m2, 12 on truth (25%): not a FA
        {"geometry": box(7, 5, 20, 9)},          # 52 m2, 12 on truth (< 25%): FA
    ])
    s = object_scores_from_polygons(pred, truth, min_area_m2=8.0)
    assert (s.n_true, s.n_found, s.n_pred, s.n_false_alarm) == (2, 1, 5, 2)


def test_polygons_min_area_and_crs() -> None:
    truth = _gdf([{"geometry": box(0, 0, 2, 2)}, {"geometry": box(10, 10, 20, 20)}])
    pred = _gdf([{"geometry": box(10, 10, 20, 15)}, {"geometry": box(50, 50, 52, 52)}])
    s = object_scores_from_polygons(pred, truth, min_area_m2=8.0)
    assert s == ObjectScores(n_true=1, n_found=1, n_pred=1, n_false_alarm=0)
    # Predictions in another CRS are reprojected; a geographic truth is a user error.
    s2 = object_scores_from_polygons(pred.to_crs("EPSG:6675"), truth, min_area_m2=8.0)
    assert s2 == s
    with pytest.raises(UnusableCRS):
        object_scores_from_polygons(pred, truth.set_crs("EPSG:4326", allow_override=True))


def test_polygons_empty() -> None:
    empty = gpd.GeoDataFrame({"geometry": []}, geometry="geometry", crs=CRS)
    truth = _gdf([{"geometry": box(0, 0, 10, 10)}])
    assert object_scores_from_polygons(empty, truth).recall == 0.0
    assert object_scores_from_polygons(empty, truth).precision == 1.0
    assert object_scores_from_polygons(truth, empty).precision == 0.0


def test_overlapping_predictions_do_not_double_count() -> None:
    truth = _gdf([{"geometry": box(0, 0, 10, 10)}])
    pred = _gdf([{"geometry": box(0, 0, 10, 2)}, {"geometry": box(0, 0, 10, 2)},
                 {"geometry": box(0, 1, 10, 3)}])   # union covers 30%, areas sum to 60%
    s = object_scores_from_polygons(pred, truth, min_area_m2=1.0)
    assert s.n_found == 1
    pred2 = _gdf([{"geometry": box(0, 0, 10, 2)}, {"geometry": box(0, 0, 10, 2)}])
    assert object_scores_from_polygons(pred2, truth, min_area_m2=1.0).n_found == 0


def test_channel_and_change_type_scores() -> None:
    truth = _gdf([
        {"change_id": 1, "change_type": "new", "channel": "new", "地番": "1",
         "geometry": box(0, 0, 10, 10)},
        {"change_id": 2, "change_type": "rebuilt", "channel": "demolished", "地番": "2",
         "geometry": box(20, 0, 30, 10)},
        {"change_id": 2, "change_type": "rebuilt", "channel": "new", "地番": "2",
         "geometry": box(20, 0, 30, 10)},
        {"change_id": 3, "change_type": "demolished", "channel": "demolished", "地番": "3",
         "geometry": box(40, 0, 50, 10)},
    ])
    pred = _gdf([
        {"channel": "new", "geometry": box(0, 0, 10, 10)},
        {"channel": "new", "geometry": box(20, 0, 30, 10)},
        {"channel": "new", "geometry": box(40, 0, 50, 10)},      # wrong channel: a FA for new
    ])
    per = channel_scores(pred, truth)
    assert per["new"] == ObjectScores(2, 2, 3, 1)
    assert per["demolished"] == ObjectScores(2, 0, 0, 0)
    types = change_type_recall(pred, truth)
    assert types["new"].recall == 1.0
    assert (types["rebuilt"].n_true, types["rebuilt"].n_found) == (2, 1)
    assert types["demolished"].recall == 0.0


def test_parcel_recall() -> None:
    truth = _gdf([{"地番": "1-2", "geometry": box(0, 0, 1, 1)},
                  {"地番": "3", "geometry": box(0, 0, 1, 1)},
                  {"地番": "3", "geometry": box(2, 0, 3, 1)},     # same parcel twice counts once
                  {"地番": None, "geometry": box(2, 0, 3, 1)}])
    cands = _gdf([{"地番": "1-2 ", "geometry": box(0, 0, 1, 1)},
                  {"地番": "9", "geometry": box(0, 0, 1, 1)}])
    assert parcel_recall(cands, truth) == 0.5
    assert parcel_recall(cands, truth.iloc[:0]) == 1.0
    with pytest.raises(UserInputError, match="地番"):
        parcel_recall(cands.drop(columns="地番"), truth)
