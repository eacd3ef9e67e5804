"""Open a flight: a GeoTIFF, COG, VRT, TIFF + world file, or a folder or list of sheets (図郭).

Every input becomes a :class:`RasterSource`: the path rasterio opens (the file itself, or a VRT
written here that mosaics sheets or records a CRS given with ``--crs``), what to call it in
messages, and its header. Problems a user can fix are :class:`UserInputError`, one sentence each.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from xml.sax.saxutils import escape

import rasterio
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.errors import CRSError, NotGeoreferencedWarning, RasterioError, RasterioIOError

from idou.errors import (
    InputNotFound,
    InvalidOption,
    UnreadableInput,
    UnusableCRS,
    UserInputError,
)
from idou.geo.files.network import check_local_source
from idou.geo.files.owned_outputs import vrt_marker_xml
from idou.geo.files.text_files import read_text
from idou.geo.raster.grid import Grid

SHEET_SUFFIXES = (".tif", ".tiff", ".jpg", ".jpeg", ".png", ".jp2")
WORLD_FILE_SUFFIXES = (".tfw", ".tifw", ".tiffw", ".jgw", ".jpgw", ".pgw", ".pngw", ".wld")
# A header claiming this many more pixel bytes than the file holds cannot be a photo.
_MAX_COMPRESSION = 100_000
_MIN_SUSPICIOUS_BYTES = 10**9


@dataclass(frozen=True)
class RasterSource:
    """One flight as rasterio sees it, with where it came from.

    Attributes:
        path: What rasterio opens: the user's file, or a VRT written by :func:`open_source`.
        label: How messages name the input (the file or folder name the user gave).
        files: Every underlying file (sheets, world files, sidecars), e.g. for hashing.
        nodata: The nodata value of the bands, if any.
        colorinterp: Colour interpretation names per band ("red", "alpha", ...).
        descriptions: Band descriptions (may be empty strings).
        has_overviews: Whether band 1 has overviews (cheap decimated reads).
        grid_crs: The ``--crs`` the user gave: the CRS of inputs that record none, and the
            working grid onto which a flight in a geographic, non-metric or distorting CRS
            (latitude/longitude, Web Mercator) is warped.
    """

    path: str
    label: str
    crs: CRS
    transform: Affine
    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    files: tuple[Path, ...]
    nodata: float | None = None
    colorinterp: tuple[str, ...] = ()
    descriptions: tuple[str, ...] = ()
    has_overviews: bool = False
    grid_crs: CRS | None = None

    @property
    def grid(self) -> Grid:
        """The source's own pixel grid."""
        return Grid(self.crs, self.transform, self.width, self.height)

    @property
    def gsd(self) -> float:
        """Pixel size in CRS units."""
        return self.grid.gsd

    def open(self) -> rasterio.io.DatasetReader:
        """Open for reading (use in a ``with`` block)."""
        return _open_quiet(self.path, self.label)


def open_source(spec: str | Path | Sequence[str | Path], crs: str | None = None,
                workdir: Path | None = None) -> RasterSource:
    """Open one flight.

    Args:
        spec: A raster file (GeoTIFF, COG, VRT, TIFF/JPEG/PNG with a world file), a folder of
            sheets, a text file (``.txt``) listing sheets one per line, a glob pattern, or a
            sequence of sheet paths. Several sheets are mosaicked through a VRT.
        crs: The CRS (e.g. ``"EPSG:6677"``) of inputs that record none (world files only);
            for inputs in a geographic, non-metric or distorting CRS, the working grid
            preflight warps them onto (kept as ``grid_crs``). Inputs in a usable projected CRS
            keep their own.
        workdir: Where VRTs are written; a temporary folder (removed at exit) by default.

    Returns:
        The opened source's description.

    Raises:
        UserInputError: The input is missing, unreadable, not georeferenced, has no CRS and no
            ``crs`` was given, or its sheets disagree in CRS, band count, dtype or resolution.
    """
    target_crs = _parse_crs(crs) if crs else None
    for given in [spec] if isinstance(spec, str | Path) else spec:
        check_local_source(given, "a flight")
    sheets, label = _expand(spec)
    for sheet in sheets:
        check_local_source(sheet, "a flight sheet")
    if len(sheets) == 1 and not _is_listing(spec):
        source = _open_single(sheets[0], target_crs, workdir)
    else:
        source = _open_mosaic(sheets, label, target_crs, workdir)
    return replace(source, grid_crs=target_crs)


