"""Preflight: check a pair of flights against a model and choose the common grid.

:func:`preflight` turns every problem a user can fix into a one-sentence
:class:`UserInputError` and everything idou handles by itself (CRS differences, GSD resampling,
partial overlap, masks) into notes and warnings of a :class:`PreflightReport`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.warp import transform_geom
from rasterio.windows import Window
from shapely.geometry import mapping, shape

from idou.errors import FlightsDoNotOverlap, UnreadableInput, UnusableCRS, UserInputError
from idou.geo.files.network import check_local_source
from idou.geo.raster import misregistration as _misreg
from idou.geo.raster.decode_errors import refuse_decoder_problems
from idou.geo.raster.grid import Grid
from idou.geo.raster.sources import RasterSource, describe_error

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

    from idou.geo.raster.align import AlignedPair

GSD_WARN_RATIO = 2.0
_SAMPLES_PER_SIDE = 6  # validity sample: 6 x 6 windows
_SAMPLE_PX = 16


class ModelInputs(Protocol):
    """What preflight reads of a model's contract (``idou.inference.contract.ModelContract``):
    geo stays below inference, so it names only the two fields it needs."""

    @property
    def band_order(self) -> tuple[str, ...]: ...

    @property
    def gsd_m(self) -> float: ...


@dataclass
class PreflightReport:
    """What preflight found and decided.

    Attributes:
        before, after: The two flights.
        grid: The common grid: after's CRS (or ``--crs`` when after's is geographic or
            distorting, see :func:`working_crs`), the model's GSD, the intersection of both
            footprints (and the AOI), on after's pixel lattice when its GSD is the model's.
        band_indexes_before, band_indexes_after: 1-based source bands feeding the model's
            band order.
        warnings: Things the user should know that may hurt results.
        misregistration_px: Median shift (dx, dy) of after against before in grid pixels
            (x right, y down), or None when not estimated.
        overlap_fraction: Share of the after flight's footprint that the before flight covers.
        aoi: The area of interest in the grid's CRS, or None.
        notes: Things idou handles by itself (reprojection, resampling, masks).
        valid_fraction: Sampled share of the grid valid in both flights (and the AOI).
    """

    before: RasterSource
    after: RasterSource
    grid: Grid
    band_indexes_before: list[int]
    band_indexes_after: list[int]
    warnings: list[str] = field(default_factory=list)
    misregistration_px: tuple[float, float] | None = None
    overlap_fraction: float = 1.0
    aoi: BaseGeometry | None = None
    notes: list[str] = field(default_factory=list)
    valid_fraction: float | None = None


def preflight(before: RasterSource, after: RasterSource, contract: ModelInputs,
              aoi: Path | None = None, estimate_misregistration: bool = True) -> PreflightReport:
    """Check two flights against a model and choose the grid both are read on.

    Args:
        before: The earlier flight.
        after: The later flight; its CRS and pixel lattice are kept.
        contract: The model's contract (band order, GSD).
        aoi: Optional vector file (any OGR format) limiting the area processed.
        estimate_misregistration: Measure the shift between the flights (reads a few windows).

    Raises:
        UserInputError: Unusable bands or dtype, a geographic or distorting CRS without a
            usable ``--crs``, no overlap, an all-nodata flight, an unreadable file.
    """
    notes: list[str] = []
    warns: list[str] = []
    idx_before = select_bands(before, contract, warns)
    idx_after = select_bands(after, contract, warns)
    crs = working_crs(after)
    gsd = contract.gsd_m
    overlap, overlap_fraction = _overlap(before, after, crs, gsd, notes)
    aoi_geom = None
    area = overlap
    if aoi is not None:
        aoi_geom = load_aoi(aoi, crs, notes)
        area = overlap.intersection(aoi_geom)
        if area.is_empty or area.area < gsd * gsd:
            raise FlightsDoNotOverlap(
                f"the AOI {aoi.name} does not overlap the area covered by both {before.label} "
                f"and {after.label}; check the AOI file and its CRS.")
    grid = _common_grid(after, area.bounds, gsd, crs)
    _check_pixels(before, after, gsd, crs, notes, warns)
    report = PreflightReport(
        before=before, after=after, grid=grid, band_indexes_before=idx_before,
        band_indexes_after=idx_after, warnings=warns, overlap_fraction=overlap_fraction,
        aoi=aoi_geom, notes=notes)
    _check_common_pixels(report, estimate_misregistration)
    return report


def _overlap(before: RasterSource, after: RasterSource, crs: CRS, gsd: float,
             notes: list[str]) -> tuple[BaseGeometry, float]:
    """The flights' overlap in ``crs`` and its share of ``after``; notes what is warped."""
    fp_after = _footprint_in(after, crs)
    fp_before = _footprint_in(before, crs)
    if after.crs != crs:
        notes.append(f"{after.label} ({_crs_name(after.crs)}) is warped on the fly onto "
                     f"{_crs_name(crs)} (--crs).")
    if before.crs != crs:
        onto = f"the grid of {after.label}" if after.crs == crs else "that grid"
        notes.append(f"{before.label} ({_crs_name(before.crs)}) is warped on the fly onto "
                     f"{onto} ({_crs_name(crs)}).")
    overlap = fp_after.intersection(fp_before)
    if overlap.is_empty or overlap.area < gsd * gsd:
        raise FlightsDoNotOverlap(
            f"{before.label} and {after.label} do not overlap; check that both cover the same "
            "area and that their CRS are right (--crs).")
    overlap_fraction = float(overlap.area / fp_after.area) if fp_after.area > 0 else 0.0
    if overlap_fraction < 0.999:
        notes.append(f"the flights overlap on {overlap_fraction:.0%} of {after.label}; only the "
                     "overlap is processed.")
    return overlap, overlap_fraction


