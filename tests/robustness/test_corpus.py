"""The bad-input corpus: every input is generated here and run through the real ``idou detect``.

Refused inputs: exit status 2, one ``error:`` sentence naming the file (its basename) and saying
what to do, no traceback, and nothing left in the output folder. Unusual but valid inputs: exit
status 0 and every roof that appeared is found. The README (Reliability and security) has the table.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from rasterio.enums import ColorInterp, Resampling
from rasterio.warp import calculate_default_transform, reproject
from shapely.geometry import Point, Polygon, box

from ..gpkg_edits import staff_edit
from ..mojxml_builder import moj_xml
from .conftest import (
    CRS,
    GSD,
    ORIGIN,
    ROOFS,
    SIZE,
    GoodPair,
    build_model,
    error_line,
    parcels_frame,
    run_idou,
    save_model,
    texture,
    transform,
    with_roofs,
    write_raster,
)


@dataclass
class Case:
    """One corpus entry: inputs, options and what must be named in the error sentence."""

    before: Path
    after: Path
    options: list[str] = field(default_factory=list)
    names: str = ""  # the basename the error sentence must name
    hint: str = ""  # a regex for the fix the sentence must give
    model: Path | None = None
    secret: str | None = None  # a string that must appear nowhere (stderr, folder)


Builder = Callable[[GoodPair, Path], Case]


# --- refused inputs (exit 2) -----------------------------------------------------------------

def zero_byte_tiff(good: GoodPair, d: Path) -> Case:
    (d / "flight_2025.tif").touch()
    return Case(good.before, d / "flight_2025.tif", names="flight_2025.tif",
                hint="copy the raster again")


def truncated_tiff(good: GoodPair, d: Path) -> Case:
    data = good.after.read_bytes()
    (d / "flight_2025.tif").write_bytes(data[: len(data) // 2])
    return Case(good.before, d / "flight_2025.tif", names="flight_2025.tif",
                hint="(copy|export) the file again|re-export or re-copy")


def corrupt_tiff(good: GoodPair, d: Path) -> Case:
    rng = np.random.default_rng(1)
    (d / "flight_2025.tif").write_bytes(b"II*\x00" + rng.bytes(50_000))
    return Case(good.before, d / "flight_2025.tif", names="flight_2025.tif",
                hint="re-export or re-copy")


def corrupt_tiff_pixels(good: GoodPair, d: Path) -> Case:
    """A TIFF whose header is fine and whose compressed tiles are garbage."""
    path = write_raster(d / "flight_2025.tif", with_roofs(texture()), tiled=True,
                        blockxsize=128, blockysize=128, compress="deflate")
    raw = bytearray(path.read_bytes())
    with rasterio.open(path) as ds:
        offsets = [int(ds.get_tag_item(f"BLOCK_OFFSET_{c}_{r}", "TIFF", bidx=1))
                   for r in range(2) for c in range(2)]
    rng = np.random.default_rng(2)
    for off in offsets:
        raw[off:off + 64] = rng.bytes(64)
    path.write_bytes(bytes(raw))
    return Case(good.before, path, names="flight_2025.tif", hint="re-export or re-copy")


def not_a_raster(good: GoodPair, d: Path) -> Case:
    (d / "flight_2025.pdf").write_bytes(b"%PDF-1.4\n% not an orthophoto\n" * 200)
    return Case(good.before, d / "flight_2025.pdf", names="flight_2025.pdf",
                hint="as a GeoTIFF")


def vector_file_as_flight(good: GoodPair, d: Path) -> Case:
    return Case(good.before, good.parcels, names="parcels.gpkg", hint="as a GeoTIFF")


def png_without_georeferencing(good: GoodPair, d: Path) -> Case:
    path = write_raster(d / "flight_2025.png", with_roofs(texture()), crs=None, georef=False,
                        driver="PNG")
    return Case(good.before, path, names="flight_2025.png", hint=r"world file.*\.pgw")


def jpeg_without_georeferencing(good: GoodPair, d: Path) -> Case:
    path = write_raster(d / "flight_2025.jpg", with_roofs(texture()), crs=None, georef=False,
                        driver="JPEG")
    return Case(good.before, path, names="flight_2025.jpg", hint=r"world file.*\.jgw")


def _world_file(path: Path) -> None:
    t = transform()
    path.write_text(f"{t.a}\n{t.d}\n{t.b}\n{t.e}\n{t.c + t.a / 2}\n{t.f + t.e / 2}\n")


def missing_world_file(good: GoodPair, d: Path) -> Case:
    """A TIFF delivered without the .tfw that georeferenced it (even with --crs)."""
    path = write_raster(d / "sheet_09LD1234.tif", with_roofs(texture()), crs=None,
                        georef=False)
    return Case(good.before, path, options=["--crs", "EPSG:6677"],
                names="sheet_09LD1234.tif", hint=r"add a world file \(\.tfw")


def no_crs_and_no_crs_option(good: GoodPair, d: Path) -> Case:
    path = write_raster(d / "sheet_09LD1234.tif", with_roofs(texture()), crs=None,
                        georef=False)
    _world_file(path.with_suffix(".tfw"))
    return Case(good.before, path, names="sheet_09LD1234.tif", hint="pass --crs")


def flights_do_not_overlap(good: GoodPair, d: Path) -> Case:
    path = write_raster(d / "flight_2024_elsewhere.tif", texture(),
                        tr=transform((ORIGIN[0] + 10_000, ORIGIN[1])))
    return Case(path, good.after, names="flight_2024_elsewhere.tif",
                hint="check that both cover the same area")


def one_band(good: GoodPair, d: Path) -> Case:
    path = write_raster(d / "flight_2025_gray.tif", with_roofs(texture())[:1])
    return Case(good.before, path, names="flight_2025_gray.tif", hint="colour orthophoto")


def sixteen_bit(good: GoodPair, d: Path) -> Case:
    path = write_raster(d / "flight_2025_16bit.tif",
                        with_roofs(texture()).astype(np.uint16) * 257)
    return Case(good.before, path, names="flight_2025_16bit.tif",
                hint="gdal_translate -ot Byte")


def float_with_nan(good: GoodPair, d: Path) -> Case:
    data = with_roofs(texture()).astype(np.float32) / 255
    data[:, :20, :20] = np.nan
    path = write_raster(d / "flight_2025_float.tif", data, nodata=float("nan"))
    return Case(good.before, path, names="flight_2025_float.tif",
                hint="gdal_translate -ot Byte")


def five_bands(good: GoodPair, d: Path) -> Case:
    path = write_raster(d / "flight_2025_5band.tif", texture(bands=5))
    return Case(good.before, path, names="flight_2025_5band.tif", hint=r"-b 1 -b 2 -b 3")


def all_nodata(good: GoodPair, d: Path) -> Case:
    path = write_raster(d / "flight_2025_empty.tif", np.zeros((3, SIZE, SIZE), np.uint8),
                        nodata=0)
    return Case(good.before, path, names="flight_2025_empty.tif",
                hint="check its nodata value")


def _patch_tiff_tags(path: Path, values: dict[int, int]) -> None:
    """Overwrite SHORT/LONG tags of a little-endian classic TIFF's first IFD with LONG values."""
    raw = bytearray(path.read_bytes())
    assert raw[:4] == b"II*\x00"
    ifd = int.from_bytes(raw[4:8], "little")
    for i in range(int.from_bytes(raw[ifd:ifd + 2], "little")):
        entry = ifd + 2 + 12 * i
        tag = int.from_bytes(raw[entry:entry + 2], "little")
        if tag in values:
            raw[entry + 2:entry + 4] = (4).to_bytes(2, "little")  # LONG
            raw[entry + 4:entry + 8] = (1).to_bytes(4, "little")
            raw[entry + 8:entry + 12] = values[tag].to_bytes(4, "little")
    path.write_bytes(bytes(raw))