# --- inputs --------------------------------------------------------------------------------


def _is_listing(spec: str | Path | Sequence[str | Path]) -> bool:
    if isinstance(spec, str | Path):
        p = Path(spec)
        return p.is_dir() or p.suffix.lower() == ".txt" or any(ch in str(spec) for ch in "*?[")
    return True


def _expand(spec: str | Path | Sequence[str | Path]) -> tuple[list[Path], str]:
    """The sheet files named by ``spec`` and a label for messages."""
    if isinstance(spec, str | Path):
        text = str(spec)
        p = Path(text).expanduser()
        if any(ch in text for ch in "*?[") and not p.exists():
            sheets = sorted(x for x in Path(p.anchor or ".").glob(
                str(p.relative_to(p.anchor)) if p.is_absolute() else text) if x.is_file())
            if not sheets:
                raise InputNotFound(f"no files match {text}; check the pattern.")
            return sheets, text
        if not p.exists():
            raise InputNotFound(f"{text} does not exist; check the path.")
        if p.is_dir():
            sheets = sorted(x for x in p.iterdir()
                            if x.is_file() and x.suffix.lower() in SHEET_SUFFIXES
                            and not x.name.startswith("."))
            if not sheets:
                raise UserInputError(
                    f"folder {p.name} holds no raster sheets ({', '.join(SHEET_SUFFIXES)}); "
                    "point to the folder with the orthophoto sheets.")
            return sheets, p.name
        if p.suffix.lower() == ".txt":
            lines = [ln.strip() for ln in read_text(p, "sheet list").splitlines()]
            for ln in lines:
                if ln and not ln.startswith("#"):
                    check_local_source(ln, f"listed in {p.name}")
            sheets = [(p.parent / ln).resolve() for ln in lines if ln and not ln.startswith("#")]
            if not sheets:
                raise UserInputError(f"sheet list {p.name} names no files; list one per line.")
            for s in sheets:
                if not s.is_file():
                    raise InputNotFound(f"{s.name} (listed in {p.name}) does not exist; "
                                        "fix the sheet list.")
            return sheets, p.name
        return [p], p.name
    sheets = [Path(s).expanduser() for s in spec]
    if not sheets:
        raise UserInputError("an empty list of sheets was given; name at least one raster.")
    for s in sheets:
        if not s.is_file():
            raise InputNotFound(f"{s.name} does not exist; check the sheet list.")
    label = sheets[0].parent.name or sheets[0].name
    return sheets, f"{label} ({len(sheets)} sheets)"


def _parse_crs(text: str) -> CRS:
    try:
        return CRS.from_user_input(text)
    except CRSError as exc:
        raise InvalidOption(
            f"--crs {text} is not a CRS rasterio knows; give it as EPSG:6677 or similar."
        ) from exc


