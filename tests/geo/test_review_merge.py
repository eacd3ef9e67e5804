"""Re-running into a reviewed GeoPackage keeps every edit and marks vanished candidates."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import geopandas as gpd
import pyogrio
from shapely.geometry import MultiPolygon, box

from ..gpkg_edits import staff_edit

_spec = importlib.util.spec_from_file_location(
    "review_builders", Path(__file__).with_name("review_builders.py"))
assert _spec is not None and _spec.loader is not None
builders = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(builders)


def edit(path: Path) -> dict[str, str]:
    """Edit like staff in QGIS: statuses on parcels and changes, and draw a missed building."""
    changes = pyogrio.read_dataframe(path, layer="changes")
    by_class = dict(zip(changes["異動区分"], changes["change_id"], strict=False))
    spanning = changes.loc[changes["area_m2"] == 200.0, "change_id"].item()
    false_alarm = changes.loc[changes["score_max"] == 0.55, "change_id"].item()
    with staff_edit(path) as con:
        con.execute("UPDATE candidate_parcels SET 調査状況 = '課税対象', 調査者 = '田中', "
                    "調査日 = '2025-06-01', 備考 = '母屋の南に増築' WHERE parcel_id = 'A町 1'")
        con.execute("UPDATE candidate_parcels SET 調査状況 = '要再調査', 備考 = '不在' "
                    "WHERE parcel_id = 'A町 3'")
        con.execute("UPDATE changes SET 調査状況 = '誤検出', 調査者 = '佐藤' "
                    "WHERE change_id = ?", (false_alarm,))
        con.execute("UPDATE changes SET 調査状況 = '課税対象', 調査日 = '2025-06-02' "
                    "WHERE change_id = ?", (spanning,))
    missed = gpd.GeoDataFrame({"channel": ["new"], "調査者": ["田中"], "備考": ["車庫"]},
                              geometry=[MultiPolygon([box(100, 30, 105, 35)])],
                              crs=builders.CRS)
    pyogrio.write_dataframe(missed, path, layer="missed", append=True)
    return {"extension": by_class["増築"], "spanning": spanning, "false_alarm": false_alarm}


def test_rerun_with_force_keeps_every_edit(tmp_path: Path) -> None:
    target = tmp_path / "run.gpkg"
    builders.write_run(target)
    ids = edit(target)
    # the model now draws the spanning building 2 m further east (new id), misses the false
    # alarm (row 3) and the demolished building (row 2)
    result = builders.write_run(target, shift=2.0, drop=(2, 3), force=True)
    assert result.merged

    parcels = pyogrio.read_dataframe(target, layer="candidate_parcels").set_index("parcel_id")
    assert parcels.loc["A町 1", "調査状況"] == "課税対象"
    assert parcels.loc["A町 1", "調査者"] == "田中"
    assert str(parcels.loc["A町 1", "調査日"].date()) == "2025-06-01"
    assert parcels.loc["A町 1", "備考"] == "母屋の南に増築"
    assert parcels.loc["A町 1", "検出状況"] == "検出"
    # parcel 3 is no longer a candidate: kept with its edit and marked, not deleted
    assert parcels.loc["A町 3", "調査状況"] == "要再調査"
    assert parcels.loc["A町 3", "備考"] == "不在"
    assert parcels.loc["A町 3", "検出状況"] == "再実行で未検出"
    assert parcels.loc["A町 2", "調査状況"] == "未確認"

    changes = pyogrio.read_dataframe(target, layer="changes")
    assert ids["spanning"] not in set(changes["change_id"])  # the id changed ...
    moved = changes[changes["area_m2"] == 200.0].iloc[0]
    assert moved["調査状況"] == "課税対象"  # ... but the edit followed by overlap
    assert str(moved["調査日"].date()) == "2025-06-02"
    vanished = changes.set_index("change_id").loc[ids["false_alarm"]]
    assert vanished["調査状況"] == "誤検出" and vanished["調査者"] == "佐藤"
    assert vanished["検出状況"] == "再実行で未検出"
    assert result.merge["changes"].matched_by_overlap == 1

    missed = pyogrio.read_dataframe(target, layer="missed")
    assert missed["備考"].tolist() == ["車庫"]


def test_second_rerun_keeps_vanished_rows_once(tmp_path: Path) -> None:
    target = tmp_path / "run.gpkg"
    builders.write_run(target)
    edit(target)
    builders.write_run(target, drop=(2, 3), force=True)
    builders.write_run(target, drop=(2, 3), force=True)
    parcels = pyogrio.read_dataframe(target, layer="candidate_parcels")
    assert parcels["parcel_id"].tolist().count("A町 3") == 1
    changes = pyogrio.read_dataframe(target, layer="changes")
    assert len(changes) == 4
