"""Per-district summary: counts and areas by class per 所在, CSV + HTML + map PNG."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from idou.geo.review.district_summary import write_district_summary

_spec = importlib.util.spec_from_file_location(
    "review_builders", Path(__file__).with_name("review_builders.py"))
assert _spec is not None and _spec.loader is not None
builders = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(builders)


def test_counts_and_areas_by_district(tmp_path: Path) -> None:
    builders.write_run(tmp_path / "run.gpkg")
    files = write_district_summary(tmp_path / "run.gpkg", tmp_path / "summary")
    table = pd.read_csv(files.csv, encoding="utf-8-sig").set_index("地区")
    assert list(table.index) == ["A町", "B町", "合計"]
    assert table.loc["A町", "新築_件数"] == 2
    assert table.loc["A町", "増築_件数"] == 1
    assert table.loc["A町", "新築_面積㎡"] == pytest.approx(200 + 25)
    assert table.loc["B町", "滅失_件数"] == 1
    assert table.loc["B町", "滅失_面積㎡"] == pytest.approx(100)  # snapped to the footprint
    assert table.loc["合計", "合計_件数"] == 4
    assert table.loc["A町", "調査対象筆数"] == 2
    assert table.loc["合計", "未確認_件数"] == 4 and table.loc["合計", "課税対象_件数"] == 0
    page = files.html.read_text(encoding="utf-8")
    assert "A町" in page and 'src="district_summary.png"' in page
    assert files.png.stat().st_size > 5000


def test_results_entered_on_candidate_parcels_count_as_harvest_reads_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Staff guide §4.4: 調査状況 on 調査対象の筆 alone is enough, for summary and harvest."""
    from idou.geo.review.harvest import harvest

    from ..gpkg_edits import staff_edit

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    builders.write_run(tmp_path / "run.gpkg")
    with staff_edit(tmp_path / "run.gpkg") as con:
        for parcel, status in (("A町 1", "課税対象"), ("A町 2", "誤検出"), ("A町 3", "要再調査")):
            con.execute("UPDATE candidate_parcels SET 調査状況 = ? WHERE parcel_id = ?",
                        (status, parcel))
    table = write_district_summary(tmp_path / "run.gpkg", tmp_path / "summary").table
    total = table.set_index("地区").loc["合計"]
    # extension on parcel 1 and the new building on parcels 1+2 (課税対象 wins), the false
    # alarm on parcel 2, the demolished building on parcel 3
    assert (total["未確認_件数"], total["課税対象_件数"], total["誤検出_件数"],
            total["要再調査_件数"]) == (0, 2, 1, 1)
    report = harvest(tmp_path / "run.gpkg", tmp_path / "labels")
    assert report.counts == {"confirmed": 2, "false_alarms": 1, "ignored": 1, "missed": 0}


def test_a_change_s_own_result_wins_over_its_parcel_s(tmp_path: Path) -> None:
    from ..gpkg_edits import staff_edit

    builders.write_run(tmp_path / "run.gpkg")
    with staff_edit(tmp_path / "run.gpkg") as con:
        con.execute("UPDATE candidate_parcels SET 調査状況 = '課税対象'")
        con.execute("UPDATE changes SET 調査状況 = '対象外' WHERE 異動区分 = '増築'")
    table = write_district_summary(tmp_path / "run.gpkg", tmp_path / "summary").table
    total = table.set_index("地区").loc["合計"]
    assert (total["課税対象_件数"], total["対象外_件数"]) == (3, 1)


def test_areas_are_rounded_once_and_agree_with_the_batch_summary(tmp_path: Path) -> None:
    """Totals are the exact sum rounded, not a sum of rounded rows (no float noise)."""
    import geopandas as gpd
    from shapely.geometry import box

    from idou.inference.batch_report import changes_by_class

    widths = [1.4, 3.54, 3.29, 1.77, 2.49]
    changes = gpd.GeoDataFrame(
        {"異動区分": ["滅失"] * 5, "所在": ["A町", "B町", "C町", "D町", "E町"]},
        geometry=[box(0, 0, w, 10.07) for w in widths], crs=builders.CRS)
    exact = sum(w * 10.07 for w in widths)
    assert round(sum(round(w * 10.07, 1) for w in widths), 1) != round(exact, 1)  # the trap
    from idou.geo.review.district_summary import summarize_districts

    table = summarize_districts(changes, None).set_index("地区")
    assert table.loc["合計", "滅失_面積㎡"] == round(exact, 1)
    assert table.loc["合計", "合計_面積㎡"] == round(exact, 1)
    path = tmp_path / "run.gpkg"
    changes.to_file(path, layer="changes")
    assert changes_by_class(path)["滅失"]["area_m2"] == round(exact, 1)
    csv = tmp_path / "t.csv"
    table.reset_index().to_csv(csv, index=False)
    assert all(len(cell.split(".")[-1]) <= 1 for line in csv.read_text().splitlines()[1:]
               for cell in line.split(",")[1:])