def _open_quiet(path: str | Path, label: str) -> rasterio.io.DatasetReader:
    """rasterio.open with failures turned into one-sentence user errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            return rasterio.open(path)
        except (RasterioIOError, RasterioError) as exc:
            raise UnreadableInput(
                f"{label} is not a readable raster (corrupt, truncated or not an image: "
                f"{describe_error(exc)}); re-export or re-copy it as a GeoTIFF."
            ) from exc


def describe_error(exc: BaseException) -> str:
    """A short one-line reason from a (possibly chained) rasterio/GDAL error."""
    seen = exc
    while "previous exception" in str(seen) and seen.__cause__ is not None:
        seen = seen.__cause__
    text = str(seen).strip().splitlines()[0] if str(seen).strip() else type(seen).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _world_file(path: Path) -> Path | None:
    """The world file GDAL would read beside ``path``, if any."""
    ext = path.suffix.lower().lstrip(".")
    candidates = {f"{ext[0]}{ext[-1]}w", f"{ext}w", "wld"} if ext else {"wld"}
    for sibling in path.parent.glob(path.stem + ".*"):
        if sibling.suffix.lower().lstrip(".") in candidates:
            return sibling
    return None


@dataclass(frozen=True)
class _Header:
    path: Path
    crs: CRS | None
    transform: Affine
    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    nodata: float | None
    colorinterp: tuple[str, ...]
    descriptions: tuple[str, ...]
    has_overviews: bool
    block: tuple[int, int]
    files: tuple[Path, ...]


def _read_header(path: Path, label: str | None = None) -> _Header:
    """Open ``path`` and check what can be checked from its header."""
    label = label or path.name
    try:
        return _read_header_checked(path, label)
    except CPLE_BaseError as exc:  # GDAL errors raised after open (e.g. tile counts)
        raise UnreadableInput(f"{label} has a corrupt header ({describe_error(exc)}); "
                              "re-export or re-copy it as a GeoTIFF.") from exc


def _read_header_checked(path: Path, label: str) -> _Header:
    if path.is_file() and path.stat().st_size == 0:
        raise UnreadableInput(f"{label} is an empty (zero-byte) file; copy the raster again.")
    if path.exists() and not os.access(path, os.R_OK):
        raise UnreadableInput(f"{label} cannot be read (permission denied); check the file's "
                              "permissions.")
    with _open_quiet(path, label) as ds:
        if ds.count == 0 or ds.width == 0 or ds.height == 0:
            raise UserInputError(f"{label} holds no raster pixels; export it again as a GeoTIFF.")
        georef = ds.transform != Affine.identity()
        if not georef and ds.gcps[0]:
            raise UserInputError(
                f"{label} is georeferenced only by control points (GCPs); rectify it first "
                "with gdalwarp -t_srs EPSG:6677 (your zone).")
        if not georef:
            hint = "a world file (.tfw for TIFF, .jgw for JPEG, .pgw for PNG)"
            raise UnusableCRS(
                f"{label} has no georeferencing (no geotransform and no world file); add {hint} "
                "beside it and pass --crs, or export it as a GeoTIFF.")
        try:
            files = tuple(Path(f) for f in ds.files) or (path,)
        except RasterioError:
            files = (path,)
        for f in files[1:]:
            if not str(f).startswith("/vsi") and not f.exists():
                raise InputNotFound(
                    f"{label} refers to {f.name}, which does not exist; restore that file or "
                    "rebuild the mosaic.")
        if (world := _world_file(path)) is not None and world not in files:
            files = files + (world,)
        block = ds.block_shapes[0] if ds.block_shapes else (1, ds.width)
        _check_blocks(ds, path, label, (int(block[0]), int(block[1])))
        return _Header(
            path=path, crs=ds.crs, transform=ds.transform, width=ds.width, height=ds.height,
            count=ds.count, dtypes=tuple(ds.dtypes), nodata=ds.nodata,
            colorinterp=tuple(ci.name for ci in ds.colorinterp),
            descriptions=tuple(d or "" for d in ds.descriptions),
            has_overviews=bool(ds.overviews(1)), block=(int(block[0]), int(block[1])),
            files=files,
        )


def _check_blocks(ds: rasterio.io.DatasetReader, path: Path, label: str,
                  block: tuple[int, int]) -> None:
    """Refuse a TIFF whose blocks (last one and a sample) lie beyond the end of the file.

    Reads only the block index from the header; catches truncated copies before any pixel is
    read.
    """
    if ds.driver != "GTiff" or not path.is_file():
        return
    size = path.stat().st_size
    nrows = -(-ds.height // block[0])
    ncols = -(-ds.width // block[1])
    cells = {(nrows - 1, ncols - 1), (0, 0)}
    cells |= {(r * (nrows - 1) // 7, c * (ncols - 1) // 7) for r in range(8) for c in range(8)}
    for bidx in sorted({1, ds.count}):
        for r, c in cells:
            try:
                off = ds.get_tag_item(f"BLOCK_OFFSET_{c}_{r}", "TIFF", bidx=bidx)
                nbytes = ds.get_tag_item(f"BLOCK_SIZE_{c}_{r}", "TIFF", bidx=bidx)
            except RasterioError:
                return
            if off is None or nbytes is None:
                return
            if int(off) + int(nbytes) > size:
                raise UnreadableInput(
                    f"{label} is truncated (it ends at {size} bytes but its pixels run to "
                    f"{int(off) + int(nbytes)}); copy or export the file again.")


def _check_size(h: _Header, label: str) -> None:
    """Refuse a header claiming far more pixels than its files could hold."""
    nbytes = sum(f.stat().st_size for f in h.files if f.is_file())
    claimed = h.width * h.height * h.count
    if claimed > _MIN_SUSPICIOUS_BYTES and claimed > _MAX_COMPRESSION * max(nbytes, 1):
        raise UnreadableInput(
            f"{label} claims {h.width} x {h.height} px but holds only {nbytes} bytes; its header "
            "is corrupt or the file truncated; re-export or re-copy it.")


def _source_from_header(h: _Header, path: str, label: str, files: tuple[Path, ...],
                        crs: CRS) -> RasterSource:
    return RasterSource(
        path=path, label=label, crs=crs, transform=h.transform, width=h.width, height=h.height,
        count=h.count, dtypes=h.dtypes, files=files, nodata=h.nodata,
        colorinterp=h.colorinterp, descriptions=h.descriptions, has_overviews=h.has_overviews)


def _open_single(path: Path, crs: CRS | None, workdir: Path | None) -> RasterSource:
    h = _read_header(path)
    _check_size(h, path.name)
    if h.crs is not None:
        return _source_from_header(h, str(path), path.name, h.files, h.crs)
    if crs is None:
        raise UnusableCRS(
            f"{path.name} has no CRS (a world file records none); pass --crs with its zone, "
            "e.g. --crs EPSG:6677 (JGD2011 zone IX).")
    vrt = _write_vrt([h], path.name, crs, workdir)
    source = _source_from_header(h, str(vrt), path.name, h.files, crs)
    return source


def _open_mosaic(sheets: list[Path], label: str, crs: CRS | None,
                 workdir: Path | None) -> RasterSource:
    headers = [_read_header(s) for s in sheets]
    resolved: list[_Header] = []
    for h in headers:
        if h.crs is None and crs is None:
            raise UnusableCRS(
                f"sheet {h.path.name} has no CRS (a world file records none); pass --crs with "
                "its zone, e.g. --crs EPSG:6677.")
        resolved.append(h)
    keys: dict[str, list[str]] = {
        "CRS": [_describe(h.crs or crs) for h in resolved],
        "band count": [str(_data_band_count(h)) for h in resolved],
        "data type": [", ".join(sorted({h.dtypes[i - 1] for i in _band_map(h)}))
                      for h in resolved],
        "colour interpretation": [_colours(h) for h in resolved],
        "pixel size": [_describe(Grid(h.crs or crs, h.transform, 1, 1).res) for h in resolved],
    }
    for what, values in keys.items():
        common = Counter(values).most_common(1)[0][0]
        for h, v in zip(resolved, values, strict=True):
            if v != common:
                raise UserInputError(
                    f"sheet {h.path.name} differs from the other sheets of {label} in {what} "
                    f"({v} vs {common}); convert or remove that sheet.")
    for h in resolved:
        t = h.transform
        if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
            raise UserInputError(f"sheet {h.path.name} is rotated; mosaics need north-up sheets, "
                                 "warp it with gdalwarp first.")
        _check_size(h, h.path.name)
    mosaic_crs = resolved[0].crs or crs
    assert mosaic_crs is not None
    vrt = _write_vrt(resolved, label, mosaic_crs, workdir)
    files = tuple(f for h in resolved for f in h.files)
    with _open_quiet(vrt, label) as ds:
        return RasterSource(
            path=str(vrt), label=label, crs=mosaic_crs, transform=ds.transform, width=ds.width,
            height=ds.height, count=ds.count, dtypes=tuple(ds.dtypes), files=files,
            nodata=ds.nodata, colorinterp=tuple(ci.name for ci in ds.colorinterp),
            descriptions=tuple(d or "" for d in ds.descriptions),
            has_overviews=all(h.has_overviews for h in resolved))


def _colours(h: _Header) -> str:
    """The colours a sheet's data bands carry, in mosaic order (a BGR sheet reads as red,
    green, blue): sheets must agree."""
    if _rgb_bands(h) is None:
        return "none (bands in file order)"
    return ", ".join(h.colorinterp[i - 1] for i in _band_map(h))


def _describe(value: object) -> str:
    if isinstance(value, CRS):
        return value.to_string() or "a custom CRS"
    if isinstance(value, tuple):
        return " x ".join(f"{v:.9g}" for v in value)
    return str(value)


_RGB = ("red", "green", "blue")


def _rgb_bands(h: _Header) -> list[int] | None:
    """1-based bands holding red, green and blue by colour interpretation, or None when the
    sheet does not name each of them exactly once."""
    found = []
    for colour in _RGB:
        hits = [i for i, ci in enumerate(h.colorinterp, start=1) if ci == colour]
        if len(hits) != 1:
            return None
        found.append(hits[0])
    return found


def _band_map(h: _Header) -> list[int]:
    """The sheet's data bands in mosaic order: red, green, blue first when the sheet names
    them (a BGR sheet among RGB ones is read by colour, as a single file is), else in file
    order (bands 1-3 taken as RGB, as for a single file); other data bands follow."""
    data = [i for i, ci in enumerate(h.colorinterp, start=1) if ci != "alpha"]
    rgb = _rgb_bands(h)
    if rgb is None:
        return data
    return rgb + [i for i in data if i not in rgb]


def _data_band_count(h: _Header) -> int:
    """Bands other than alpha (alpha becomes the mosaic's mask)."""
    return sum(1 for ci in h.colorinterp if ci != "alpha")


# --- VRT writing ---------------------------------------------------------------------------

_GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16",
               "uint32": "UInt32", "int32": "Int32", "float32": "Float32", "float64": "Float64",
               "uint64": "UInt64", "int64": "Int64"}