def huge_header(good: GoodPair, d: Path) -> Case:
    """A 200 kB TIFF whose header consistently claims 1,000,000 x 1,000,000 px (16 x 16 tiles).

    The tile index still has its 256 entries, so GDAL opens it; idou must refuse it before
    allocating or reading anything.
    """
    path = write_raster(d / "flight_2025_huge.tif", with_roofs(texture()), tiled=True,
                        blockxsize=16, blockysize=16)
    _patch_tiff_tags(path, {256: 1_000_000, 257: 1_000_000, 322: 62_512, 323: 62_512})
    return Case(good.before, path, names="flight_2025_huge.tif",
                hint="re-export or re-copy")


def inconsistent_tile_header(good: GoodPair, d: Path) -> Case:
    """A TIFF whose size tags were edited (10^6 px) without its tile index: GDAL errors late."""
    path = write_raster(d / "flight_2025_edited.tif", with_roofs(texture()), tiled=True,
                        blockxsize=256, blockysize=256)
    _patch_tiff_tags(path, {256: 1_000_000, 257: 1_000_000})
    return Case(good.before, path, names="flight_2025_edited.tif",
                hint="re-export or re-copy")


def parcels_unreadable(good: GoodPair, d: Path) -> Case:
    (d / "parcels.gpkg").write_bytes(b"SQLite format 3\x00" + b"\x00" * 2000)
    return Case(good.before, good.after, options=["--parcels", str(d / "parcels.gpkg")],
                names="parcels.gpkg", hint="pass a GeoPackage, Shapefile, GeoJSON or 地図XML")


def parcels_without_chiban(good: GoodPair, d: Path) -> Case:
    frame = parcels_frame().rename(columns={"地番": "番号"})
    frame.to_file(d / "parcels_no_chiban.gpkg", driver="GPKG")
    return Case(good.before, good.after,
                options=["--parcels", str(d / "parcels_no_chiban.gpkg")],
                names="parcels_no_chiban.gpkg", hint="rename it to 地番")


def mojxml_arbitrary_grid(good: GoodPair, d: Path) -> Case:
    (d / "map_local.xml").write_text(moj_xml(zone="任意座標系"), encoding="utf-8")
    return Case(good.before, good.after, options=["--parcels", str(d / "map_local.xml")],
                names="map_local.xml", hint="use a 地図XML in 公共座標")


def mojxml_malformed(good: GoodPair, d: Path) -> Case:
    (d / "map_cut.xml").write_text(moj_xml()[:-60], encoding="utf-8")
    return Case(good.before, good.after, options=["--parcels", str(d / "map_cut.xml")],
                names="map_cut.xml", hint="re-download the 地図XML")


SECRET = "IDOU-SECRET-7f3a9c"


def mojxml_external_entity(good: GoodPair, d: Path) -> Case:
    secret = d / "secret.txt"
    secret.write_text(SECRET, encoding="utf-8")
    doctype = f'<!DOCTYPE 地図 [<!ENTITY xxe SYSTEM "file://{secret}">]>'
    (d / "map_xxe.xml").write_text(moj_xml(doctype=doctype, chiban="&xxe;"), encoding="utf-8")
    return Case(good.before, good.after, options=["--parcels", str(d / "map_xxe.xml")],
                names="map_xxe.xml", hint="as published by 法務省", secret=SECRET)