def _check_pixels(before: RasterSource, after: RasterSource, gsd: float, crs: CRS,
                  notes: list[str], warns: list[str]) -> None:
    """Note (or warn about) resampling and masks; refuse a flight without valid pixels."""
    for src in (before, after):
        src_gsd = _gsd_in(src, crs)
        ratio = max(src_gsd, gsd) / min(src_gsd, gsd)
        if ratio > GSD_WARN_RATIO:
            warns.append(f"{src.label} has a pixel size of {src_gsd:.3g} m, {ratio:.1f}x off the "
                         f"model's {gsd:g} m; it is resampled, but results may suffer.")
        elif ratio > 1.001:
            notes.append(f"{src.label} ({src_gsd:.3g} m) is resampled to the model's {gsd:g} m.")
    for src in (before, after):
        notes.extend(_mask_notes(src))
        if sampled_valid_fraction(src) == 0.0:
            raise UserInputError(
                f"{src.label} holds no valid pixels (everything is nodata or masked); check its "
                "nodata value and alpha band, or choose the right file.")


def _check_common_pixels(report: PreflightReport, estimate_misregistration: bool) -> None:
    """Read both flights on the grid: refuse no common valid pixels, measure the shift."""
    from idou.geo.raster.align import AlignedPair

    before, after = report.before, report.after
    with AlignedPair(report) as pair:
        report.valid_fraction = _common_valid_fraction(pair, report.grid)
        if report.valid_fraction == 0.0:
            raise FlightsDoNotOverlap(
                f"{before.label} and {after.label} have no valid pixels in common (their data "
                "areas do not overlap); check the files and their nodata/alpha masks.")
        if estimate_misregistration:
            shift = _misreg.estimate_misregistration(pair)
            report.misregistration_px = shift
            if shift is not None and math.hypot(*shift) > _misreg.WARN_PX:
                report.warnings.append(
                    f"{after.label} is shifted by about ({shift[0]:+.1f}, {shift[1]:+.1f}) px "
                    f"against {before.label}; the model tolerates about 2 px, expect false "
                    "changes along edges (co-register the flights).")


# --- bands -------------------------------------------------------------------------------


