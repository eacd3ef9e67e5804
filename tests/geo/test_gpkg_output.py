"""The review GeoPackage: content, schema, styles, atomic write and refusals."""

from __future__ import annotations

import importlib.util
import sqlite3
import zipfile
from pathlib import Path

import pyogrio
import pytest

from idou.errors import OutputConflict
from idou.geo.review import gpkg_output
from idou.geo.review.gpkg_output import read_run_info

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
    assert 'type="categorizedSymbol"' in qml and '|| &quot;地番&quot;' in qml
    assert 'editWidget type="ValueMap"' in qml and 'editWidget type="DateTime"' in qml
    assert version == 0x47504B47 and user_version == 10200  # GeoPackage 1.2


def test_candidate_parcels_show_survey_progress_and_rank_in_japanese_fonts(
        tmp_path: Path) -> None:
    """Read back from layer_styles: done parcels muted, 要再調査 marked, rank in the label."""
    import xml.etree.ElementTree as ET

    builders.write_run(tmp_path / "run.gpkg")
    with sqlite3.connect(tmp_path / "run.gpkg") as con:
        [(qml,)] = con.execute("SELECT styleQML FROM layer_styles "
                               "WHERE f_table_name = 'candidate_parcels'").fetchall()
    root = ET.fromstring(qml.split("\n", 1)[1])
    renderer = root.find("renderer-v2")
    assert renderer is not None
    attr = renderer.get("attr", "")
    assert all(f"'{s}'" in attr for s in ("課税対象", "対象外", "誤検出", "要再調査"))
    assert '"調査状況"' in attr and '"主な異動区分"' in attr
    symbols = {s.get("name"): {p.get("k"): p.get("v") for p in s.iter("prop")}
               for s in renderer.find("symbols").iter("symbol")}  # type: ignore[union-attr]
    by_value = {c.get("value"): symbols[c.get("symbol")]
                for c in renderer.iter("category")}

    def alpha(colour: str) -> int:
        return int(colour.split(",")[3])

    done, recheck, unchecked_new = by_value["調査済"], by_value["要再調査"], by_value["新築"]
    assert done["style"] == "no" and alpha(done["outline_color"]) < 255
    assert float(done["outline_width"]) < float(unchecked_new["outline_width"])
    assert float(recheck["outline_width"]) > float(unchecked_new["outline_width"])
    text = root.find("labeling/settings/text-style")
    assert text is not None and text.get("isExpression") == "1"
    assert '"priority"' in text.get("fieldName", "") and '"地番"' in text.get("fieldName", "")
    fonts = [text.get("fontFamily")] + [f.get("name") for f in text.iter("family")]
    assert fonts[0] == "Yu Gothic" and {"Meiryo", "MS Gothic", "Noto Sans CJK JP"} <= set(fonts)


def _qgs(project: Path) -> str:
    with zipfile.ZipFile(project) as archive:
        [name] = archive.namelist()
        assert name == f"{project.stem}.qgs"
        return archive.read(name).decode("utf-8")


def _sources(project: Path) -> list[Path]:
    """Every file the project's layers name, resolved as QGIS does from the project's folder."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(_qgs(project).split("\n", 1)[1])
    paths = [ds.text.split("|")[0] for ds in root.iter("datasource") if ds.text]
    return [(project.parent / p).resolve() if p.startswith(".") else Path(p) for p in paths]


def test_qgis_project_references_layers_relatively(tmp_path: Path) -> None:
    before, after = tmp_path / "out" / "flights" / "2024.tif", tmp_path / "out" / "2025.tif"
    before.parent.mkdir(parents=True)
    before.write_bytes(b"")
    after.write_bytes(b"")
    result = builders.write_run(tmp_path / "out" / "run.gpkg", orthophotos=(before, after))
    assert result.project == tmp_path / "out" / "run.qgz"
    qgs = _qgs(result.project)
    assert "./run.gpkg|layername=candidate_parcels" in qgs
    assert "./2025.tif" in qgs and "./flights/2024.tif" in qgs
    assert str(tmp_path) not in qgs
    info = read_run_info(tmp_path / "out" / "run.gpkg")
    assert info["orthophoto_after"] == str(after.resolve())


def test_moved_project_folder_still_finds_its_layers_and_orthophotos(tmp_path: Path) -> None:
    """Flights inside the folder travel with it; flights outside are named absolutely."""
    inside = tmp_path / "out" / "flights" / "2025.tif"
    outside = tmp_path / "shared" / "2024.tif"
    for path in (inside, outside):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
    builders.write_run(tmp_path / "out" / "run.gpkg", orthophotos=(outside, inside))
    moved = tmp_path / "elsewhere" / "deeper" / "out"
    moved.parent.mkdir(parents=True)
    (tmp_path / "out").rename(moved)
    sources = _sources(moved / "run.qgz")
    assert moved / "run.gpkg" in sources
    assert moved / "flights" / "2025.tif" in sources and outside.resolve() in sources
    assert all(path.is_file() for path in sources), sources


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
    with pytest.raises(OutputConflict, match=r"run\.gpkg already exists; pass --force"):
        builders.write_run(tmp_path / "run.gpkg")


def test_missing_output_folder_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(OutputConflict, match="output folder .* does not exist"):
        builders.write_run(tmp_path / "nope" / "run.gpkg")


def test_unwritable_output_folder_is_one_sentence(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # chmod does not stop root (CI runs as root), so the permission check itself is faked
    monkeypatch.setattr(gpkg_output.os, "access", lambda path, mode: False)
    with pytest.raises(OutputConflict, match="output folder .* is not writable"):
        builders.write_run(tmp_path / "run.gpkg")
    assert list(tmp_path.iterdir()) == []


def test_output_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputConflict, match="is not a folder"):
        builders.write_run(tmp_path / "file" / "run.gpkg")


def test_locked_target_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "run.gpkg"
    builders.write_run(target)
    holder = sqlite3.connect(target)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(OutputConflict, match=r"run\.gpkg is open in another program"):
            builders.write_run(target, force=True)
    finally:
        holder.rollback()
        holder.close()


def test_owner_columns_never_reach_the_output(tmp_path: Path) -> None:
    import geopandas as gpd

    from idou.geo.changes.classify import classify_changes
    from idou.geo.changes.parcel_join import join_parcels
    from idou.geo.review.gpkg_output import write_review_geopackage
    from idou.geo.vector.parcels import read_parcels

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
    from idou.geo.changes.classify import classify_changes
    from idou.geo.changes.parcel_join import join_parcels
    from idou.geo.review.gpkg_output import write_review_geopackage

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


def test_a_file_qgis_edited_and_closed_in_wal_mode_is_rerun_into_with_its_edit(
        tmp_path: Path) -> None:
    """QGIS leaves a GeoPackage it edited in WAL mode; idou's own read-only reads then left
    -wal/-shm files beside it and the --force re-run refused it as "opened for editing"."""
    target = tmp_path / "run.gpkg"
    builders.write_run(target)
    from ..gpkg_edits import staff_edit

    with staff_edit(target) as con:
        assert con.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
        con.execute("UPDATE candidate_parcels SET 調査状況 = '課税対象'")
    # the last connection closed: -wal and -shm are gone, the mode stays WAL
    assert not Path(f"{target}-wal").exists()
    builders.write_run(target, force=True)
    parcels = pyogrio.read_dataframe(target, layer="candidate_parcels")
    assert set(parcels["調査状況"]) == {"課税対象"}
    assert not Path(f"{target}-wal").exists() and not Path(f"{target}-shm").exists()
