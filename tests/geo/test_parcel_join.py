"""Candidate parcels: a change spanning parcels counts in each with its share; priority."""

from __future__ import annotations

import geopandas as gpd
import pytest
from shapely.geometry import box

from idou.geo.changes.classify import classify_changes
from idou.geo.changes.parcel_join import CANDIDATE_COLUMNS, join_parcels

CRS = "EPSG:6677"


def setup() -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    parcels = gpd.GeoDataFrame(
        {"parcel_id": ["A町 1", "A町 2", "A町 3"], "地番": ["1", "2", "3"],
         "所在": ["A町"] * 3},
        geometry=[box(0, 0, 20, 20), box(20, 0, 40, 20), box(40, 0, 60, 20)], crs=CRS)
    geoms = [box(14, 5, 24, 15), box(45, 5, 55, 15), box(2, 2, 6, 6)]
    changes = gpd.GeoDataFrame(
        {"channel": ["new", "demolished", "new"], "area_m2": [g.area for g in geoms],
         "score_max": [0.8, 0.95, 0.6], "score_mean": [0.6, 0.8, 0.5]},
        geometry=geoms, crs=CRS)
    return classify_changes(changes, None, parcels), parcels


def test_spanning_change_counts_in_each_parcel_with_its_share() -> None:
    changes, parcels = setup()
    out = join_parcels(changes, parcels).set_index("parcel_id")
    # change 0 is 100 m2: 60 m2 on parcel 1, 40 m2 on parcel 2
    assert out.loc["A町 1", "changed_area_m2"] == pytest.approx(60 + 16)
    assert out.loc["A町 2", "changed_area_m2"] == pytest.approx(40)
    assert out.loc["A町 1", "n_changes"] == 2
    assert out.loc["A町 2", "n_changes"] == 1
    assert "60.0㎡(60%)" in out.loc["A町 1", "shares"]
    assert "40.0㎡(40%)" in out.loc["A町 2", "shares"]
    assert out.loc["A町 3", "異動区分"] == "滅失"
    assert out.loc["A町 1", "異動区分"] == "新築"


def test_priority_ranks_by_score_then_area() -> None:
    changes, parcels = setup()
    out = join_parcels(changes, parcels)
    assert out["parcel_id"].tolist() == ["A町 3", "A町 1", "A町 2"]
    assert out["priority"].tolist() == [1, 2, 3]
    assert out["score_max"].tolist() == [0.95, 0.8, 0.8]
    assert list(out.columns) == CANDIDATE_COLUMNS + ["geometry"]
    assert out.geometry.iloc[0].equals(box(40, 0, 60, 20))


def test_slivers_on_a_neighbour_are_ignored() -> None:
    parcels = gpd.GeoDataFrame({"parcel_id": ["1", "2"], "地番": ["1", "2"], "所在": ["A"] * 2},
                               geometry=[box(0, 0, 20, 20), box(20, 0, 40, 20)], crs=CRS)
    geoms = [box(5, 5, 20.2, 15)]  # 2 m2 over the boundary
    changes = classify_changes(gpd.GeoDataFrame(
        {"channel": ["new"], "area_m2": [geoms[0].area], "score_max": [0.9],
         "score_mean": [0.8]}, geometry=geoms, crs=CRS), None, parcels)
    out = join_parcels(changes, parcels)
    assert out["parcel_id"].tolist() == ["1"]


def test_no_changes_gives_an_empty_layer() -> None:
    _, parcels = setup()
    empty = classify_changes(gpd.GeoDataFrame(
        {"channel": [], "area_m2": [], "score_max": [], "score_mean": []},
        geometry=gpd.GeoSeries([], crs=CRS), crs=CRS), None, parcels)
    out = join_parcels(empty, parcels)
    assert out.empty and list(out.columns) == CANDIDATE_COLUMNS + ["geometry"]