_workdirs: list[Path] = []


def _default_workdir() -> Path:
    if not _workdirs:
        d = Path(tempfile.mkdtemp(prefix="idou-vrt-"))
        _workdirs.append(d)
        atexit.register(shutil.rmtree, d, True)
    return _workdirs[0]


def _write_vrt(headers: list[_Header], label: str, crs: CRS, workdir: Path | None) -> Path:
    """Write a VRT mosaicking ``headers`` (north-up, one CRS and pixel size) and return its path.

    Data bands use each sheet's mask (nodata, alpha or internal mask) as transparency; the VRT's
    own mask band is the union of the sheets' masks, so gaps between sheets are invalid.
    """
    single = len(headers) == 1
    gt: tuple[float, ...]
    if single:  # keep a lone file's exact (possibly rotated) transform
        gt = headers[0].transform.to_gdal()
        width, height = headers[0].width, headers[0].height
    else:
        gt, width, height = _mosaic_transform(headers)
    first = headers[0]
    maps = [_band_map(h) for h in headers]
    named = any(_rgb_bands(h) is not None for h in headers)
    dtype = _GDAL_TYPES.get(first.dtypes[0], "Byte")
    sources = [_VrtSource(h, m, _rects(h, gt, single)) for h, m in zip(headers, maps, strict=True)]
    out = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">',
           f'  <SRS dataAxisToSRSAxisMapping="1,2">{escape(crs.to_wkt())}</SRS>',
           f"  <GeoTransform>{', '.join(repr(float(v)) for v in gt)}</GeoTransform>",
           vrt_marker_xml()]
    for out_band, b in enumerate(maps[0], start=1):
        ci = _RGB[out_band - 1] if named and out_band <= len(_RGB) else first.colorinterp[b - 1]
        out += _data_band_xml(out_band, b, first, ci, dtype, sources)
    out += _mask_band_xml(sources)
    out.append("</VRTDataset>")
    return _save_vrt("\n".join(out) + "\n", label, workdir)


