"""The review GeoPackage: content, schema, styles, atomic write and refusals."""

from __future__ import annotations

import importlib.util
import sqlite3
import zipfile
from pathlib import Path

import pyogrio
import pytest

from idou.geo import gpkg_output
from idou.geo.errors import UserInputError
from idou.geo.gpkg_output import read_run_info

_spec = importlib.util.spec_from_file_location(
    "review_builders", Path(__file__).with_name("review_builders.py"))
assert _spec is not None and _spec.loader is not None
builders = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(builders)


def test_layers_tables_and_run_info(tmp_path: Path) -> None:
    result = builders.write_run(tmp_path / "run.gpkg")
    layers = dict(pyogrio.list_layers(tmp_path / "run.gpkg"))
    assert {"candidate_parcels", "changes", "existing_buildings", "coverage", "missed",
            "run_info", "layer_styles"} <= set(layers)
    assert result.layers == {"candidate_parcels": 3, "changes": 4, "existing_buildings": 2,
                             "coverage": 2, "missed": 0}
    info = read_run_info(tmp_path / "run.gpkg")
    assert info["model_sha256"] == "0" * 64
    assert info["thresholds"] == {"new": 0.4, "demolished": 0.45}
    assert info["recall_target"] == 0.95
    changes = pyogrio.read_dataframe(tmp_path / "run.gpkg", layer="changes")
    assert sorted(changes["異動区分"]) == ["増築", "新築", "新築", "滅失"]
    assert set(changes["調査状況"]) == {"未確認"}
    assert set(changes["検出状況"]) == {"検出"}
    coverage = pyogrio.read_dataframe(tmp_path / "run.gpkg", layer="coverage")
    assert coverage["status"].tolist() == ["processed", "nodata"]


def test_schema_aliases_date_type_and_default_styles(tmp_path: Path) -> None:
    builders.write_run(tmp_path / "run.gpkg")
    info = pyogrio.read_info(tmp_path / "run.gpkg", layer="candidate_parcels")
    types = dict(zip(info["fields"], info["ogr_types"], strict=True))
    assert types["調査日"] == "OFTDate"
    assert info["geometry_type"] == "MultiPolygon"
    with sqlite3.connect(tmp_path / "run.gpkg") as con:
        titles = dict(con.execute("SELECT column_name, title FROM gpkg_data_columns WHERE "
                                  "table_name = 'changes'").fetchall())
        styles = con.execute("SELECT f_table_name, f_geometry_column, useAsDefault, styleQML "
                             "FROM layer_styles").fetchall()
        enum = [v for (v,) in con.execute("SELECT value FROM gpkg_data_column_constraints "
                                          "ORDER BY rowid")]
        (version,) = con.execute("PRAGMA application_id").fetchone()
        (user_version,) = con.execute("PRAGMA user_version").fetchone()
    assert titles["area_m2"] == "面積㎡" and titles["score_max"] == "確信度"
    assert enum == ["未確認", "課税対象", "対象外", "誤検出", "要再調査"]
    by_table = {name: (geom, default, qml) for name, geom, default, qml in styles}
    assert set(by_table) == {"candidate_parcels", "changes", "existing_buildings", "coverage",
                             "missed"}
    geom, default, qml = by_table["candidate_parcels"]
    assert (geom, default) == ("geom", 1)
    assert 'type="categorizedSymbol"' in qml and 'fieldName="地番"' in qml
    assert 'editWidget type="ValueMap"' in qml and 'editWidget type="DateTime"' in qml
    assert version == 0x47504B47 and user_version == 10200  # GeoPackage 1.2


def test_qgis_project_references_layers_relatively(tmp_path: Path) -> None:
    before, after = tmp_path / "flights" / "2024.tif", tmp_path / "flights" / "2025.tif"
    before.parent.mkdir()
    before.write_bytes(b"")
    after.write_bytes(b"")
    (tmp_path / "out").mkdir()
    result = builders.write_run(tmp_path / "out" / "run.gpkg", orthophotos=(before, after))
    assert result.project == tmp_path / "out" / "run.qgz"
    with zipfile.ZipFile(result.project) as archive:
        [name] = archive.namelist()
        qgs = archive.read(name).decode("utf-8")
    assert name == "run.qgs"
    assert "./run.gpkg|layername=candidate_parcels" in qgs
    assert "../flights/2025.tif" in qgs and "../flights/2024.tif" in qgs
    assert str(tmp_path) not in qgs
    info = read_run_info(tmp_path / "out" / "run.gpkg")
    assert info["orthophoto_after"] == str(after.resolve())


