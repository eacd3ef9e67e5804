"""The building map as evidence, on hand-made footprints and probability rasters (0.4 m grid)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio.features
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window
from shapely.geometry import box

from idou.geo.changes.building_evidence import (
    REASON,
    empty_unmapped,
    footprint_scores,
    unmapped_buildings,
)
from idou.geo.changes.classify import candidate_changes, classify_changes
from idou.geo.changes.parcel_join import join_parcels
from idou.geo.raster.grid import Grid

CRS_JGD = CRS.from_epsg(6677)
GRID = Grid(CRS_JGD, Affine(0.4, 0, 0.0, 0, -0.4, 80.0), 200, 200)  # 80 m x 80 m


class Raster:
    """uint8 ``(2, H, W)`` probabilities on GRID, read by windows like the disk store."""

    def __init__(self, *channels: list[tuple[object, float]]) -> None:
        self.data = np.zeros((2, GRID.height, GRID.width), dtype=np.uint8)
        for k, shapes in enumerate(channels):
            for geom, p in shapes:
                mask = rasterio.features.geometry_mask([geom], (GRID.height, GRID.width),
                                                       GRID.transform, invert=True)
                self.data[k][mask] = round(p * 255)

    def read(self, window: Window) -> np.ndarray:
        r, c = int(window.row_off), int(window.col_off)
        return self.data[:, r:r + int(window.height), c:c + int(window.width)]


def frame(geoms: list[object], **columns: list[object]) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries(geoms), crs=CRS_JGD)


def changes(*rows: tuple[str, object]) -> gpd.GeoDataFrame:
    return frame([g for _, g in rows], channel=[c for c, _ in rows],
                 area_m2=[g.area for _, g in rows], score_max=[0.9] * len(rows),  # type: ignore[attr-defined]
                 score_mean=[0.8] * len(rows))


def shifted(geom: object, dx: float) -> object:
    from shapely import affinity

    return affinity.translate(geom, dx, 0)  # type: ignore[arg-type]


# demolished house A and standing house B next to it (0.5 m apart), as the photo shows them
HOUSE_A, HOUSE_B = box(10, 10, 20, 18), box(20.5, 10, 30.5, 18)
BLOB_ON_B = box(27.5, 10, 30.5, 18)  # a false alarm over a third of B
# the building map drawn 1.5 m west of the photo (misregistration / lean)
MAP = frame([shifted(HOUSE_A, -1.5), shifted(HOUSE_B, -1.5)], building_id=["A", "B"])
DEMOLISHED = Raster([], [(HOUSE_A, 0.9), (BLOB_ON_B, 0.9)])


def test_footprint_scoring_tolerates_an_offset_map() -> None:
    scores = footprint_scores(DEMOLISHED, GRID, MAP.geometry)
    assert scores.score[0] >= 0.85  # A: demolished although its footprint is 1.5 m off
    assert scores.score[1] <= 0.05  # B: the blob and the 1 m of A it overlaps do not make it
    assert scores.score_max[1] >= 0.85  # ... which a single pixel (the maximum) would


def test_a_footprint_off_the_grid_has_no_score() -> None:
    scores = footprint_scores(DEMOLISHED, GRID, frame([box(500, 500, 510, 510)]).geometry)
    assert np.isnan(scores.score[0])


def test_demolished_footprint_is_the_candidate_and_change_off_the_map_is_other() -> None:
    scores = footprint_scores(DEMOLISHED, GRID, MAP.geometry)
    tree_blob = box(50, 50, 56, 56)  # demolished change where no building is registered
    out = classify_changes(changes(("demolished", HOUSE_A), ("demolished", BLOB_ON_B),
                                   ("demolished", tree_blob)), MAP, None, footprints=scores)
    demolished = out[out["change_type"] == "demolished"]
    assert list(demolished["building_ids"]) == ["A"]
    assert demolished.geometry.iloc[0].equals(MAP.geometry.iloc[0])  # the footprint itself
    assert list(demolished["異動区分"]) == ["滅失"]
    other = out[out["change_type"] == "other"].set_index("building_ids")
    assert set(other["異動区分"]) == {"その他の変化"}
    assert "B" in other.index and "候補にしない" in other.loc["B", REASON]
    assert other.loc["", "footprint_score"] != other.loc["", "footprint_score"]  # NaN
    assert "登録家屋のない場所" in other.loc["", REASON]


def test_change_off_the_map_makes_no_candidate_parcel_unless_asked() -> None:
    parcels = frame([box(45, 45, 65, 65), box(5, 5, 22, 25)], parcel_id=["p1", "p2"],
                    地番=["1-1", "2-1"], 所在=["本町一丁目", "本町一丁目"])
    scores = footprint_scores(DEMOLISHED, GRID, MAP.geometry)
    out = classify_changes(changes(("demolished", box(50, 50, 56, 56)),
                                   ("demolished", HOUSE_A)), MAP, parcels, footprints=scores)
    assert list(join_parcels(candidate_changes(out), parcels)["地番"]) == ["2-1"]
    kept = join_parcels(candidate_changes(out, keep_unmatched=True), parcels)
    assert set(kept["地番"]) == {"1-1", "2-1"}
    assert kept.set_index("地番").loc["1-1", "主な異動区分"] == "その他の変化"


def test_without_footprint_scores_the_old_rules_stand() -> None:
    out = classify_changes(changes(("demolished", box(50, 50, 56, 56))), MAP, None)
    assert list(out["change_type"]) == ["demolished"]
    assert REASON not in out


STANDING = frame([box(40, 40, 50, 48)], building_id=["S"])
NOTHING = Raster([], [])


@pytest.mark.parametrize("change, expected, area", [
    (box(41.5, 40, 51.5, 48), "other", None),  # the standing house itself, drawn 1.5 m off
    (box(40, 40, 54, 48).difference(box(50, 40, 54, 42)).difference(box(50, 46, 54, 48)),
     "extension", 16.0),  # the house and a 4 m x 4 m wing
    (box(60, 40, 68, 48), "new", 64.0),  # away from every footprint
    (box(49.8, 41, 51.4, 48), "extension", 9.8),  # a narrow (1.4 m) wing, seen alone
    (box(38, 40, 50, 48), "other", None),  # the house re-seen 2 m off to the west
], ids=["same_house_misregistered", "wing_outside", "away", "narrow_wing", "two_metres_off"])
def test_extension_needs_new_area_outside_the_standing_house(change: object, expected: str,
                                                            area: float | None) -> None:
    scores = footprint_scores(NOTHING, GRID, STANDING.geometry)
    out = classify_changes(changes(("new", change)), STANDING, None, footprints=scores)
    assert list(out["change_type"]) == [expected]
    if area is not None:
        assert out["area_m2"].iloc[0] == pytest.approx(area, abs=0.5)
    if expected == "other":
        assert "最小面積" in out[REASON].iloc[0]


def test_rebuilt_needs_a_demolished_footprint_with_new_built_area_over_it() -> None:
    old = frame([box(10, 40, 20, 48), box(40, 40, 50, 48)], building_id=["R", "S"])
    raster = Raster([], [(box(10, 40, 20, 48), 0.8)])
    scores = footprint_scores(raster, GRID, old.geometry)
    out = classify_changes(changes(("demolished", box(10, 40, 20, 48)),
                                   ("new", box(11, 41, 21, 49)),  # the new house on R's lot
                                   ("new", box(40.5, 40, 50.5, 48))),  # S, standing, re-seen
                           old, None, footprints=scores)
    rebuilt = out[out["change_type"] == "rebuilt"]
    assert sorted(rebuilt["channel"]) == ["demolished", "new"]
    assert rebuilt[rebuilt["channel"] == "demolished"]["building_ids"].iloc[0] == "R"
    assert "建替" in rebuilt[REASON].iloc[0]
    assert out[out["building_ids"] == "S"]["change_type"].tolist() == ["other"]


def test_unmapped_buildings_are_present_in_both_dates_on_no_footprint() -> None:
    unmapped, mapped, built = box(10, 60, 20, 70), box(40, 60, 50, 70), box(60, 60, 70, 70)
    presence = Raster([(unmapped, 0.9), (mapped, 0.9)],
                      [(unmapped, 0.9), (shifted(mapped, 1.0), 0.9), (built, 0.9)])
    footprints = frame([mapped], building_id=["M"])
    found = unmapped_buildings(presence, GRID, footprints)
    assert len(found) == 1
    assert found.geometry.iloc[0].intersection(unmapped).area >= 0.9 * unmapped.area
    assert found["area_m2"].iloc[0] == pytest.approx(100, abs=8)
    assert "家屋現況図" in found[REASON].iloc[0]


def test_without_presence_outputs_the_layer_is_empty_and_run_info_says_why() -> None:
    from idou.inference.contract import ModelContract
    from idou.inference.footprint_evidence import building_evidence

    contract = ModelContract(model_name="m", model_version="1.0.0")
    evidence = building_evidence(DEMOLISHED, None, GRID, contract, MAP)
    assert evidence.unmapped is not None and evidence.unmapped.empty
    assert list(evidence.unmapped.columns) == list(empty_unmapped(CRS_JGD).columns)
    assert "declares no building-presence output" in str(evidence.run_info["unmapped_buildings"])
    assert building_evidence(DEMOLISHED, None, GRID, contract, None).scores is None


def test_a_house_rebuilt_on_the_same_spot_is_rebuilt() -> None:
    old = frame([box(10, 40, 20, 48)], building_id=["R"])
    scores = footprint_scores(NOTHING, GRID, old.geometry)  # its demolished score stays low
    new_roof = box(10.5, 40.5, 19.5, 47.5)
    agree = classify_changes(changes(("new", new_roof), ("demolished", box(12, 42, 15, 45))),
                             old, None, footprints=scores)
    assert sorted(agree["change_type"]) == ["rebuilt", "rebuilt"]
    row = agree[agree["channel"] == "demolished"]
    assert row["building_ids"].iloc[0] == "R" and row.geometry.iloc[0].equals(old.geometry[0])
    alone = classify_changes(changes(("new", new_roof)), old, None, footprints=scores,
                             demolished_threshold=0.16)
    assert list(alone["change_type"]) == ["other"]  # a repainted roof flags one channel only
    # a weak demolished response inside (a pixel over the channel's threshold, no polygon):
    # the new change is a 建替 candidate, the footprint is not called demolished
    weak = footprint_scores(Raster([], [(box(14, 43, 16, 45), 0.3)]), GRID, old.geometry)
    some = classify_changes(changes(("new", new_roof)), old, None, footprints=weak,
                            demolished_threshold=0.16)
    assert list(some["change_type"]) == ["rebuilt"] and list(some["channel"]) == ["new"]
    part = classify_changes(changes(("new", box(10.5, 40.5, 14.5, 47.5))), old, None,
                            footprints=weak, demolished_threshold=0.16)
    assert list(part["change_type"]) == ["other"]  # a small part of the roof: re-seen


def test_change_off_the_map_stays_other_on_a_parcel_with_a_rebuilt_house() -> None:
    old = frame([box(10, 40, 20, 48)], building_id=["R"])
    raster = Raster([], [(box(10, 40, 20, 48), 0.8)])
    parcel = frame([box(5, 35, 40, 60)], parcel_id=["p"], 地番=["3-1"], 所在=["本町"])
    out = classify_changes(changes(("demolished", box(10, 40, 20, 48)),
                                   ("new", box(25, 40, 33, 48)),  # new house on the same lot
                                   ("demolished", box(30, 52, 36, 58))),  # a tree felled
                           old, parcel, footprints=footprint_scores(raster, GRID, old.geometry))
    by_type = out.groupby("change_type")["channel"].apply(sorted).to_dict()
    assert by_type == {"rebuilt": ["demolished", "new"], "other": ["demolished"]}


def test_a_presence_model_run_without_kept_presence_says_so() -> None:
    from idou.inference.contract import ModelContract
    from idou.inference.footprint_evidence import building_evidence

    contract = ModelContract(extra_outputs=("presence",))
    evidence = building_evidence(DEMOLISHED, None, GRID, contract, MAP)
    assert evidence.unmapped is not None and evidence.unmapped.empty
    assert "given no building presence" in str(evidence.run_info["unmapped_buildings"])
    presence = Raster([(box(10, 60, 20, 70), 0.9)], [(box(10, 60, 20, 70), 0.9)])
    found = building_evidence(DEMOLISHED, presence, GRID, contract, MAP)
    assert found.unmapped is not None and len(found.unmapped) == 1
    assert "1 buildings present in both photos" in str(found.run_info["unmapped_buildings"])
