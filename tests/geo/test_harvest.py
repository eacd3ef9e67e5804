"""Harvest: survey outcomes and the missed layer become labels and observed accuracy."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest
from shapely.geometry import MultiPolygon, box

from idou.errors import UserInputError
from idou.geo.review.harvest import harvest

from ..gpkg_edits import staff_edit

_spec = importlib.util.spec_from_file_location(
    "review_builders", Path(__file__).with_name("review_builders.py"))
assert _spec is not None and _spec.loader is not None
builders = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(builders)


def reviewed(tmp_path: Path) -> Path:
    """parcel 1 taxable (extension + new), change on parcel 2 a false alarm, parcel 3 re-check,
    one demolished building missed by the model drawn in `missed`."""
    path = tmp_path / "run.gpkg"
    builders.write_run(path, orthophotos=(tmp_path / "2024.tif", tmp_path / "2025.tif"))
    with staff_edit(path) as con:
        con.execute("UPDATE candidate_parcels SET 調査状況 = '課税対象' WHERE parcel_id = 'A町 1'")
        con.execute("UPDATE candidate_parcels SET 調査状況 = '要再調査' WHERE parcel_id = 'A町 3'")
        con.execute("UPDATE changes SET 調査状況 = '誤検出' WHERE score_max = 0.55")
    missed = gpd.GeoDataFrame({"channel": ["demolished", None]},
                              geometry=[MultiPolygon([box(100, 5, 110, 12)]),
                                        MultiPolygon([box(70, 20, 75, 25)])],
                              crs=builders.CRS)
    pyogrio.write_dataframe(missed, path, layer="missed", append=True)
    return path


def test_labels_and_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    report = harvest(reviewed(tmp_path), tmp_path / "labels")
    labels = pyogrio.read_dataframe(tmp_path / "labels" / "labels.gpkg", layer="labels")
    assert labels.crs.to_epsg() == 6677
    rows = sorted(zip(labels["source"], labels["channel"], labels["label"],
                      labels["異動区分"], strict=True))
    assert rows == [
        ("missed", "demolished", "positive", "滅失"),
        ("missed", "new", "positive", "新築"),
        ("review", "demolished", "ignore", "滅失"),   # parcel 3: 要再調査
        ("review", "new", "negative", "新築"),        # own status 誤検出
        ("review", "new", "positive", "増築"),        # parcel 1 課税対象
        ("review", "new", "positive", "新築"),        # spans parcels 1 and 2
    ]
    saved = json.loads((tmp_path / "labels" / "harvest.json").read_text(encoding="utf-8"))
    assert saved["after"].endswith("2025.tif") and saved["before"].endswith("2024.tif")
    assert saved["crs"] == "EPSG:6677"
    assert saved["counts"] == {"confirmed": 2, "false_alarms": 1, "ignored": 1, "missed": 2}
    assert saved["precision"] == pytest.approx(2 / 3, abs=1e-4)
    assert saved["recall"] == pytest.approx(2 / 4)
    assert saved["recall_by_channel"]["demolished"] == 0.0
    assert saved["model"]["model_sha256"] == "0" * 64
    assert report.precision == saved["precision"]


def test_unreviewed_run_gives_no_labels_and_no_ratios(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    builders.write_run(tmp_path / "run.gpkg")
    report = harvest(tmp_path / "run.gpkg", tmp_path / "out")
    assert report.counts == {"confirmed": 0, "false_alarms": 0, "ignored": 0, "missed": 0}
    assert report.precision is None and report.recall is None
    assert pyogrio.read_info(tmp_path / "out" / "labels.gpkg", layer="labels")["features"] == 0


def test_metrics_go_to_mlflow_when_a_tracking_uri_is_set(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    logged: dict[str, object] = {}

    class FakeRun:
        def __enter__(self) -> FakeRun:
            return self

        def __exit__(self, *args: object) -> None:
            logged["closed"] = True

    fake = types.SimpleNamespace(
        set_experiment=lambda name: logged.__setitem__("experiment", name),
        start_run=lambda run_name: FakeRun(),
        set_tags=lambda tags: logged.__setitem__("tags", tags),
        set_tag=lambda key, value: None,
        log_metrics=lambda metrics: logged.__setitem__("metrics", metrics))
    # the real store (sqlite, set by conftest) takes ~15 s to create; the calls are the same
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    report = harvest(reviewed(tmp_path), tmp_path / "labels")
    assert logged == {}   # geo never imports mlflow: the CLI logs through training
    from idou.training.review_tracking import log_harvest

    log_harvest(report)
    assert logged["experiment"] == "idou-field-review" and logged["closed"] is True
    metrics = logged["metrics"]
    assert isinstance(metrics, dict)
    assert metrics["observed_precision"] == pytest.approx(2 / 3, abs=1e-4)
    assert metrics["observed_recall"] == pytest.approx(0.5)
    assert metrics["count_missed"] == 2.0


def test_not_a_review_file_is_one_sentence(tmp_path: Path) -> None:
    other = tmp_path / "other.gpkg"
    builders.parcels().to_file(other, layer="fude")
    with pytest.raises(UserInputError, match=r"other\.gpkg has no 'changes' layer"):
        harvest(other, tmp_path / "out")


def test_review_values_are_compared_after_normalising_whitespace_and_width(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A trailing space, a full-width space or full-width letters do not drop a row (it used
    to turn a 2/3 precision into 1/1); the counts equal those of the clean file."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = reviewed(tmp_path)
    with staff_edit(path) as con:
        con.execute("UPDATE candidate_parcels SET 調査状況 = '課税対象 ' WHERE parcel_id = 'A町 1'")
        con.execute("UPDATE candidate_parcels SET 調査状況 = '　要再調査' "
                    "WHERE parcel_id = 'A町 3'")
        con.execute("UPDATE changes SET 調査状況 = '誤検出\t' WHERE score_max = 0.55")
        con.execute("UPDATE missed SET channel = 'ｄｅｍｏｌｉｓｈｅｄ ' "
                    "WHERE channel = 'demolished'")
        con.execute("UPDATE missed SET channel = ' NEW' WHERE channel IS NULL")
    report = harvest(path, tmp_path / "labels")
    assert report.counts == {"confirmed": 2, "false_alarms": 1, "ignored": 1, "missed": 2}
    assert report.precision == pytest.approx(2 / 3, abs=1e-4)
    assert report.counts_by_channel["demolished"]["missed"] == 1
    assert report.unknown_values == {}


def test_unknown_review_values_are_reported_never_silently_dropped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from idou.geo.review.harvest import unknown_values_sentences

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = reviewed(tmp_path)
    with staff_edit(path) as con:
        con.execute("UPDATE changes SET 調査状況 = '課税済' WHERE score_max = 0.55")
        con.execute("UPDATE missed SET channel = 'gone' WHERE channel = 'demolished'")
    report = harvest(path, tmp_path / "labels")
    assert report.unknown_values == {"changes.調査状況": {"課税済": 1},
                                     "missed.channel": {"gone": 1}}
    saved = json.loads((tmp_path / "labels" / "harvest.json").read_text(encoding="utf-8"))
    assert saved["unknown_values"] == report.unknown_values
    sentences = unknown_values_sentences(report, path)
    assert len(sentences) == 2
    assert all(s.startswith("run.gpkg: ") and s.endswith(".") for s in sentences)
    assert "'課税済' (1)" in sentences[0] and "課税対象" in sentences[0]


def test_missed_channel_in_japanese_is_understood(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = reviewed(tmp_path)
    with staff_edit(path) as con:
        con.execute("UPDATE missed SET channel = '滅失' WHERE channel = 'demolished'")
        con.execute("UPDATE missed SET channel = '新築' WHERE channel IS NULL")
    report = harvest(path, tmp_path / "labels")
    assert report.counts_by_channel["demolished"]["missed"] == 1
    assert report.counts_by_channel["new"]["missed"] == 1
    assert report.unknown_values == {}