def test_interrupted_write_leaves_the_target_untouched(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "run.gpkg"
    builders.write_run(target)
    before = target.read_bytes()

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(gpkg_output, "write_layer_styles", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        builders.write_run(target, force=True)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.gpkg", "run.qgz"]


def test_interrupted_first_write_leaves_nothing(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(gpkg_output, "_write_run_info", fail)
    with pytest.raises(KeyboardInterrupt):
        builders.write_run(tmp_path / "run.gpkg")
    assert list(tmp_path.iterdir()) == []


def test_rerun_without_force_is_refused(tmp_path: Path) -> None:
    builders.write_run(tmp_path / "run.gpkg")
    with pytest.raises(UserInputError, match=r"run\.gpkg already exists; pass --force"):
        builders.write_run(tmp_path / "run.gpkg")


def test_missing_output_folder_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="output folder .* does not exist"):
        builders.write_run(tmp_path / "nope" / "run.gpkg")


def test_unwritable_output_folder_is_one_sentence(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # chmod does not stop root (CI runs as root), so the permission check itself is faked
    monkeypatch.setattr(gpkg_output.os, "access", lambda path, mode: False)
    with pytest.raises(UserInputError, match="output folder .* is not writable"):
        builders.write_run(tmp_path / "run.gpkg")
    assert list(tmp_path.iterdir()) == []


def test_output_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserInputError, match="is not a folder"):
        builders.write_run(tmp_path / "file" / "run.gpkg")


def test_locked_target_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "run.gpkg"
    builders.write_run(target)
    holder = sqlite3.connect(target)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(UserInputError, match=r"run\.gpkg is open in another program"):
            builders.write_run(target, force=True)
    finally:
        holder.rollback()
        holder.close()


def test_owner_columns_never_reach_the_output(tmp_path: Path) -> None:
    import geopandas as gpd

    from idou.geo.classify import classify_changes
    from idou.geo.gpkg_output import write_review_geopackage
    from idou.geo.parcel_join import join_parcels
    from idou.geo.parcels import read_parcels

    source = builders.parcels()
    source["所有者"] = ["山田太郎", "佐藤花子", "鈴木一郎"]
    source["住所"] = "千葉市稲毛区作草部町1-1"
    source.to_file(tmp_path / "parcels.gpkg")
    parcels = read_parcels(tmp_path / "parcels.gpkg", builders.CRS).frame
    classified = classify_changes(builders.raw_changes(), None, parcels)
    write_review_geopackage(tmp_path / "run.gpkg", changes=classified,
                            candidate_parcels=join_parcels(classified, parcels),
                            existing_buildings=None, coverage=builders.coverage(),
                            run_info=builders.run_info())
    raw = (tmp_path / "run.gpkg").read_bytes()
    for secret in ("山田太郎", "佐藤花子", "所有者", "住所"):
        assert secret.encode("utf-8") not in raw
    assert isinstance(parcels, gpd.GeoDataFrame)


def test_source_credits_are_recorded(tmp_path: Path) -> None:
    from idou.geo.classify import classify_changes
    from idou.geo.gpkg_output import write_review_geopackage
    from idou.geo.parcel_join import join_parcels

    parcels = builders.parcels()
    parcels.attrs["attribution"] = "出典：「登記所備付地図データ」（法務省）"
    buildings = builders.buildings()
    buildings.attrs["attribution"] = "出典：PLATEAU"
    classified = classify_changes(builders.raw_changes(), buildings, parcels)
    write_review_geopackage(tmp_path / "run.gpkg", changes=classified,
                            candidate_parcels=join_parcels(classified, parcels),
                            existing_buildings=buildings, coverage=builders.coverage(),
                            run_info=builders.run_info())
    info = read_run_info(tmp_path / "run.gpkg")
    assert info["attribution"] == "出典：「登記所備付地図データ」（法務省）\n出典：PLATEAU"
    with sqlite3.connect(tmp_path / "run.gpkg") as con:
        descriptions = dict(con.execute("SELECT table_name, description FROM gpkg_contents"))
    assert descriptions["candidate_parcels"] == "出典：「登記所備付地図データ」（法務省）"
    assert descriptions["existing_buildings"] == "出典：PLATEAU"
