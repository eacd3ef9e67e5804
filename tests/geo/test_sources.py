"""open_source: every input form gives the same pixels; bad files are one-sentence errors."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rasterio.enums import ColorInterp

from idou.errors import InputNotFound, UnreadableInput, UnusableCRS, UserInputError
from idou.geo.raster.sources import open_source

from .conftest import CRS_IX, ORIGIN, texture, write_raster

RGB = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]


def _read(source_path: str) -> tuple[np.ndarray, np.ndarray]:
    with rasterio.open(source_path) as ds:
        return ds.read(), ds.dataset_mask()


def _sheets(tmp_path: Path, full: np.ndarray, rows: int = 2, cols: int = 3, **kw: object
            ) -> list[Path]:
    """Cut ``full`` into rows x cols abutting GeoTIFF sheets in tmp_path/sheets."""
    folder = tmp_path / "sheets"
    folder.mkdir()
    h, w = full.shape[1] // rows, full.shape[2] // cols
    out = []
    for i in range(rows):
        for j in range(cols):
            origin = (ORIGIN[0] + j * w * 0.2, ORIGIN[1] - i * h * 0.2)
            part = full[:, i * h:(i + 1) * h, j * w:(j + 1) * w]
            out.append(write_raster(folder / f"sheet_{i}{j}.tif", part, origin=origin, **kw))
    return out


def test_geotiff_opens_as_itself(tmp_path: Path) -> None:
    data = texture(40, 60)
    path = write_raster(tmp_path / "flight.tif", data, colorinterp=RGB)
    src = open_source(path)
    assert Path(src.path) == path
    assert src.label == "flight.tif"
    assert (src.width, src.height, src.count) == (60, 40, 3)
    assert src.crs.to_epsg() == 6677
    assert src.gsd == pytest.approx(0.2)
    assert path in [Path(f) for f in src.files]
    assert src.colorinterp == ("red", "green", "blue")


def test_vrt_file_opens(tmp_path: Path) -> None:
    data = texture(40, 60)
    tif = write_raster(tmp_path / "flight.tif", data)
    rasterio.shutil.copy(tif, tmp_path / "flight.vrt", driver="VRT")
    src = open_source(tmp_path / "flight.vrt")
    assert np.array_equal(_read(src.path)[0], data)


def test_world_file_without_crs_needs_crs(tmp_path: Path) -> None:
    data = texture(40, 60)
    path = write_raster(tmp_path / "sheet.tif", data, crs=None, georef=False)
    # centre of the upper-left pixel, as world files record it
    (tmp_path / "sheet.tfw").write_text(f"0.2\n0\n0\n-0.2\n{ORIGIN[0] + 0.1}\n{ORIGIN[1] - 0.1}\n")
    with pytest.raises(UnusableCRS, match=r"sheet\.tif has no CRS.*--crs"):
        open_source(path)
    src = open_source(path, crs="EPSG:6677")
    assert src.crs.to_epsg() == 6677
    assert (src.transform.c, src.transform.f) == pytest.approx(ORIGIN)
    assert tmp_path / "sheet.tfw" in [Path(f) for f in src.files]
    pixels, mask = _read(src.path)
    assert np.array_equal(pixels, data)
    assert mask.all()


def test_jpeg_with_jgw_opens_with_crs(tmp_path: Path) -> None:
    data = texture(32, 48)
    path = write_raster(tmp_path / "photo.jpg", data, crs=None, georef=False, driver="JPEG")
    (tmp_path / "photo.jgw").write_text(f"0.2\n0\n0\n-0.2\n{ORIGIN[0] + 0.1}\n{ORIGIN[1] - 0.1}\n")
    src = open_source(path, crs=CRS_IX)
    assert (src.transform.c, src.transform.f) == pytest.approx(ORIGIN)
    assert src.count == 3


def test_png_without_world_file_is_refused(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "scan.png", texture(16, 16), crs=None, georef=False,
                        driver="PNG")
    with pytest.raises(UnusableCRS, match=r"scan\.png has no georeferencing.*world file"):
        open_source(path, crs=CRS_IX)


def test_tiff_without_world_file_is_refused(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "bare.tif", texture(16, 16), crs=None, georef=False)
    with pytest.raises(UnusableCRS, match=r"bare\.tif has no georeferencing.*\.tfw"):
        open_source(path)


@pytest.mark.parametrize("form", ["folder", "list", "txt"])
def test_sheets_mosaic_equals_one_file(tmp_path: Path, form: str) -> None:
    full = texture(60, 90)
    sheets = _sheets(tmp_path, full)
    spec: object
    if form == "folder":
        spec = tmp_path / "sheets"
    elif form == "list":
        spec = [str(s) for s in reversed(sheets)]
    else:
        listing = tmp_path / "sheets.txt"
        listing.write_text("\n".join(f"sheets/{s.name}" for s in sheets) + "\n")
        spec = listing
    src = open_source(spec, workdir=tmp_path / "work")  # type: ignore[arg-type]
    assert src.path.endswith(".vrt")
    assert (src.transform.c, src.transform.f) == pytest.approx(ORIGIN)
    assert sorted(Path(f) for f in src.files if f.suffix == ".tif") == sorted(sheets)
    pixels, mask = _read(src.path)
    assert np.array_equal(pixels, full)
    assert mask.all()


def test_gaps_between_sheets_are_invalid(tmp_path: Path) -> None:
    full = texture(60, 90)
    sheets = _sheets(tmp_path, full)
    sheets[4].unlink()  # the middle sheet of the lower row is missing
    src = open_source(tmp_path / "sheets")
    pixels, mask = _read(src.path)
    assert not mask[30:, 30:60].any()
    assert mask[:30].all() and mask[30:, :30].all() and mask[30:, 60:].all()
    assert np.array_equal(pixels[:, :30], full[:, :30])


def test_sheet_masks_carry_into_the_mosaic(tmp_path: Path) -> None:
    full = texture(40, 40)
    full[:, :5, :] = 0
    sheets = _sheets(tmp_path, full, rows=2, cols=2, nodata=0)
    assert len(sheets) == 4
    _, mask = _read(open_source(tmp_path / "sheets").path)
    assert not mask[:5].any() and mask[5:].all()


def test_sheet_alpha_becomes_the_mask(tmp_path: Path) -> None:
    rgb = texture(20, 20)
    alpha = np.full((1, 20, 20), 255, np.uint8)
    alpha[0, :, :4] = 0
    folder = tmp_path / "sheets"
    folder.mkdir()
    for j in range(2):
        write_raster(folder / f"s{j}.tif", np.concatenate([rgb, alpha]),
                     origin=(ORIGIN[0] + j * 4.0, ORIGIN[1]),
                     colorinterp=[*RGB, ColorInterp.alpha])
    src = open_source(folder)
    assert src.count == 3
    _, mask = _read(src.path)
    assert not mask[:, :4].any() and not mask[:, 20:24].any() and mask[:, 4:20].all()


@pytest.mark.parametrize(("what", "kwargs", "data"), [
    ("CRS", {"crs": "EPSG:6676"}, None),
    ("band count", {}, texture(20, 20, bands=1)),
    ("pixel size", {"gsd": 0.25}, None),
    ("data type", {}, texture(20, 20).astype(np.uint16)),
    ("colour interpretation", {"colorinterp": [ColorInterp.gray, ColorInterp.undefined,
                                               ColorInterp.undefined]}, None),
])
def test_odd_sheet_is_named(tmp_path: Path, what: str, kwargs: dict[str, object],
                            data: np.ndarray | None) -> None:
    _sheets(tmp_path, texture(40, 60), rows=2, cols=3)
    odd = data if data is not None else texture(20, 20)
    write_raster(tmp_path / "sheets" / "odd_one.tif", odd,
                 origin=(ORIGIN[0] + 12.0, ORIGIN[1]), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match=rf"odd_one\.tif differs .* in {what}"):
        open_source(tmp_path / "sheets")


def test_bgr_sheet_among_rgb_sheets_is_read_by_colour(tmp_path: Path) -> None:
    """A sheet stored blue, green, red (and saying so) is mosaicked by colour, as a single
    file is read: the mosaic holds the true colours, not swapped red and blue."""
    full = texture(40, 60)
    sheets = _sheets(tmp_path, full, rows=2, cols=3, colorinterp=RGB)
    part = full[:, 20:40, 20:40]
    write_raster(sheets[4], np.ascontiguousarray(part[::-1]),
                 origin=(ORIGIN[0] + 4.0, ORIGIN[1] - 4.0),
                 colorinterp=[ColorInterp.blue, ColorInterp.green, ColorInterp.red])
    src = open_source(tmp_path / "sheets", workdir=tmp_path / "work")
    assert src.colorinterp == ("red", "green", "blue")
    pixels, _ = _read(src.path)
    assert np.array_equal(pixels, full)


def test_sheets_without_crs_use_the_given_crs(tmp_path: Path) -> None:
    full = texture(20, 40)
    folder = tmp_path / "sheets"
    folder.mkdir()
    for j in range(2):
        write_raster(folder / f"s{j}.tif", full[:, :, j * 20:(j + 1) * 20], crs=None,
                     georef=False)
        x = ORIGIN[0] + j * 4.0 + 0.1
        (folder / f"s{j}.tfw").write_text(f"0.2\n0\n0\n-0.2\n{x}\n{ORIGIN[1] - 0.1}\n")
    with pytest.raises(UnusableCRS, match=r"s0\.tif has no CRS"):
        open_source(folder)
    src = open_source(folder, crs="EPSG:6677")
    assert np.array_equal(_read(src.path)[0], full)


def test_empty_folder_and_missing_path(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="folder empty holds no raster sheets"):
        open_source(tmp_path / "empty")
    with pytest.raises(InputNotFound, match=r"nowhere\.tif does not exist"):
        open_source(tmp_path / "nowhere.tif")


def _good_tiff(tmp_path: Path) -> bytes:
    path = write_raster(tmp_path / "good.tif", texture(128, 128), tiled=True, blockxsize=32,
                        blockysize=32)
    return path.read_bytes()


def _patch_size(data: bytes, width: int, height: int) -> bytes:
    """Rewrite ImageWidth/ImageLength of a little-endian classic TIFF as LONG values."""
    b = bytearray(data)
    assert b[:2] == b"II"
    ifd = struct.unpack("<I", b[4:8])[0]
    for i in range(struct.unpack("<H", b[ifd:ifd + 2])[0]):
        entry = ifd + 2 + 12 * i
        tag = struct.unpack("<H", b[entry:entry + 2])[0]
        if tag in (256, 257):
            b[entry + 2:entry + 4] = struct.pack("<H", 4)
            b[entry + 8:entry + 12] = struct.pack("<I", width if tag == 256 else height)
    return bytes(b)


@pytest.mark.parametrize(("name", "make", "message"), [
    ("zero.tif", lambda good: b"", r"zero\.tif is an empty \(zero-byte\) file"),
    ("cut.tif", lambda good: good[: len(good) // 2], r"cut\.tif is truncated"),
    ("noise.tif", lambda good: good[:16] + bytes(np.random.default_rng(0).integers(
        0, 256, len(good) - 16, dtype=np.uint8)), r"noise\.tif is not a readable raster"),
    ("notes.tif", lambda good: b"survey notes, not an image\n",
     r"notes\.tif is not a readable raster"),
    ("parcels.csv", lambda good: b"chiban,owner\n1-2,x\n", r"parcels\.csv is not a readable"),
    ("huge.tif", lambda good: _patch_size(good, 10**6, 10**6), r"huge\.tif"),
])
def test_broken_files_are_named(tmp_path: Path, name: str, make: object, message: str) -> None:
    good = _good_tiff(tmp_path)
    path = tmp_path / name
    path.write_bytes(make(good))  # type: ignore[operator]
    with pytest.raises(UnreadableInput, match=message) as info:
        open_source(path)
    assert "\n" not in str(info.value)


def test_broken_sheet_in_a_folder_is_named(tmp_path: Path) -> None:
    _sheets(tmp_path, texture(40, 60))
    shutil.copy(tmp_path / "sheets" / "sheet_00.tif", tmp_path / "sheets" / "sheet_99.tif")
    with open(tmp_path / "sheets" / "sheet_99.tif", "r+b") as f:
        f.truncate(300)
    with pytest.raises(UnreadableInput, match=r"sheet_99\.tif"):
        open_source(tmp_path / "sheets")


def test_vrt_with_a_missing_sheet_names_it(tmp_path: Path) -> None:
    sheets = _sheets(tmp_path, texture(40, 60))
    src = open_source(tmp_path / "sheets", workdir=tmp_path / "work")
    shutil.copy(src.path, tmp_path / "flight.vrt")
    sheets[2].unlink()
    with pytest.raises(InputNotFound, match=r"flight\.vrt refers to sheet_02\.tif, which does"):
        open_source(tmp_path / "flight.vrt")


@pytest.mark.parametrize("suffix", ["tfw", "tifw", "wld"])
def test_world_file_suffixes(tmp_path: Path, suffix: str) -> None:
    path = write_raster(tmp_path / "sheet.tif", texture(8, 8), crs=None, georef=False)
    (tmp_path / f"sheet.{suffix}").write_text(f"0.2\n0\n0\n-0.2\n{ORIGIN[0] + 0.1}\n"
                                             f"{ORIGIN[1] - 0.1}\n")
    src = open_source(path, crs=CRS_IX)
    assert (src.transform.c, src.transform.f) == pytest.approx(ORIGIN)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_named(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "locked.tif", texture(8, 8))
    path.chmod(0)
    try:
        with pytest.raises(UserInputError, match=r"locked\.tif cannot be read \(permission"):
            open_source(path)
    finally:
        path.chmod(0o644)


def test_sheets_with_different_nodata_keep_each_sheets_own_mask(tmp_path: Path) -> None:
    """Sheet A marks nodata with 0, sheet B with 255: each sheet's own value is masked, and
    B's real black pixels stay valid (the mosaic's mask is the union of the sheets' masks)."""
    folder = tmp_path / "sheets"
    folder.mkdir()
    a, b = texture(20, 20), texture(20, 20)
    a[:, :, :3] = 0
    b[:, :, :3] = 255
    b[:, :5, 10:] = 0  # real black roof pixels in B
    write_raster(folder / "a.tif", a, nodata=0, colorinterp=RGB)
    write_raster(folder / "b.tif", b, nodata=255, colorinterp=RGB,
                 origin=(ORIGIN[0] + 4.0, ORIGIN[1]))
    _, mask = _read(open_source(folder, workdir=tmp_path / "work").path)
    assert not mask[:, :3].any() and not mask[:, 20:23].any()
    assert mask[:, 3:20].all() and mask[:, 23:].all()
