"""User errors that once ended in exit 1 or a wrong sentence (issue 16), through the real CLI.

Refused cases follow :mod:`tests.robustness.test_corpus`: exit status 2, one ``error:`` sentence
naming the file and the fix, no traceback, nothing in the output folder. Handled cases (text
files as a Japanese office writes them, ``path.gpkg:layer``) exit 0 and find every roof.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
import pytest

from ..mojxml_builder import moj_xml
from .conftest import (
    GoodPair,
    build_model,
    error_line,
    parcels_frame,
    run_idou,
    save_model,
    with_roofs,
    write_raster,
)
from .conftest import texture as ground
from .test_corpus import Case, _check_refused, assert_roofs_found

# --- refused (exit 2) ------------------------------------------------------------------------


def sheet_list_not_text(good: GoodPair, d: Path) -> Case:
    """A sheet list that is neither UTF-8 nor Shift_JIS (e.g. a spreadsheet saved as .txt)."""
    listing = d / "sheets_2025.txt"
    listing.write_bytes(b"\x80\x81\xff\xfe\xfd\x00\x9f\xa0" * 20)
    return Case(good.before, listing, names="sheets_2025.txt", hint="save it again as UTF-8")


def parcels_csv(good: GoodPair, d: Path) -> Case:
    path = d / "parcels.csv"
    pd.DataFrame({"地番": ["1-1"], "所在": ["大手町"]}).to_csv(path, index=False)
    return Case(good.before, good.after, options=["--parcels", str(path)], names="parcels.csv",
                hint="holds no geometry.*GeoPackage")


def parcels_attribute_only_gpkg(good: GoodPair, d: Path) -> Case:
    path = d / "parcels_table.gpkg"
    pyogrio.write_dataframe(pd.DataFrame({"地番": ["1-1"]}), path, layer="台帳")
    return Case(good.before, good.after, options=["--parcels", str(path)],
                names="parcels_table.gpkg", hint="holds no geometry")


def parcels_several_layers(good: GoodPair, d: Path) -> Case:
    path = d / "parcels_two.gpkg"
    parcels_frame().to_file(path, layer="筆_2024", driver="GPKG")
    parcels_frame().to_file(path, layer="筆_2025", driver="GPKG")
    return Case(good.before, good.after, options=["--parcels", str(path)],
                names="parcels_two.gpkg", hint=r"筆_2024, 筆_2025.*parcels_two\.gpkg:筆_2024")


def parcels_unknown_layer(good: GoodPair, d: Path) -> Case:
    path = d / "parcels_two.gpkg"
    parcels_frame().to_file(path, layer="筆", driver="GPKG")
    return Case(good.before, good.after, options=["--parcels", f"{path}:家屋"],
                names="parcels_two.gpkg", hint=r"no layer '家屋' \(layers: 筆\)")


def buildings_csv(good: GoodPair, d: Path) -> Case:
    path = d / "buildings.csv"
    pd.DataFrame({"id": ["B1"], "x": [1.0]}).to_csv(path, index=False)
    return Case(good.before, good.after, options=["--buildings", str(path)],
                names="buildings.csv", hint="holds no geometry")


def buildings_several_layers(good: GoodPair, d: Path) -> Case:
    path = d / "kaoku.gpkg"
    parcels_frame().to_file(path, layer="家屋", driver="GPKG")
    parcels_frame().to_file(path, layer="附属", driver="GPKG")
    return Case(good.before, good.after, options=["--buildings", str(path)],
                names="kaoku.gpkg", hint=r"several layers .*kaoku\.gpkg:")


def aoi_csv(good: GoodPair, d: Path) -> Case:
    path = d / "city_aoi.csv"
    path.write_text("name\n前橋市\n", encoding="utf-8")
    return Case(good.before, good.after, options=["--aoi", str(path)], names="city_aoi.csv",
                hint="holds no geometry")


def aoi_several_layers(good: GoodPair, d: Path) -> Case:
    path = d / "city_aoi.gpkg"
    parcels_frame().to_file(path, layer="north", driver="GPKG")
    parcels_frame().to_file(path, layer="south", driver="GPKG")
    return Case(good.before, good.after, options=["--aoi", str(path)], names="city_aoi.gpkg",
                hint=r"north, south.*city_aoi\.gpkg:north")


def unknown_encoding(good: GoodPair, d: Path) -> Case:
    return Case(good.before, good.after,
                options=["--parcels", str(good.parcels), "--encoding", "sjis-win"],
                names="--encoding sjis-win", hint="use cp932")


def unknown_encoding_and_no_vector_file(good: GoodPair, d: Path) -> Case:
    return Case(good.before, good.after, options=["--encoding", "shift-jis-2004x"],
                names="--encoding shift-jis-2004x", hint="use cp932")


def wrong_cpg(good: GoodPair, d: Path) -> Case:
    """A Shapefile in Shift_JIS whose .cpg says UTF-8."""
    path = d / "parcels_sjis.shp"
    parcels_frame().to_file(path, encoding="cp932")
    path.with_suffix(".cpg").write_text("UTF-8", encoding="ascii")
    return Case(good.before, good.after, options=["--parcels", str(path)],
                names="parcels_sjis.shp", hint=r"not in the encoding its \.cpg names.*cp932")


def _mojxml_with(d: Path, name: str, old: str, new: str) -> Path:
    text = moj_xml()
    assert old in text
    (d / name).write_text(text.replace(old, new, 1), encoding="utf-8")
    return d / name


def mojxml_empty_coordinate(good: GoodPair, d: Path) -> Case:
    path = _mojxml_with(d, "map_empty.xml", "<zmn:X>1000.0</zmn:X>", "<zmn:X></zmn:X>")
    return Case(good.before, good.after, options=["--parcels", str(path)],
                names="map_empty.xml", hint="re-download the 地図XML file")


def mojxml_comma_coordinate(good: GoodPair, d: Path) -> Case:
    path = _mojxml_with(d, "map_comma.xml", "<zmn:Y>510.0</zmn:Y>", "<zmn:Y>510,0</zmn:Y>")
    return Case(good.before, good.after, options=["--parcels", str(path)],
                names="map_comma.xml", hint="re-download the 地図XML file")


def _zip_of(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def mojxml_bad_inner_zip(good: GoodPair, d: Path) -> Case:
    """A 法務省 zip whose inner per-district zip is damaged (cut short)."""
    inner = _zip_of(d / "inner.zip", {"09201-0101.xml": moj_xml().encode()}).read_bytes()
    path = _zip_of(d / "09201.zip", {"09201-0101.zip": inner[: len(inner) // 2]})
    return Case(good.before, good.after, options=["--parcels", str(path)],
                names="09201.zip:09201-0101.zip", hint="damaged zip.*download")


def mojxml_crc_error(good: GoodPair, d: Path) -> Case:
    """A zip whose member bytes were altered after packing (the CRC no longer matches)."""
    data = moj_xml().encode()
    raw = bytearray(_zip_of(d / "09201.zip", {"09201-0101.xml": data},
                            zipfile.ZIP_STORED).read_bytes())
    at = raw.index(b"12-3")  # the 地番, inside the stored member
    raw[at:at + 4] = b"99-9"
    (d / "09201.zip").write_bytes(bytes(raw))
    return Case(good.before, good.after, options=["--parcels", str(d / "09201.zip")],
                names="09201.zip", hint="damaged zip.*download")


def mojxml_deflate64(good: GoodPair, d: Path) -> Case:
    """A zip packed with Deflate64 (method 9, as Windows Explorer packs large folders)."""
    raw = bytearray(_zip_of(d / "09201.zip", {"09201-0101.xml": moj_xml().encode()},
                            zipfile.ZIP_STORED).read_bytes())
    raw[8:10] = (9).to_bytes(2, "little")  # the local header's method
    central = raw.index(b"PK\x01\x02")
    raw[central + 10:central + 12] = (9).to_bytes(2, "little")
    (d / "09201.zip").write_bytes(bytes(raw))
    return Case(good.before, good.after, options=["--parcels", str(d / "09201.zip")],
                names="09201.zip", hint="unpack it with 7-Zip")


def plateau_gml(path: Path, pos_list: str, dimension: str = "3") -> Path:
    """One PLATEAU building (LOD0 footprint) in EPSG:6697 with the given posList text."""
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<core:CityModel xmlns:core="http://www.opengis.net/citygml/2.0" '
        'xmlns:bldg="http://www.opengis.net/citygml/building/2.0" '
        'xmlns:gml="http://www.opengis.net/gml"><core:cityObjectMember>'
        '<bldg:Building gml:id="b1"><bldg:lod0FootPrint><gml:MultiSurface><gml:surfaceMember>'
        '<gml:Polygon srsName="http://www.opengis.net/def/crs/EPSG/0/6697"><gml:exterior>'
        f'<gml:LinearRing><gml:posList srsDimension="{dimension}">{pos_list}</gml:posList>'
        "</gml:LinearRing></gml:exterior></gml:Polygon></gml:surfaceMember></gml:MultiSurface>"
        "</bldg:lod0FootPrint></bldg:Building></core:cityObjectMember></core:CityModel>",
        encoding="utf-8")
    return path


SQUARE = ("36.3911 139.0608 0 36.3912 139.0608 0 36.3912 139.0609 0 36.3911 139.0609 0 "
          "36.3911 139.0608 0")


def citygml_comma_decimal(good: GoodPair, d: Path) -> Case:
    path = plateau_gml(d / "bldg_comma.gml", SQUARE.replace("36.3911", "36,3911"))
    return Case(good.before, good.after, options=["--buildings", str(path)],
                names="bldg_comma.gml", hint="decimal point")


def citygml_zero_dimension(good: GoodPair, d: Path) -> Case:
    path = plateau_gml(d / "bldg_dim0.gml", SQUARE, dimension="0")
    return Case(good.before, good.after, options=["--buildings", str(path)],
                names="bldg_dim0.gml", hint="as published")


def card_with_null_sha256(good: GoodPair, d: Path) -> Case:
    import json
    import shutil

    model = d / "model.onnx"
    shutil.copy(good.model, model)
    card = json.loads(good.model.with_name("model.card.json").read_text(encoding="utf-8"))
    (d / "model.card.json").write_text(json.dumps({**card, "sha256": None}), encoding="utf-8")
    return Case(good.before, good.after, model=model, names="model.card.json",
                hint="restore it from the model's release")


def model_with_custom_op_domain(good: GoodPair, d: Path) -> Case:
    from onnx import helper

    proto = build_model()
    proto.opset_import.append(helper.make_opsetid("com.example.idou", 1))
    node = proto.graph.node[-1]  # Concat → a custom op of the same signature
    node.op_type, node.domain = "FancyConcat", "com.example.idou"
    return Case(good.before, good.after, model=save_model(proto, d / "model_custom.onnx"),
                names="model_custom.onnx", hint="custom domain 'com.example.idou'")


def model_with_external_data(good: GoodPair, d: Path) -> Case:
    from onnx.external_data_helper import convert_model_to_external_data

    proto = build_model()
    convert_model_to_external_data(proto, all_tensors_to_one_file=True,
                                   location="model_ext.weights", size_threshold=0)
    return Case(good.before, good.after, model=save_model(proto, d / "model_ext.onnx"),
                names="model_ext.onnx", hint="export the model as one file")


def paletted_flight(good: GoodPair, d: Path) -> Case:
    """A 1-band image with a colour table (as some viewers export): told how to expand it."""
    import rasterio
    from rasterio.enums import ColorInterp

    path = write_raster(d / "flight_2025_pal.tif", (with_roofs(ground())[:1] // 16))
    with rasterio.open(path, "r+") as ds:
        ds.write_colormap(1, {i: (i * 16, i * 16, 255 - i * 16, 255) for i in range(16)})
        ds.colorinterp = [ColorInterp.palette]
    return Case(good.before, path, names="flight_2025_pal.tif",
                hint="gdal_translate -expand rgb")


REFUSED = {f.__name__: f for f in (
    sheet_list_not_text, parcels_csv, parcels_attribute_only_gpkg, parcels_several_layers,
    parcels_unknown_layer, buildings_csv, buildings_several_layers, aoi_csv, aoi_several_layers,
    unknown_encoding, unknown_encoding_and_no_vector_file, wrong_cpg, mojxml_empty_coordinate,
    mojxml_comma_coordinate, mojxml_bad_inner_zip, mojxml_crc_error, mojxml_deflate64,
    citygml_comma_decimal, citygml_zero_dimension, card_with_null_sha256,
    model_with_custom_op_domain, model_with_external_data, paletted_flight)}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused(name: str, good: GoodPair, tmp_path: Path) -> None:
    inputs, out_dir = tmp_path / "inputs", tmp_path / "out"
    inputs.mkdir()
    out_dir.mkdir()
    case = REFUSED[name](good, inputs)
    run = run_idou("detect", case.before, case.after, "-o", out_dir / "changes.gpkg",
                   "--model", case.model or good.model, "--quiet", "--threads", "1",
                   *case.options, cwd=tmp_path)
    sentence = _check_refused(run, case, out_dir, out_dir / "changes.gpkg")
    assert "None" not in sentence


# --- handled (exit 0) ------------------------------------------------------------------------


@pytest.mark.parametrize("encoding,newline", [("cp932", "\r\n"), ("utf-8-sig", "\r\n"),
                                              ("utf-8-sig", "\n"), ("utf-16", "\r\n")])
def test_sheet_list_as_an_office_writes_it(encoding: str, newline: str, good: GoodPair,
                                           tmp_path: Path) -> None:
    """A sheet list with Japanese names in Shift_JIS, or UTF-8 with a BOM, CRLF line ends."""
    folder = tmp_path / "オルソ 2025"
    folder.mkdir()
    data = with_roofs(ground())
    half = data.shape[2] // 2
    from .conftest import GSD, ORIGIN, transform

    names = []
    for k, name in enumerate(("図郭_09LD1234.tif", "図郭_09LD1235.tif")):
        write_raster(folder / name, data[:, :, k * half:(k + 1) * half].copy(),
                     tr=transform((ORIGIN[0] + k * half * GSD, ORIGIN[1])))
        names.append(f"オルソ 2025/{name}")
    listing = tmp_path / "図郭一覧_2025.txt"
    listing.write_bytes(newline.join(["# 2025年度 撮影", *names, ""]).encode(encoding))
    run = run_idou("detect", good.before, listing, "-o", tmp_path / "changes.gpkg", "--model",
                   good.model, "--quiet", "--threads", "1", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert_roofs_found(tmp_path / "changes.gpkg")


@pytest.mark.parametrize("option", ["--parcels", "--aoi"])
def test_geopackage_layer_named_after_a_colon(option: str, good: GoodPair,
                                              tmp_path: Path) -> None:
    """``path.gpkg:layer`` picks one layer of a GeoPackage with several."""
    path = tmp_path / "共有データ.gpkg"
    far = parcels_frame(offset=(50_000.0, 0.0))
    far.to_file(path, layer="他市", driver="GPKG")
    parcels_frame().to_file(path, layer="前橋", driver="GPKG")
    run = run_idou("detect", good.before, good.after, "-o", tmp_path / "changes.gpkg",
                   "--model", good.model, "--quiet", "--threads", "1", option,
                   f"{path}:前橋", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert_roofs_found(tmp_path / "changes.gpkg")
    if option == "--parcels":
        candidates = gpd.read_file(tmp_path / "changes.gpkg", layer="candidate_parcels")
        assert sorted(candidates["地番"]) == ["1-1", "1-2", "1-3", "1-4"]


def test_z_polygons_print_no_python_warnings(good: GoodPair, tmp_path: Path) -> None:
    """Parcels with Z coordinates (as CAD exports write them) are read without raw warnings."""
    import shapely

    frame = parcels_frame()
    frame["geometry"] = shapely.force_3d(frame.geometry, 12.5)
    path = tmp_path / "parcels_z.gpkg"
    frame.to_file(path, driver="GPKG")
    run = run_idou("detect", good.before, good.after, "-o", tmp_path / "changes.gpkg",
                   "--model", good.model, "--parcels", path, "--threads", "1", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert not re.search(r"Warning|warnings\.warn|\.py:\d+", run.stderr), run.stderr
    candidates = gpd.read_file(tmp_path / "changes.gpkg", layer="candidate_parcels")
    assert sorted(candidates["地番"]) == ["1-1", "1-2", "1-3", "1-4"]



# --- messages are printed literally, never as Rich markup -------------------------------------


def test_a_path_that_looks_like_markup_is_printed_literally(good: GoodPair,
                                                            tmp_path: Path) -> None:
    """``[/x]`` in a path once crashed the error handler (exit 1): markup closing nothing."""
    missing = tmp_path / "写真[" / "x]" / "flight_2025.tif"
    run = run_idou("detect", good.before, missing, "-o", tmp_path / "changes.gpkg", "--model",
                   good.model, "--quiet", cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert "写真[/x]/flight_2025.tif" in error_line(run.stderr)


def test_batch_errors_keep_their_table_names(good: GoodPair, tmp_path: Path) -> None:
    """``[before]`` once vanished from batch errors (read as a markup tag)."""
    flight = tmp_path / "flight.toml"
    flight.write_text(f'output = "out"\nmodel = "{good.model}"\n[before]\npath = "nowhere.tif"\n'
                      f'[after]\npath = "{good.after}"\n', encoding="utf-8")
    run = run_idou("batch", flight, "--check", cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert "[before] path" in error_line(run.stderr)


def test_warnings_name_files_literally(good: GoodPair, tmp_path: Path) -> None:
    path = tmp_path / "parcels[bold]elsewhere.gpkg"
    parcels_frame(offset=(50_000.0, 0.0)).to_file(path, driver="GPKG")
    run = run_idou("detect", good.before, good.after, "-o", tmp_path / "changes.gpkg",
                   "--model", good.model, "--parcels", path, "--quiet", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "parcels[bold]elsewhere.gpkg overlap" in run.stderr


# --- idou batch ----------------------------------------------------------------------------------


def flight_toml(good: GoodPair, folder: Path, extra: str = "", output: str = "out") -> Path:
    """A FLIGHT.toml over the good pair into ``folder / output``."""
    path = folder / "flight.toml"
    path.write_text(f'output = "{output}"\nmodel = "{good.model}"\nworkers = 1\nthreads = 1\n'
                    f'{extra}\n[before]\npath = "{good.before}"\n[after]\npath = "{good.after}"\n',
                    encoding="utf-8")
    return path


def test_a_damaged_journal_is_a_user_error(good: GoodPair, tmp_path: Path) -> None:
    """A corrupt journal.sqlite: exit 2 (systemd's RestartPreventExitStatus=2 stops the loop)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "journal.sqlite").write_bytes(b"\x00garbage after a power cut\x00" * 400)
    flight = flight_toml(good, tmp_path)
    for extra in ([], ["--check"]):
        run = run_idou("batch", flight, "--quiet", *extra, cwd=tmp_path)
        assert run.returncode == 2, run.stderr
        sentence = error_line(run.stderr)
        assert "journal.sqlite" in sentence and "move it aside or delete it" in sentence
    assert (out / "journal.sqlite").read_bytes().startswith(b"\x00garbage")


# --- output folders the system does not let idou write --------------------------------------


def test_an_immutable_output_folder_is_a_user_error(good: GoodPair, tmp_path: Path) -> None:
    """chattr +i stops even root (chmod does not): one sentence, exit 2, the folder untouched."""
    import subprocess

    folder = tmp_path / "locked"
    folder.mkdir()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not permitted here")
    try:
        run = run_idou("detect", good.before, good.after, "-o", folder / "changes.gpkg",
                       "--model", good.model, "--quiet", "--threads", "1", cwd=tmp_path)
        batch = run_idou("batch", flight_toml(good, tmp_path, output=str(folder)), "--quiet",
                         cwd=tmp_path)
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    for result in (run, batch):
        assert result.returncode == 2, result.stderr
        sentence = error_line(result.stderr)
        assert "locked" in sentence and "choose another output folder" in sentence
    assert list(folder.iterdir()) == []


def test_a_read_only_disk_is_a_user_error(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    import errno
    import os

    from idou import cli

    def read_only() -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), "/mnt/nas/2025/changes.gpkg")

    monkeypatch.setattr(cli, "app", read_only)
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    assert stopped.value.code == 2
    assert "/mnt/nas/2025/changes.gpkg (the disk is mounted read-only)" in error_line(
        capsys.readouterr().err)