def select_bands(source: RasterSource, contract: ModelInputs,
                 warnings: list[str] | None = None) -> list[int]:
    """1-based band indexes of ``source`` in the model's band order.

    RGB and RGBA 8-bit pass; 4 bands are picked by colour interpretation (or description), else
    the first three are taken as RGB with a warning. Anything else is a user error.
    """
    want = [b.lower() for b in contract.band_order]
    need = f"{len(want)} bands ({', '.join(want)}) of 8-bit (uint8) pixels"
    label = source.label
    names = [ci.lower() for ci in source.colorinterp] or ["undefined"] * source.count
    descs = [d.lower() for d in source.descriptions] or [""] * source.count
    data = [i for i, n in enumerate(names, start=1) if n != "alpha"]
    dtypes = {source.dtypes[i - 1] for i in data}
    bad = sorted(d for d in dtypes if d != "uint8")
    if bad:
        d = bad[0]
        if d in ("uint16", "int16", "uint32", "int32"):
            raise UserInputError(
                f"{label} has {_bits(d)}-bit pixels ({d}); the model needs {need}; convert it "
                f"with gdal_translate -ot Byte -scale {label} {_stem(label)}_8bit.tif.")
        if d.startswith("float") or d.startswith("complex"):
            raise UserInputError(
                f"{label} has floating-point pixels ({d}); the model needs {need}; convert it "
                f"with gdal_translate -ot Byte -scale {label} {_stem(label)}_8bit.tif.")
        raise UserInputError(f"{label} has {d} pixels; the model needs {need}; convert it with "
                             "gdal_translate -ot Byte.")
    if source.count >= 5:
        picks = " ".join(f"-b {i}" for i in range(1, len(want) + 1))
        raise UserInputError(
            f"{label} has {source.count} bands; the model needs {need}; extract them with "
            f"gdal_translate {picks} {label} {_stem(label)}_rgb.tif.")
    if "palette" in names:
        raise UserInputError(
            f"{label} is a paletted image (colours from a colour table); the model needs "
            f"{need}; expand it to RGB with gdal_translate -expand rgb {label} "
            f"{_stem(label)}_rgb.tif.")
    if len(data) < len(want):
        raise UserInputError(
            f"{label} has {source.count} band{'s' if source.count > 1 else ''}"
            f"{' (' + ', '.join(names) + ')' if source.count > 1 else ''}; the model needs "
            f"{need}; use the colour orthophoto.")
    found: list[int] = []
    for w in want:
        hits = [i for i in data if names[i - 1] == w or descs[i - 1] == w]
        if len(hits) != 1:
            break
        found.append(hits[0])
    if len(found) == len(want) and len(set(found)) == len(want):
        return found
    if len(data) == len(want):
        return data
    chosen = data[: len(want)]
    if warnings is not None:
        warnings.append(
            f"{label} has {len(data)} bands without colour interpretation; bands "
            f"{', '.join(map(str, chosen))} are used as {', '.join(want)}.")
    return chosen


def _bits(dtype: str) -> int:
    return int("".join(ch for ch in dtype if ch.isdigit()) or 8)


def _stem(label: str) -> str:
    return Path(label.split(" ")[0]).stem


# --- geometry ----------------------------------------------------------------------------


def _crs_name(crs: CRS) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else (crs.to_string()[:60] or "a custom CRS")


# A grid whose ground distances are off by more than this (scale factor) or whose angles are
# distorted by more than _MAX_ANGLE_DEG is not in ground metres (Web Mercator in Japan: 1.23).
_MAX_SCALE_ERROR = 0.01
_MAX_ANGLE_DEG = 0.5
_ZONE_HINT = "your JGD2011 zone, e.g. EPSG:6677"


def working_crs(after: RasterSource) -> CRS:
    """The CRS of the common grid: the later flight's own when it is in ground metres, else
    the ``--crs`` the user gave (the flight is then warped onto it).

    Raises:
        UserInputError: The flight is in latitude/longitude, in a non-metric unit or in a CRS
            that distorts ground distances (Web Mercator) and no usable ``--crs`` was given.
    """
    centre = _lonlat_centre(after)
    problem = _crs_problem(after.crs, centre)
    if problem is None:
        return after.crs
    if after.grid_crs is None or after.grid_crs == after.crs:
        raise UnusableCRS(
            f"{after.label} is in {problem}, so areas and --min-area would be wrong; pass "
            f"--crs (in a batch file: crs under [after]) with the projected CRS to work in "
            f"({_ZONE_HINT}) and idou warps it onto that grid, or reproject it yourself with "
            "gdalwarp -t_srs EPSG:6677.")
    target_problem = _crs_problem(after.grid_crs, centre)
    if target_problem is not None:
        raise UnusableCRS(
            f"--crs {_crs_name(after.grid_crs)} is {target_problem} at {after.label}; give a "
            f"projected CRS in metres ({_ZONE_HINT}).")
    return after.grid_crs