@dataclass(frozen=True)
class _VrtSource:
    """One sheet in a VRT: its header, its band map and its placement (``<SrcRect><DstRect>``)."""

    header: _Header
    band_map: list[int]
    rects: str


def _mosaic_transform(headers: list[_Header]) -> tuple[tuple[float, ...], int, int]:
    """The GDAL geotransform, width and height of the north-up mosaic of ``headers``."""
    xres = headers[0].transform.a
    yres = headers[0].transform.e
    left = min(h.transform.c for h in headers)
    top = max(h.transform.f for h in headers)
    right = max(h.transform.c + h.width * xres for h in headers)
    bottom = min(h.transform.f + h.height * yres for h in headers)
    width = max(round((right - left) / xres), 1)
    height = max(round((bottom - top) / yres), 1)
    return (left, xres, 0.0, top, 0.0, yres), width, height


def _rects(h: _Header, gt: tuple[float, ...], single: bool) -> str:
    """Where sheet ``h`` lies in the mosaic of geotransform ``gt`` (whole pixels when close)."""
    if single:
        xoff = yoff = 0.0
    else:
        left, xres, _, top, _, yres = gt
        xoff = (h.transform.c - left) / xres
        yoff = (h.transform.f - top) / yres
        xoff = round(xoff) if abs(xoff - round(xoff)) < 1e-6 else xoff
        yoff = round(yoff) if abs(yoff - round(yoff)) < 1e-6 else yoff
    return (f'<SrcRect xOff="0" yOff="0" xSize="{h.width}" ySize="{h.height}"/>'
            f'<DstRect xOff="{xoff}" yOff="{yoff}" xSize="{h.width}" ySize="{h.height}"/>')


