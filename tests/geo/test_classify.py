"""Change classes on hand-made geometries: 新築, 増築, 滅失, 建替, and stable ids."""

from __future__ import annotations

import geopandas as gpd
import pytest
from shapely.geometry import box

from idou.geo.changes.classify import classify_changes

CRS = "EPSG:6677"


def changes(*rows: tuple[str, tuple[float, float, float, float]]) -> gpd.GeoDataFrame:
    geoms = [box(*b) for _, b in rows]
    return gpd.GeoDataFrame({"channel": [c for c, _ in rows],
                             "area_m2": [g.area for g in geoms],
                             "score_max": [0.9] * len(rows), "score_mean": [0.7] * len(rows)},
                            geometry=geoms, crs=CRS)


def buildings(*boxes: tuple[float, float, float, float]) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"building_id": [f"B{i + 1}" for i in range(len(boxes))]},
                            geometry=[box(*b) for b in boxes], crs=CRS)


def parcels(*boxes: tuple[float, float, float, float]) -> gpd.GeoDataFrame:
    n = len(boxes)
    return gpd.GeoDataFrame({"parcel_id": [f"A町 {i + 1}" for i in range(n)],
                             "地番": [str(i + 1) for i in range(n)], "所在": ["A町"] * n},
                            geometry=[box(*b) for b in boxes], crs=CRS)


def test_without_buildings_new_is_shinchiku_and_demolished_is_messhitsu() -> None:
    out = classify_changes(changes(("new", (0, 0, 10, 10)), ("demolished", (50, 50, 60, 60))),
                           None, None)
    assert out["change_type"].tolist() == ["new", "demolished"]
    assert out["異動区分"].tolist() == ["新築", "滅失"]


def test_new_touching_an_existing_footprint_is_extension() -> None:
    out = classify_changes(
        changes(("new", (10, 0, 14, 10)), ("new", (40, 40, 50, 50))),
        buildings((0, 0, 10, 10)), None)
    assert out["異動区分"].tolist() == ["増築", "新築"]
    assert out["building_ids"].tolist() == ["B1", ""]


def test_footprint_covered_half_by_demolished_change_is_messhitsu_snapped() -> None:
    out = classify_changes(changes(("demolished", (0, 0, 6, 10))),
                           buildings((0, 0, 10, 10)), None)
    assert out["異動区分"].tolist() == ["滅失"]
    assert out["building_ids"].tolist() == ["B1"]
    assert out.geometry.iloc[0].equals(box(0, 0, 10, 10))
    assert out["area_m2"].iloc[0] == pytest.approx(100.0)


def test_footprint_covered_less_than_half_is_not_snapped() -> None:
    out = classify_changes(changes(("demolished", (0, 0, 4, 10))),
                           buildings((0, 0, 10, 10)), None)
    assert out["building_ids"].tolist() == [""]
    assert out["area_m2"].iloc[0] == pytest.approx(40.0)


def test_new_next_to_a_demolished_footprint_is_not_extension_but_rebuilt() -> None:
    out = classify_changes(
        changes(("demolished", (0, 0, 10, 10)), ("new", (2, 2, 12, 12))),
        buildings((0, 0, 10, 10)), None)
    assert out["異動区分"].tolist() == ["建替", "建替"]


def test_demolished_and_new_on_one_parcel_are_rebuilt() -> None:
    out = classify_changes(
        changes(("demolished", (1, 1, 9, 9)), ("new", (12, 1, 18, 9)),
                ("new", (31, 1, 39, 9))),
        None, parcels((0, 0, 20, 10), (30, 0, 40, 10)))
    assert out["異動区分"].tolist() == ["建替", "建替", "新築"]
    assert out["地番"].tolist() == ["1", "1", "2"]
    assert out["所在"].tolist() == ["A町"] * 3


def test_change_ids_are_stable_and_differ_by_class() -> None:
    first = classify_changes(changes(("new", (0, 0, 10, 10))), None, None)
    again = classify_changes(changes(("new", (0.1, 0, 10, 10.1))), None, None)
    other = classify_changes(changes(("demolished", (0, 0, 10, 10))), None, None)
    assert first["change_id"].iloc[0] == again["change_id"].iloc[0]
    assert first["change_id"].iloc[0] != other["change_id"].iloc[0]


def test_unknown_channel_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown channel"):
        classify_changes(changes(("moved", (0, 0, 1, 1))), None, None)


def test_empty_input_gives_empty_output_with_columns() -> None:
    out = classify_changes(changes(), None, None)
    assert out.empty
    assert {"change_id", "change_type", "異動区分"} <= set(out.columns)


@pytest.mark.slow
def test_classes_of_the_sample_generator_truth_are_recovered() -> None:
    """The project's own synthetic flights know each change's class: the rules must agree."""
    from idou.geo.synthetic.flight import make_flight_pair

    pair = make_flight_pair(0, 768)
    truth = pair.truth
    detected = truth[["channel", "geometry"]].copy()
    detected["geometry"] = detected.geometry.buffer(0.3, join_style="mitre")  # a bit fat
    detected["area_m2"] = detected.area
    detected["score_max"] = 0.9
    detected["score_mean"] = 0.7
    parcels = pair.parcels.copy()
    parcels["parcel_id"] = parcels["所在"] + " " + parcels["地番"]
    out = classify_changes(detected, pair.buildings_before, parcels)
    assert len(set(truth["change_type"])) >= 3, "the sample has too few kinds of change"
    assert out["change_type"].tolist() == truth["change_type"].tolist()