def _lonlat_centre(src: RasterSource) -> tuple[float, float] | None:
    """Longitude and latitude of the source's centre, or None when it cannot be placed."""
    from rasterio.warp import transform as _transform

    x, y = src.grid.footprint().centroid.coords[0]
    try:
        lon, lat = _transform(src.crs, "EPSG:4326", [x], [y])
    except (RasterioError, ValueError):
        return None
    if not (math.isfinite(lon[0]) and math.isfinite(lat[0])):
        return None
    return float(lon[0]), float(lat[0])


def _crs_problem(crs: CRS, lonlat: tuple[float, float] | None) -> str | None:
    """Why ``crs`` cannot serve as a grid in ground metres at ``lonlat``, or None."""
    if not crs.is_projected:
        return f"a geographic CRS ({_crs_name(crs)}, degrees of latitude and longitude)"
    units = (crs.linear_units or "").lower()
    if units and units not in ("metre", "meter", "m", "metres", "meters"):
        return f"a CRS measured in {units} ({_crs_name(crs)})"
    if lonlat is None:
        return None
    import pyproj

    try:
        factors = pyproj.Proj(pyproj.CRS.from_wkt(crs.to_wkt())).get_factors(*lonlat)
    except (pyproj.exceptions.ProjError, pyproj.exceptions.CRSError, ValueError):
        return None
    scale = max(abs(factors.meridional_scale - 1), abs(factors.parallel_scale - 1))
    if not math.isfinite(scale) or scale > _MAX_SCALE_ERROR or not (
            factors.angular_distortion <= _MAX_ANGLE_DEG):
        return (f"{_crs_name(crs)}, whose metres are not ground metres here (distances x"
                f"{max(factors.meridional_scale, factors.parallel_scale):.2f}, areas x"
                f"{factors.areal_scale:.2f})")
    return None


def _footprint_in(src: RasterSource, crs: CRS) -> BaseGeometry:
    """The source's footprint polygon in ``crs`` (edges densified before reprojection)."""
    fp = src.grid.footprint()
    if src.crs == crs:
        return fp
    dense = shapely.segmentize(fp, max(fp.length / 400, 1e-9))
    try:
        geom = shape(transform_geom(src.crs, crs, mapping(dense)))
    except (RasterioError, ValueError) as exc:
        raise UnusableCRS(
            f"{src.label} cannot be reprojected from {_crs_name(src.crs)} to {_crs_name(crs)} "
            f"({exc}); check its CRS or pass the right --crs.") from exc
    if not geom.is_valid or not np.all(np.isfinite(shapely.get_coordinates(geom))):
        raise UnusableCRS(
            f"{src.label} does not map into {_crs_name(crs)}; check its CRS (--crs).")
    return geom


def _gsd_in(src: RasterSource, crs: CRS) -> float:
    """The source's pixel size measured in ``crs`` units."""
    if src.crs == crs:
        return src.gsd
    return math.sqrt(_footprint_in(src, crs).area / (src.width * src.height))


def _common_grid(after: RasterSource, bounds: tuple[float, float, float, float],
                 gsd: float, crs: CRS) -> Grid:
    """A north-up grid in ``crs`` covering ``bounds`` at ``gsd``; on after's lattice when it is
    in ``crs`` at that GSD."""
    left, bottom, right, top = bounds
    ag = after.grid
    if after.crs == crs and ag.is_north_up and math.isclose(
            ag.res[0], gsd, rel_tol=1e-3) and math.isclose(ag.res[1], gsd, rel_tol=1e-3):
        win = ag.window_from_bounds(bounds)
        win = ag.clip(win) or win
        transform = ag.window_transform(win)
        return Grid(after.crs, transform, int(win.width), int(win.height))
    x0 = math.floor(left / gsd + 1e-9) * gsd
    y0 = math.ceil(top / gsd - 1e-9) * gsd
    width = max(math.ceil((right - x0) / gsd - 1e-9), 1)
    height = max(math.ceil((y0 - bottom) / gsd - 1e-9), 1)
    return Grid(crs, Affine(gsd, 0.0, x0, 0.0, -gsd, y0), width, height)