def _props(h: _Header, dt: str) -> str:
    return (f'<SourceProperties RasterXSize="{h.width}" RasterYSize="{h.height}" '
            f'DataType="{dt}" BlockXSize="{h.block[1]}" BlockYSize="{h.block[0]}"/>')


def _data_band_xml(out_band: int, b: int, first: _Header, ci: str | None, dtype: str,
                   sources: list[_VrtSource]) -> list[str]:
    """One data band of the VRT: band ``b`` of ``first`` (nodata, colour, description) from
    every sheet's mapped band, each sheet's mask as transparency."""
    out = [f'  <VRTRasterBand dataType="{dtype}" band="{out_band}">']
    if first.nodata is not None:
        out.append(f"    <NoDataValue>{first.nodata!r}</NoDataValue>")
    if ci and ci != "undefined":
        out.append(f"    <ColorInterp>{ci.capitalize()}</ColorInterp>")
    desc = first.descriptions[b - 1] if b - 1 < len(first.descriptions) else ""
    if desc:
        out.append(f"    <Description>{escape(desc)}</Description>")
    for s in sources:
        out.append(
            "    <ComplexSource>"
            f'<SourceFilename relativeToVRT="0">{escape(str(s.header.path.resolve()))}'
            f"</SourceFilename><SourceBand>{s.band_map[out_band - 1]}</SourceBand>"
            f"{_props(s.header, dtype)}{s.rects}"
            "<UseMaskBand>true</UseMaskBand></ComplexSource>")
    out.append("  </VRTRasterBand>")
    return out


def _mask_band_xml(sources: list[_VrtSource]) -> list[str]:
    """The VRT's mask band: the union of the sheets' masks (gaps between sheets invalid)."""
    out = ["  <MaskBand>", '    <VRTRasterBand dataType="Byte">']
    for s in sources:
        out.append(
            "      <ComplexSource>"
            f'<SourceFilename relativeToVRT="0">{escape(str(s.header.path.resolve()))}'
            f"</SourceFilename><SourceBand>mask,1</SourceBand>{_props(s.header, 'Byte')}"
            f"{s.rects}<NODATA>0</NODATA></ComplexSource>")
    out += ["    </VRTRasterBand>", "  </MaskBand>"]
    return out


def _save_vrt(text: str, label: str, workdir: Path | None) -> Path:
    """Write ``text`` once under a name from ``label`` and its hash (the same VRT is reused)."""
    folder = workdir or _default_workdir()
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(label).stem)[:40]
    path = folder / f"{stem or 'mosaic'}-{digest}.vrt"
    if not path.exists():
        tmp = path.with_suffix(".vrt.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return path