def mojxml_billion_laughs(good: GoodPair, d: Path) -> Case:
    lol = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">' for i in range(1, 10)]
    doctype = f"<!DOCTYPE 地図 [{''.join(lol)}]>"
    (d / "map_laughs.xml").write_text(moj_xml(doctype=doctype, chiban="&lol9;"),
                                      encoding="utf-8")
    return Case(good.before, good.after, options=["--parcels", str(d / "map_laughs.xml")],
                names="map_laughs.xml", hint="as published by 法務省")


def mojxml_zip_bomb(good: GoodPair, d: Path) -> Case:
    """A 2 MB zip whose one 地図XML member unpacks to 528 MiB (over the 512 MiB limit)."""
    path = d / "map_bomb.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z, \
            z.open("huge.xml", "w", force_zip64=True) as member:
        chunk = b" " * (1 << 24)
        for _ in range(33):
            member.write(chunk)
    return Case(good.before, good.after, options=["--parcels", str(path)],
                names="map_bomb.zip", hint="unpack it yourself")


def tampered_model(good: GoodPair, d: Path) -> Case:
    model = d / "model.onnx"
    shutil.copy(good.model, model)
    shutil.copy(good.model.with_name("model.card.json"), d / "model.card.json")
    proto = build_model()
    proto.graph.initializer[0].float_data[:] = []
    proto.graph.initializer[0].raw_data = np.array(9.0, np.float32).tobytes()
    save_model(proto, model, card=False)  # same card, other weights
    return Case(good.before, good.after, model=model, names="model.onnx",
                hint="restore the released model")


def model_without_metadata(good: GoodPair, d: Path) -> Case:
    model = save_model(build_model(metadata=False), d / "model_bare.onnx")
    return Case(good.before, good.after, model=model, names="model_bare.onnx",
                hint="export it with `idou export`")


def model_with_wrong_channels(good: GoodPair, d: Path) -> Case:
    model = save_model(build_model(channels=4), d / "model_4ch.onnx")
    return Case(good.before, good.after, model=model, names="model_4ch.onnx",
                hint="re-export it with `idou export`")


def model_with_wrong_tile_size(good: GoodPair, d: Path) -> Case:
    model = save_model(build_model(spatial=256), d / "model_256px.onnx")
    return Case(good.before, good.after, model=model, names="model_256px.onnx",
                hint="re-export it with `idou export`")