def load_aoi(path: Path, crs: CRS, notes: list[str] | None = None) -> BaseGeometry:
    """The union of an AOI file's polygons, in ``crs``."""
    from idou.geo.vector.vector_files import read_vector, split_layer

    check_local_source(path, "the AOI")
    frame = read_vector(path, "AOI", fix="give a GeoPackage, shapefile or GeoJSON")
    path = split_layer(path)[0]
    geoms = frame.geometry[frame.geometry.notna() & ~frame.geometry.is_empty]
    if len(geoms) == 0:
        raise UserInputError(f"AOI file {Path(path).name} holds no geometries; draw the area "
                             "of interest as polygons.")
    if frame.crs is None:
        if notes is not None:
            notes.append(f"AOI file {Path(path).name} records no CRS; taken as {_crs_name(crs)}.")
    else:
        geoms = geoms.to_crs(crs)
    geom = shapely.make_valid(shapely.union_all(np.asarray(geoms.values)))
    polys = shapely.get_parts(geom)
    polys = [p for p in polys if p.geom_type in ("Polygon", "MultiPolygon")]
    if not polys:
        raise UserInputError(f"AOI file {Path(path).name} holds no polygons; draw the area of "
                             "interest as polygons.")
    return shapely.union_all(polys)


# --- validity ----------------------------------------------------------------------------


def _mask_notes(src: RasterSource) -> list[str]:
    out = []
    if src.nodata is not None:
        out.append(f"{src.label}: pixels equal to nodata {src.nodata:g} are skipped.")
    if "alpha" in src.colorinterp:
        out.append(f"{src.label}: transparent pixels of the alpha band are skipped.")
    return out


def _lattice(grid: Grid, n: int, size: int) -> list[Window]:
    """n x n windows of ``size`` px spread evenly over ``grid`` (clipped to it)."""
    side_w, side_h = min(size, grid.width), min(size, grid.height)
    cols = np.linspace(0, grid.width - side_w, n).round().astype(int)
    rows = np.linspace(0, grid.height - side_h, n).round().astype(int)
    cells = sorted({(int(r), int(c)) for r in rows for c in cols})
    return [Window(c, r, side_w, side_h) for r, c in cells]


def _common_valid_fraction(pair: AlignedPair, grid: Grid) -> float:
    """Share of the grid valid in both flights, from 36 small windows read exactly.

    When those find nothing, a nearest-neighbour decimated mask of the whole grid (at most
    512 x 512 cells) decides, so only a thin common strip could go unseen.
    """
    fractions = [float(pair.read(w)[2].mean()) for w in _lattice(grid, _SAMPLES_PER_SIDE, 64)]
    fraction = float(np.mean(fractions)) if fractions else 0.0
    if fraction > 0.0:
        return fraction
    shape = (min(512, grid.height), min(512, grid.width))
    nearest = Resampling.nearest
    both = pair.before.valid_sample(grid.full_window, shape, nearest)
    both &= pair.after.valid_sample(grid.full_window, shape, nearest)
    if pair.report.aoi is not None and both.any():
        both &= pair.aoi_mask(grid.full_window, shape)
    return float(both.mean())


def sampled_valid_fraction(src: RasterSource) -> float:
    """Share of valid pixels of a flight, from a few small windows (or overviews).

    Cheap for any size: overviews when present, else 36 windows of 16 px; when those find
    nothing valid, a decimated read of the whole flight confirms (bounded to sane sizes).
    """
    from idou.geo.raster.align import damaged_sheets_label

    try:
        with src.open() as ds:
            if src.has_overviews:
                shape_ = (min(256, src.height), min(256, src.width))
                return float((ds.dataset_mask(out_shape=shape_) > 0).mean())
            total = 0.0
            wins = _lattice(src.grid, _SAMPLES_PER_SIDE, _SAMPLE_PX)
            for w in wins:
                with refuse_decoder_problems(
                        lambda w=w: damaged_sheets_label(src, src.grid.window_bounds(w)),
                        f"pixel column {w.col_off}, row {w.row_off}"):
                    ds.read(window=w)  # reading pixels surfaces truncated or corrupt blocks
                    total += float((ds.dataset_mask(window=w) > 0).mean())
            if total > 0 or src.width * src.height > 4 * 10**9:
                return total / len(wins)
            shape_ = (min(256, src.height), min(256, src.width))
            return float((ds.dataset_mask(out_shape=shape_) > 0).mean())
    except RasterioError as exc:
        raise UnreadableInput(
            f"{src.label} could not be read ({describe_error(exc)}); the file is "
            "truncated or corrupt, re-export or re-copy it.") from exc
