"""Per-district summary: counts and areas by class per 所在, CSV + HTML + map PNG."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from idou.geo.district_summary import write_district_summary

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