# --- smaller ----------------------------------------------------------------------------------


def test_a_registry_model_without_a_store_creates_no_mlflow_db(good: GoodPair,
                                                               tmp_path: Path) -> None:
    """``--model models:/...`` without MLFLOW_TRACKING_URI once left an empty mlflow.db."""
    from .conftest import idou_env

    env = {k: v for k, v in idou_env().items() if k != "MLFLOW_TRACKING_URI"}
    run = run_idou("detect", good.before, good.after, "-o", tmp_path / "out.gpkg", "--model",
                   "models:/idou@champion", "--quiet", cwd=tmp_path, env=env)
    assert run.returncode == 2, run.stderr
    assert "MLFLOW_TRACKING_URI" in error_line(run.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_survey_date_in_the_japanese_era_survives_a_rerun(good: GoodPair,
                                                            tmp_path: Path) -> None:
    """調査日 typed as 令和8年10月1日 (or any text) was read as null, lost on a --force re-run."""
    from ..gpkg_edits import staff_edit

    out = tmp_path / "changes.gpkg"
    detect = ("detect", good.before, good.after, "-o", out, "--model", good.model,
              "--parcels", good.parcels, "--quiet", "--threads", "1")
    assert run_idou(*detect, cwd=tmp_path).returncode == 0
    dates = {"1-1": "令和8年10月1日", "1-2": "R8.10.2", "1-3": "10月上旬"}
    with staff_edit(out) as con:
        for chiban, date in dates.items():
            con.execute('UPDATE candidate_parcels SET "調査日" = ? WHERE "地番" = ?',
                        (date, chiban))
    run = run_idou(*detect, "--force", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(out)) as con:
        kept = dict(con.execute('SELECT "地番", "調査日" FROM candidate_parcels').fetchall())
    assert kept == {"1-1": "2026-10-01", "1-2": "2026-10-02", "1-3": "10月上旬", "1-4": None}


def test_evaluate_against_truth_elsewhere_is_refused(good: GoodPair, tmp_path: Path) -> None:
    """Truth that does not overlap the run once gave recall 1.000 (0/0) and exit 0."""
    from shapely.geometry import box

    from .conftest import ORIGIN

    out = tmp_path / "changes.gpkg"
    assert run_idou("detect", good.before, good.after, "-o", out, "--model", good.model,
                    "--quiet", "--threads", "1", cwd=tmp_path).returncode == 0
    far = gpd.GeoDataFrame({"channel": ["new", "new"]}, crs="EPSG:6677", geometry=[
        box(ORIGIN[0] + 20_000, ORIGIN[1] - 20, ORIGIN[0] + 20_010, ORIGIN[1] - 10),
        box(ORIGIN[0] + 20_020, ORIGIN[1] - 20, ORIGIN[0] + 20_030, ORIGIN[1] - 10)])
    far.to_file(tmp_path / "truth_other_town.gpkg", layer="truth", driver="GPKG")
    for inputs in ([out], [good.model, good.before, good.after]):
        run = run_idou("evaluate", *inputs, "--truth", tmp_path / "truth_other_town.gpkg",
                       cwd=tmp_path)
        assert run.returncode == 2, run.stdout + run.stderr
        assert "none of the 2 truth objects" in error_line(run.stderr)