def model_is_a_pickle(good: GoodPair, d: Path) -> Case:
    """A pickled checkpoint renamed .onnx: refused, and its payload never runs."""
    marker = d / "PICKLE_RAN"
    payload = (b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    (d / "model_pickle.onnx").write_bytes(payload)
    return Case(good.before, good.after, model=d / "model_pickle.onnx",
                names="model_pickle.onnx", hint="pass an ONNX file")


def model_missing(good: GoodPair, d: Path) -> Case:
    return Case(good.before, good.after, model=d / "nowhere.onnx", names="nowhere.onnx",
                hint="does not exist")


def geographic_crs(good: GoodPair, d: Path) -> Case:
    """The later flight in latitude/longitude (JGD2011 geographic, EPSG:6668)."""
    return Case(good.before, _warped_to(good.after, d / "flight_2025_latlon.tif", "EPSG:6668"),
                names="flight_2025_latlon.tif", hint="pass --crs .*EPSG:6677")


def bad_crs_option(good: GoodPair, d: Path) -> Case:
    path = write_raster(d / "sheet_09LD1234.tif", with_roofs(texture()), crs=None,
                        georef=False)
    _world_file(path.with_suffix(".tfw"))
    return Case(good.before, path, options=["--crs", "EPSG:66777"], names="EPSG:66777",
                hint="give it as EPSG:6677")


def sheet_list_missing_sheet(good: GoodPair, d: Path) -> Case:
    listing = d / "sheets_2025.txt"
    listing.write_text("09LD1234.tif\n09LD1235.tif\n", encoding="utf-8")
    write_raster(d / "09LD1234.tif", with_roofs(texture()))
    return Case(good.before, listing, names="09LD1235.tif", hint="fix the sheet list")


def empty_sheet_folder(good: GoodPair, d: Path) -> Case:
    (d / "ortho_2025").mkdir()
    (d / "ortho_2025" / "readme.txt").write_text("sheets go here")
    return Case(good.before, d / "ortho_2025", names="ortho_2025",
                hint="point to the folder with the orthophoto sheets")


def aoi_unreadable(good: GoodPair, d: Path) -> Case:
    (d / "city_aoi.geojson").write_text("{ this is not json", encoding="utf-8")
    return Case(good.before, good.after, options=["--aoi", str(d / "city_aoi.geojson")],
                names="city_aoi.geojson", hint="give a GeoPackage, shapefile or GeoJSON")


def aoi_outside(good: GoodPair, d: Path) -> Case:
    path = d / "city_aoi.gpkg"
    gpd.GeoDataFrame(geometry=[box(0, 0, 100, 100)], crs=CRS).to_file(path, driver="GPKG")
    return Case(good.before, good.after, options=["--aoi", str(path)], names="city_aoi.gpkg",
                hint="check the AOI file and its CRS")


def buildings_citygml_entity(good: GoodPair, d: Path) -> Case:
    secret = d / "secret.txt"
    secret.write_text(SECRET, encoding="utf-8")
    (d / "bldg_xxe.gml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<!DOCTYPE core:CityModel [<!ENTITY xxe SYSTEM "file://{secret}">]>'
        '<core:CityModel xmlns:core="http://www.opengis.net/citygml/2.0" '
        'xmlns:bldg="http://www.opengis.net/citygml/building/2.0" '
        'xmlns:gml="http://www.opengis.net/gml"><gml:name>&xxe;</gml:name></core:CityModel>',
        encoding="utf-8")
    return Case(good.before, good.after, options=["--buildings", str(d / "bldg_xxe.gml")],
                names="bldg_xxe.gml", hint="refuses for safety", secret=SECRET)


def threshold_out_of_range(good: GoodPair, d: Path) -> Case:
    return Case(good.before, good.after, options=["--threshold", "1.5"], names="--threshold",
                hint="strictly between 0 and 1")


REFUSED: dict[str, Builder] = {f.__name__: f for f in (
    zero_byte_tiff, truncated_tiff, corrupt_tiff, corrupt_tiff_pixels, not_a_raster,
    vector_file_as_flight, png_without_georeferencing, jpeg_without_georeferencing,
    missing_world_file, no_crs_and_no_crs_option, flights_do_not_overlap, one_band,
    sixteen_bit, float_with_nan, five_bands, all_nodata, huge_header,
    inconsistent_tile_header, parcels_unreadable,
    parcels_without_chiban, mojxml_arbitrary_grid, mojxml_malformed, mojxml_external_entity,
    mojxml_billion_laughs, mojxml_zip_bomb, tampered_model, model_without_metadata,
    model_with_wrong_channels, model_with_wrong_tile_size, model_is_a_pickle, model_missing,
    geographic_crs, bad_crs_option, sheet_list_missing_sheet, empty_sheet_folder,
    aoi_unreadable, aoi_outside, buildings_citygml_entity, threshold_out_of_range)}


def _check_refused(run: object, case: Case, out_dir: Path, out: Path) -> str:
    assert run.returncode == 2, (run.returncode, run.stderr)  # type: ignore[attr-defined]
    stderr: str = run.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    sentence = error_line(stderr)
    assert case.names in sentence, sentence
    assert re.search(case.hint, sentence), (case.hint, sentence)
    assert sentence.endswith("."), sentence
    assert not out.exists()
    assert sorted(p.name for p in out_dir.iterdir()) == [], "something was left behind"
    return sentence


@dataclass
class RefusedRun:
    """A corpus case and the finished CLI run on it (or the error that kept it from running)."""

    case: Case | None
    folder: Path
    run: subprocess.CompletedProcess[str] | None
    error: BaseException | None = None


def _run_refused(name: str, good: GoodPair, folder: Path) -> RefusedRun:
    try:
        inputs = folder / "inputs"
        inputs.mkdir(parents=True)
        case = REFUSED[name](good, inputs)
        (folder / "out").mkdir()
        run = run_idou("detect", case.before, case.after, "-o", folder / "out" / "changes.gpkg",
                       "--prob", folder / "out" / "probabilities.tif", "--model",
                       case.model or good.model, "--quiet", "--threads", "1", *case.options,
                       cwd=folder)
        return RefusedRun(case, folder, run)
    except BaseException as exc:  # noqa: BLE001 - reported by the case's own test
        return RefusedRun(None, folder, None, exc)


@pytest.fixture(scope="module")
def refused_runs(good: GoodPair, tmp_path_factory: pytest.TempPathFactory
                 ) -> dict[str, RefusedRun]:
    """Every refused case run through the CLI, a few processes at a time (each is mostly
    interpreter start-up, so this halves the corpus's wall time on two cores)."""
    from concurrent.futures import ThreadPoolExecutor

    root = tmp_path_factory.mktemp("refused")
    workers = max(2, min(4, os.cpu_count() or 2))
    with ThreadPoolExecutor(workers) as pool:
        futures = {name: pool.submit(_run_refused, name, good, root / name)
                   for name in sorted(REFUSED)}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_input(name: str, refused_runs: dict[str, RefusedRun]) -> None:
    result = refused_runs[name]
    if result.error is not None:
        raise result.error
    assert result.case is not None and result.run is not None
    out_dir = result.folder / "out"
    _check_refused(result.run, result.case, out_dir, out_dir / "changes.gpkg")
    if result.case.secret:
        assert result.case.secret not in result.run.stdout + result.run.stderr
    assert not (result.folder / "inputs" / "PICKLE_RAN").exists()


# --- output problems (exit 2, and nothing lost) -----------------------------------------------

def _detect(good: GoodPair, out: Path, *extra: str | Path, cwd: Path) -> object:
    return run_idou("detect", good.before, good.after, "-o", out, "--model", good.model,
                    "--quiet", "--threads", "1", *extra, cwd=cwd)


def test_output_folder_does_not_exist(good: GoodPair, tmp_path: Path) -> None:
    out = tmp_path / "missing" / "changes.gpkg"
    run = _detect(good, out, cwd=tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr  # type: ignore[attr-defined]
    sentence = error_line(run.stderr)  # type: ignore[attr-defined]
    assert "missing" in sentence and "create it" in sentence
    assert not (tmp_path / "missing").exists()


def test_output_folder_is_a_file(good: GoodPair, tmp_path: Path) -> None:
    """A parent that is a regular file fails even for root (chmod does not stop root)."""
    blocker = tmp_path / "results"
    blocker.write_text("a file, not a folder")
    run = _detect(good, blocker / "changes.gpkg", cwd=tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr  # type: ignore[attr-defined]
    assert "results" in error_line(run.stderr)  # type: ignore[attr-defined]
    assert blocker.read_text() == "a file, not a folder"


def test_output_folder_not_writable(good: GoodPair, tmp_path: Path) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("running as root: chmod cannot make a folder unwritable "
                    "(test_output_folder_is_a_file covers an unwritable target)")
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        run = _detect(good, folder / "changes.gpkg", cwd=tmp_path)
        assert run.returncode == 2 and "Traceback" not in run.stderr  # type: ignore[attr-defined]
        assert "readonly" in error_line(run.stderr)  # type: ignore[attr-defined]
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_output_is_not_a_geopackage_name(good: GoodPair, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    run = _detect(good, out_dir / "changes.shp", cwd=tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr  # type: ignore[attr-defined]
    assert "changes.shp" in error_line(run.stderr)  # type: ignore[attr-defined]
    assert list(out_dir.iterdir()) == []


@pytest.fixture(scope="module")
def reviewed(good: GoodPair, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run's GeoPackage in which a surveyor recorded a result."""
    folder = tmp_path_factory.mktemp("reviewed")
    out = folder / "changes.gpkg"
    run = run_idou("detect", good.before, good.after, "-o", out, "--model", good.model,
                   "--parcels", good.parcels, "--quiet", "--threads", "1", cwd=folder)
    assert run.returncode == 0, run.stderr
    with staff_edit(out) as con:
        con.execute('UPDATE candidate_parcels SET "調査状況" = ?, "備考" = ? WHERE fid = 1',
                    ("課税対象", "現地確認済み 2026-10-01"))
    return out


def _copy_reviewed(reviewed: Path, folder: Path) -> Path:
    folder.mkdir()
    out = folder / "changes.gpkg"
    shutil.copy(reviewed, out)
    return out


def test_existing_output_without_force_is_kept(good: GoodPair, reviewed: Path,
                                               tmp_path: Path) -> None:
    out = _copy_reviewed(reviewed, tmp_path / "out")
    before = out.read_bytes()
    run = _detect(good, out, "--parcels", good.parcels, cwd=tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr  # type: ignore[attr-defined]
    assert "--force" in error_line(run.stderr)  # type: ignore[attr-defined]
    assert out.read_bytes() == before


def test_force_never_overwrites_a_file_idou_did_not_write(good: GoodPair,
                                                          tmp_path: Path) -> None:
    """``-o parcels.gpkg --force`` (the parcel input itself, or any other GeoPackage): refused,
    the file is untouched."""
    parcels = tmp_path / "parcels.gpkg"
    shutil.copy(good.parcels, parcels)
    before = parcels.read_bytes()
    run = _detect(good, parcels, "--parcels", parcels, "--force", cwd=tmp_path)
    assert run.returncode == 2, run.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in run.stderr  # type: ignore[attr-defined]
    assert "parcels.gpkg" in error_line(run.stderr)  # type: ignore[attr-defined]
    assert parcels.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parcels.gpkg"]


def test_output_held_open_by_another_process_is_refused_and_kept(
        good: GoodPair, reviewed: Path, tmp_path: Path) -> None:
    """QGIS (here: a child process) holds an exclusive lock: refuse, keep the staff's edits."""
    import subprocess
    import sys

    out = _copy_reviewed(reviewed, tmp_path / "out")
    before = out.read_bytes()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys, time\n"
         f"con = sqlite3.connect({str(out)!r}, isolation_level=None)\n"
         "con.execute('BEGIN EXCLUSIVE')\n"
         "print('locked', flush=True)\n"
         "sys.stdin.readline()\n"
         "con.execute('ROLLBACK')\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        run = _detect(good, out, "--parcels", good.parcels, "--force", cwd=tmp_path)
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=30)
    assert run.returncode == 2, run.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in run.stderr  # type: ignore[attr-defined]
    sentence = error_line(run.stderr)  # type: ignore[attr-defined]
    assert "changes.gpkg" in sentence and "close it" in sentence
    assert out.read_bytes() == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["changes.gpkg"]


def _holder(script: str) -> subprocess.Popen[str]:
    """A child process that runs ``script``, prints 'ready' and waits for a line on stdin."""
    return subprocess.Popen([sys.executable, "-c", script + "\nprint('ready', flush=True)\n"
                             "sys.stdin.readline()\n"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def _release(holder: subprocess.Popen[str]) -> None:
    assert holder.stdin is not None
    holder.stdin.write("\n")
    holder.stdin.flush()
    holder.wait(timeout=30)


def test_output_open_for_editing_in_wal_mode_is_refused(good: GoodPair, reviewed: Path,
                                                        tmp_path: Path) -> None:
    """QGIS edits GeoPackages in WAL mode: a connection that wrote an edit and stays open
    (-wal/-shm beside the file) makes a --force re-run refuse; the edit is kept."""
    out = _copy_reviewed(reviewed, tmp_path / "out")
    holder = _holder(
        "import sqlite3, sys\n"
        f"con = sqlite3.connect({str(out)!r}, isolation_level=None)\n"
        "con.execute('PRAGMA journal_mode=WAL')\n"
        "con.create_function('ST_IsEmpty', 1, lambda g: 0)\n"
        "for n in ('ST_MinX', 'ST_MaxX', 'ST_MinY', 'ST_MaxY'):\n"
        "    con.create_function(n, 1, lambda g: 0.0)\n"
        "con.execute('UPDATE candidate_parcels SET \"調査者\" = ? WHERE fid = 1', ('佐藤',))")
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        run = _detect(good, out, "--parcels", good.parcels, "--force", cwd=tmp_path)
    finally:
        _release(holder)
    assert run.returncode == 2, run.stderr  # type: ignore[attr-defined]
    assert "close it" in error_line(run.stderr)  # type: ignore[attr-defined]
    frame = pyogrio.read_dataframe(out, layer="candidate_parcels")
    assert "佐藤" in set(frame["調査者"].dropna())


def test_output_merely_open_for_reading_is_replaced_atomically(good: GoodPair, reviewed: Path,
                                                               tmp_path: Path) -> None:
    """A reader holding a plain file handle (no lock; Linux allows the rename): the re-run
    replaces the file in one step, the reader keeps the old contents, the edits are merged."""
    out = _copy_reviewed(reviewed, tmp_path / "out")
    old = out.read_bytes()
    holder = _holder(f"import sys\nfh = open({str(out)!r}, 'rb')")
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        run = _detect(good, out, "--parcels", good.parcels, "--force", cwd=tmp_path)
        assert run.returncode == 0, run.stderr  # type: ignore[attr-defined]
        # the holder's handle still reads the previous file, whole
        handles = [os.path.join(f"/proc/{holder.pid}/fd", n)
                   for n in os.listdir(f"/proc/{holder.pid}/fd")]
        previous = [h for h in handles if os.readlink(h).startswith(str(out))]
        assert previous and all(os.readlink(h).endswith("(deleted)") for h in previous)
        assert Path(previous[0]).read_bytes() == old
    finally:
        _release(holder)
    frame = pyogrio.read_dataframe(out, layer="candidate_parcels")
    assert list(frame[frame["調査状況"] == "課税対象"]["備考"]) == ["現地確認済み 2026-10-01"]


def test_rerun_with_force_keeps_review_edits(good: GoodPair, reviewed: Path,
                                             tmp_path: Path) -> None:
    out = _copy_reviewed(reviewed, tmp_path / "out")
    run = _detect(good, out, "--parcels", good.parcels, "--force", cwd=tmp_path)
    assert run.returncode == 0, run.stderr  # type: ignore[attr-defined]
    frame = pyogrio.read_dataframe(out, layer="candidate_parcels")
    edited = frame[frame["調査状況"] == "課税対象"]
    assert list(edited["備考"]) == ["現地確認済み 2026-10-01"]


# --- full disk ----------------------------------------------------------------------------

def _mount_tmpfs(folder: Path, size: str) -> bool:
    import os
    import subprocess

    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True)
    return done.returncode == 0


@pytest.mark.parametrize("size", ["64k", "320k"])
def test_full_disk_leaves_no_partial_output(size: str, good: GoodPair, tmp_path: Path) -> None:
    """A small tmpfs: 64 kB fills up during inference (the probability store), 320 kB while
    the GeoPackage is written; either way one sentence, exit 2, nothing left behind."""
    import subprocess

    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, size):
        pytest.skip("cannot mount a small tmpfs here (needs root); "
                    "test_enospc_at_the_write_leaves_no_partial_output simulates it")
    try:
        out = disk / "changes.gpkg"
        run = _detect(good, out, "--parcels", good.parcels, cwd=tmp_path)
        assert run.returncode == 2, run.stderr  # type: ignore[attr-defined]
        assert "Traceback" not in run.stderr  # type: ignore[attr-defined]
        assert "full" in error_line(run.stderr)  # type: ignore[attr-defined]
        assert not out.exists()
        assert sorted(p.name for p in disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_enospc_at_the_write_leaves_no_partial_output(
        good: GoodPair, reviewed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In process: a --force re-run's GeoPackage write fails with ENOSPC half-way; the
    reviewed file survives byte for byte and nothing else is left."""
    import errno

    from idou.geo.review import gpkg_output
    from idou.inference.detect import DetectJob, run_detect

    out = tmp_path / "changes.gpkg"
    shutil.copy(reviewed, out)
    previous = out.read_bytes()
    real = gpkg_output._write_run_info

    def full(path: Path, info: object) -> None:
        real(path, info)  # type: ignore[arg-type]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gpkg_output, "_write_run_info", full)
    with pytest.raises(Exception) as info:
        run_detect(DetectJob(good.before, good.after, out, model=str(good.model), threads=1,
                             force=True, parcels=good.parcels))
    assert "space" in str(info.value)
    assert out.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["changes.gpkg"]


# --- unusual but valid (exit 0, roofs found) --------------------------------------------------

def rgba(good: GoodPair, d: Path) -> tuple[Path, Path, list[str]]:
    data = np.concatenate([with_roofs(texture()), np.full((1, SIZE, SIZE), 255, np.uint8)])
    path = write_raster(d / "flight_2025_rgba.tif", data, photometric="RGB",
                        alpha="YES")
    return good.before, path, []


def four_bands_without_colour(good: GoodPair, d: Path) -> tuple[Path, Path, list[str]]:
    data = np.concatenate([with_roofs(texture()), texture(bands=1, seed=5)])
    path = write_raster(d / "flight_2025_4band.tif", data)
    with rasterio.open(path, "r+") as ds:
        ds.colorinterp = [ColorInterp.undefined] * 4
    return good.before, path, []


def cog(good: GoodPair, d: Path) -> tuple[Path, Path, list[str]]:
    path = d / "flight_2025_cog.tif"
    with rasterio.open(good.after) as src:
        profile = dict(src.profile, driver="COG", compress="deflate", blocksize=128)
        for key in ("blockxsize", "blockysize", "tiled", "interleave"):
            profile.pop(key, None)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(src.read())
    return good.before, path, []


def vrt_mosaic(good: GoodPair, d: Path) -> tuple[Path, Path, list[str]]:
    """The later flight as two sheets (左/右) and a VRT that mosaics them."""
    data = with_roofs(texture())
    half = SIZE // 2
    names = []
    for k in range(2):
        tr = transform((ORIGIN[0] + k * half * GSD, ORIGIN[1]))
        p = write_raster(d / f"sheet_{k}.tif", np.ascontiguousarray(data[:, :, k * half:
                                                                         (k + 1) * half]), tr=tr)
        names.append(p)
    t = transform()
    sources = "".join(
        f"<SimpleSource><SourceFilename relativeToVRT=\"1\">{p.name}</SourceFilename>"
        f"<SourceBand>{{b}}</SourceBand><SrcRect xOff=\"0\" yOff=\"0\" xSize=\"{half}\" "
        f"ySize=\"{SIZE}\"/><DstRect xOff=\"{k * half}\" yOff=\"0\" xSize=\"{half}\" "
        f"ySize=\"{SIZE}\"/></SimpleSource>" for k, p in enumerate(names))
    bands = "".join(f'<VRTRasterBand dataType="Byte" band="{b}">{sources.format(b=b)}'
                    "</VRTRasterBand>" for b in (1, 2, 3))
    vrt = d / "flight_2025.vrt"
    vrt.write_text(f'<VRTDataset rasterXSize="{SIZE}" rasterYSize="{SIZE}"><SRS>{CRS}</SRS>'
                   f"<GeoTransform>{t.c}, {t.a}, 0, {t.f}, 0, {t.e}</GeoTransform>{bands}"
                   "</VRTDataset>")
    return good.before, vrt, []


def tfw_with_crs_option(good: GoodPair, d: Path) -> tuple[Path, Path, list[str]]:
    path = write_raster(d / "sheet_09LD1234.tif", with_roofs(texture()), crs=None,
                        georef=False)
    _world_file(path.with_suffix(".tfw"))
    return good.before, path, ["--crs", "EPSG:6677"]


def before_in_another_crs(good: GoodPair, d: Path) -> tuple[Path, Path, list[str]]:
    """The earlier flight in JGD2011 zone VIII (EPSG:6676): warped onto the later grid."""
    return _warped(good.before, d / "flight_2024_zone8.tif", "EPSG:6676", None), good.after, []


def before_at_another_gsd(good: GoodPair, d: Path) -> tuple[Path, Path, list[str]]:
    """The earlier flight at 0.25 m: resampled onto the 0.2 m grid."""
    return _warped(good.before, d / "flight_2024_25cm.tif", CRS, 0.25), good.after, []


def _warped_to(src_path: Path, path: Path, crs: str) -> Path:
    return _warped(src_path, path, crs, None)


def _warped(src_path: Path, path: Path, crs: str, res: float | None) -> Path:
    with rasterio.open(src_path) as src:
        tr, w, h = calculate_default_transform(src.crs, crs, src.width, src.height,
                                               *src.bounds, resolution=res)
        data = np.zeros((3, h, w), np.uint8)
        reproject(src.read(), data, src_transform=src.transform, src_crs=src.crs,
                  dst_transform=tr, dst_crs=crs, resampling=Resampling.bilinear)
    return write_raster(path, data, crs=crs, tr=tr)


def japanese_names_with_spaces(good: GoodPair, d: Path) -> tuple[Path, Path, list[str]]:
    """Folders and files named as staff name them: Japanese, spaces, '&' and quotes."""
    folder = d / "固定資産税 2025" / "オルソ's"
    folder.mkdir(parents=True)
    before, after = folder / "航空写真 2024.tif", folder / "航空写真&2025.tif"
    shutil.copy(good.before, before)
    shutil.copy(good.after, after)
    return before, after, []


HANDLED: dict[str, Callable[[GoodPair, Path], tuple[Path, Path, list[str]]]] = {
    f.__name__: f for f in (rgba, four_bands_without_colour, cog, vrt_mosaic,
                            tfw_with_crs_option, before_in_another_crs, before_at_another_gsd,
                            japanese_names_with_spaces)}


def roof_centres() -> list[Point]:
    return [Point(ORIGIN[0] + (c + s / 2) * GSD, ORIGIN[1] - (r + s / 2) * GSD)
            for r, c, s in ROOFS]


def assert_roofs_found(out: Path) -> gpd.GeoDataFrame:
    changes = gpd.read_file(out, layer="changes")
    new = changes[changes["channel"] == "new"]
    for centre in roof_centres():
        assert new.contains(centre).any(), f"the roof at {centre} was missed"
    return changes


def _run_handled(name: str, good: GoodPair, folder: Path
                 ) -> tuple[subprocess.CompletedProcess[str] | None, BaseException | None]:
    try:
        folder.mkdir(parents=True)
        before, after, options = HANDLED[name](good, folder)
        return run_idou("detect", before, after, "-o", folder / "changes.gpkg", "--model",
                        good.model, "--threads", "1", *options, cwd=folder), None
    except BaseException as exc:  # noqa: BLE001 - reported by the case's own test
        return None, exc


@pytest.fixture(scope="module")
def handled_runs(good: GoodPair, tmp_path_factory: pytest.TempPathFactory
                 ) -> dict[str, tuple[Path, subprocess.CompletedProcess[str] | None,
                                      BaseException | None]]:
    """Every unusual-but-valid case run through the CLI, a few processes at a time."""
    from concurrent.futures import ThreadPoolExecutor

    root = tmp_path_factory.mktemp("handled")
    with ThreadPoolExecutor(max(2, min(4, os.cpu_count() or 2))) as pool:
        futures = {name: pool.submit(_run_handled, name, good, root / name)
                   for name in sorted(HANDLED)}
        return {name: (root / name, *f.result()) for name, f in futures.items()}


@pytest.mark.parametrize("name", sorted(HANDLED))
def test_unusual_input_is_handled(name: str, handled_runs: dict[
        str, tuple[Path, subprocess.CompletedProcess[str] | None, BaseException | None]]
                                  ) -> None:
    folder, run, error = handled_runs[name]
    if error is not None:
        raise error
    assert run is not None
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert_roofs_found(folder / "changes.gpkg")
    if name == "four_bands_without_colour":
        assert "bands 1, 2, 3 are used as red, green, blue" in run.stderr


# --- parcels that are broken, elsewhere or in another CRS (exit 0) -----------------------------

def _parcels_run(good: GoodPair, parcels: Path, cwd: Path) -> tuple[object, gpd.GeoDataFrame]:
    out = cwd / "changes.gpkg"
    run = run_idou("detect", good.before, good.after, "-o", out, "--model", good.model,
                   "--parcels", parcels, "--threads", "1", cwd=cwd)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    return run, gpd.read_file(out, layer="candidate_parcels")


def test_chiban_column_under_another_name(good: GoodPair, tmp_path: Path) -> None:
    """--chiban-column names the 地番 column (the error for a missing 地番 suggests it)."""
    frame = parcels_frame()
    path = tmp_path / "parcels_bangou.gpkg"
    frame.rename(columns={"地番": "番号"}).to_file(path, driver="GPKG")
    out = tmp_path / "changes.gpkg"
    run = run_idou("detect", good.before, good.after, "-o", out, "--model", good.model,
                   "--parcels", path, "--chiban-column", "番号", "--threads", "1", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    candidates = gpd.read_file(out, layer="candidate_parcels")
    assert len(candidates) and set(candidates["地番"]) <= set(frame["地番"])


def test_parcels_with_self_intersecting_empty_and_null_geometries(good: GoodPair,
                                                                  tmp_path: Path) -> None:
    frame = parcels_frame()
    x0, y0, x1, y1 = frame.geometry.iloc[0].bounds
    bowtie = Polygon([(x0, y0), (x1, y1), (x1, y0), (x0, y1)])  # self-intersecting
    assert not bowtie.is_valid
    geoms = [bowtie, *frame.geometry.iloc[1:], Polygon(), None]
    broken = gpd.GeoDataFrame({"地番": ["1-1", "1-2", "1-3", "1-4", "9-9", "9-10"],
                               "所在": ["大手町一丁目"] * 6}, geometry=geoms, crs=CRS)
    path = tmp_path / "parcels_broken.gpkg"
    broken.to_file(path, driver="GPKG")
    run, candidates = _parcels_run(good, path, tmp_path)
    assert set(candidates["地番"]) == {"1-1", "1-2", "1-3", "1-4"}  # the bowtie was repaired
    stderr: str = run.stderr  # type: ignore[attr-defined]
    assert re.search(r"repaired 1 .*parcels_broken\.gpkg|parcels_broken\.gpkg.*repaired 1",
                     stderr), stderr
    assert "2" in stderr and "dropped" in stderr


def test_parcels_in_another_crs_are_reprojected(good: GoodPair, tmp_path: Path) -> None:
    path = tmp_path / "parcels_wgs84.geojson"
    parcels_frame("EPSG:4326").to_file(path, driver="GeoJSON")
    _, candidates = _parcels_run(good, path, tmp_path)
    assert sorted(candidates["地番"]) == ["1-1", "1-2", "1-3", "1-4"]
    assert candidates.crs.to_epsg() == 6677
    expected = parcels_frame().set_index("地番").geometry
    for chiban, geom in zip(candidates["地番"], candidates.geometry, strict=True):
        assert shapely.hausdorff_distance(geom, expected[chiban]) < 0.01  # metres


def test_parcels_outside_the_flights_warn_and_give_no_candidates(good: GoodPair,
                                                                 tmp_path: Path) -> None:
    path = tmp_path / "parcels_elsewhere.gpkg"
    parcels_frame(offset=(5000.0, 0.0)).to_file(path, driver="GPKG")
    run, candidates = _parcels_run(good, path, tmp_path)
    assert len(candidates) == 0
    stderr: str = run.stderr  # type: ignore[attr-defined]
    assert "warning:" in stderr and "parcels_elsewhere.gpkg" in stderr, stderr


def test_mojxml_parcels_land_where_x_is_northing(good: GoodPair, tmp_path: Path) -> None:
    """A 地図XML parcel (X northing, Y easting) around roof 1 becomes a candidate parcel."""
    r, c, s = ROOFS[0]
    x0, x1 = ORIGIN[0] + (c - 6) * GSD, ORIGIN[0] + (c + s + 6) * GSD
    y0, y1 = ORIGIN[1] - (r + s + 6) * GSD, ORIGIN[1] - (r - 6) * GSD
    points = {"P1": (y0, x0), "P2": (y0, x1), "P3": (y1, x1), "P4": (y1, x0)}  # (X=N, Y=E)
    path = tmp_path / "map.xml"
    path.write_text(moj_xml(points, chiban="55-1"), encoding="utf-8")
    _, candidates = _parcels_run(good, path, tmp_path)
    assert list(candidates["地番"]) == ["55-1"]
    assert shapely.equals_exact(shapely.normalize(candidates.geometry.iloc[0]),
                                shapely.normalize(shapely.multipolygons(
                                    [box(x0, y0, x1, y1)])), 1e-6)


def test_corpus_size() -> None:
    """The issue asks for at least 30 generated bad inputs."""
    assert len(REFUSED) + len(HANDLED) >= 30
