"""Parcels (筆) from GeoPackage, Shapefile, GeoJSON or 法務省 地図XML.

Every reader returns the same survey columns and nothing else:

* ``parcel_id`` — stable key ``"{所在} {地番}"`` (where the same key repeats in the input,
  e.g. 地番 empty, ``@x,y`` of the outline's centroid is added: never the row order), used to
  keep staff's review across re-runs;
* ``地番``, ``所在`` (大字名/丁目名/小字名 joined), ``地区`` (大字/町丁目 without the 小字:
  the unit of the per-district summary), ``geometry`` (in ``target_crs``);
* from 地図XML also ``精度区分`` and ``注記`` (``別図`` when the outline is on a separate
  sheet). See :mod:`idou.geo.vector.mojxml` for 地区外 (skipped and counted).

Owner names, addresses and every other attribute of the input are dropped so personal
information never reaches outputs or logs; ``keep_columns`` names columns to keep on purpose.

Shapefiles: the ``.cpg`` decides the attribute encoding when present; without it the
``.dbf`` bytes are tried as UTF-8 and then CP932 (Shift_JIS), or pass ``encoding``.
Invalid geometries are repaired (``make_valid``, polygon parts kept) and counted; empty and
null ones are dropped and counted.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import pandas as pd
import shapely
from pyproj import CRS
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from idou.errors import UnusableCRS, UserInputError
from idou.geo.files.network import check_local_source
from idou.geo.vector.mojxml import read_mojxml
from idou.geo.vector.vector_files import read_vector

CHIBAN_CANDIDATES = ("地番", "chiban", "tiban", "CHIBAN", "TIBAN", "Chiban", "地番号")
SHOZAI_CANDIDATES = ("所在", "所在地", "shozai", "SHOZAI", "syozai", "SYOZAI")
SHOZAI_PARTS = (("大字名", "大字", "oaza", "OAZA"), ("丁目名", "丁目", "chome", "CHOME"),
                ("小字名", "小字", "字名", "koaza", "KOAZA", "aza", "AZA"))

SURVEY_COLUMNS = ["parcel_id", "地番", "所在", "地区"]
MOJ_ATTRIBUTION = ("出典：「登記所備付地図データ」（法務省）（idou により GeoPackage に変換し、"
                   "異動候補の筆として加工）")
_KOAZA_SUFFIX = re.compile(r"(?<=.)(?<!大)字[^字]*$")
PARCEL_SUFFIXES = (".xml", ".zip", ".gpkg", ".shp", ".geojson", ".json")


@dataclass
class ParcelSet:
    """Parcels ready for the join, with what was repaired and dropped on the way.

    ``notes`` holds one sentence per input file left out (a 任意座標系 地図XML in a batch);
    show them to the user as warnings. ``attribution`` is the credit line the data's terms
    ask for (地図XML), also in ``frame.attrs["attribution"]``; the review GeoPackage records it.
    """

    frame: gpd.GeoDataFrame
    repaired: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    sources: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    attribution: str | None = None

    @property
    def n_dropped(self) -> int:
        """All dropped parcels, whatever the reason."""
        return sum(self.dropped.values())


def read_parcels(path: Path | Sequence[Path], target_crs: object | None,
                 encoding: str | None = None, *, keep_columns: Sequence[str] = (),
                 chiban_column: str | None = None, shozai_column: str | None = None
                 ) -> ParcelSet:
    """Read parcels from one or many files into ``target_crs``.

    Args:
        path: a GeoPackage, Shapefile, GeoJSON, 地図XML ``.xml`` or ``.zip``, a folder of
            them, or a list of these (of one kind or mixed).
        target_crs: CRS of the flight (anything pyproj accepts); None keeps the source CRS.
        encoding: attribute encoding of a Shapefile without ``.cpg`` (e.g. ``cp932``).
        keep_columns: extra input columns to keep (everything else is dropped).
        chiban_column: the column that holds 地番 when its name is not a usual one.
        shozai_column: the column that holds 所在 when its name is not a usual one.

    Returns:
        A :class:`ParcelSet`.

    Raises:
        UserInputError: unreadable file, no CRS, no 地番 column, no parcels left.
    """
    given = [Path(path)] if isinstance(path, str | Path) else [Path(p) for p in path]
    paths = [f for p in given for f in _expand(p)]
    if not paths:
        raise UserInputError("No parcel file was given; pass a GeoPackage, Shapefile, "
                             "GeoJSON or 地図XML file.")
    moj = [p for p in paths if _is_mojxml(p)]
    other = [p for p in paths if p not in moj]
    frames: list[gpd.GeoDataFrame] = []
    result = ParcelSet(frame=gpd.GeoDataFrame(), sources=paths)
    crs = CRS.from_user_input(target_crs) if target_crs is not None else None
    read = _mojxml_frames(moj, result) if moj else []
    read += [_read_vector(file, encoding, keep_columns, chiban_column, shozai_column)
             for file in other]
    for frame in read:
        crs = crs or frame.crs
        frames.append(frame.to_crs(crs))
    if not frames:
        raise UserInputError(f"{paths[0]} holds no parcels (after skipping "
                             f"{result.n_dropped}); check the parcel file.")
    merged = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs=crs)
    merged, repaired, dropped = clean_polygons(merged)
    result.repaired = repaired
    result.dropped.update(dropped)
    if merged.empty:
        raise UserInputError(f"{paths[0]} has no usable parcel geometry "
                             f"({dict(result.dropped)}); check the parcel file.")
    merged.insert(0, "parcel_id", _stable_ids(merged["所在"], merged["地番"], merged.geometry))
    columns = SURVEY_COLUMNS + [c for c in ("精度区分", "注記") if c in merged.columns]
    columns += [c for c in keep_columns if c in merged.columns and c not in columns]
    result.frame = gpd.GeoDataFrame(merged[columns + ["geometry"]], geometry="geometry",
                                    crs=crs).reset_index(drop=True)
    if moj:
        result.attribution = MOJ_ATTRIBUTION
        result.frame.attrs["attribution"] = MOJ_ATTRIBUTION
    return result


def _mojxml_frames(moj: list[Path], result: ParcelSet) -> list[gpd.GeoDataFrame]:
    """The parcels of 地図XML files, one frame per file in its own CRS; what was skipped or
    dropped is counted in ``result``."""
    skipped: list[str] = []
    moj_files = read_mojxml(moj, skipped=skipped)
    result.notes.extend(skipped)
    if skipped:
        result.dropped["任意座標系の地図XML (files)"] += len(skipped)
    frames = []
    for moj_file in moj_files:
        result.dropped.update(moj_file.dropped)
        if not moj_file.parcels:
            continue
        frames.append(gpd.GeoDataFrame({
            "地番": [p.chiban for p in moj_file.parcels],
            "所在": [_join_place(p.oaza, p.chome, p.koaza) for p in moj_file.parcels],
            "地区": [_join_place(p.oaza, p.chome) for p in moj_file.parcels],
            "精度区分": [p.accuracy for p in moj_file.parcels],
            "注記": [p.note for p in moj_file.parcels],
        }, geometry=[p.geometry for p in moj_file.parcels], crs=moj_file.epsg))
    return frames


def _expand(path: Path) -> list[Path]:
    """A folder stands for the parcel files in it (地図XML .xml/.zip, .gpkg, .shp, .geojson)."""
    if not path.is_dir():
        return [path]
    found = sorted(p for p in path.iterdir() if p.suffix.lower() in PARCEL_SUFFIXES)
    if not found:
        raise UserInputError(f"folder {path} holds no parcel file ({', '.join(PARCEL_SUFFIXES)})"
                             "; pass the files or the right folder.")
    return found


def _is_mojxml(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in (".xml", ".zip"):
        if suffix == ".zip":
            import zipfile

            try:
                with zipfile.ZipFile(path) as archive:
                    names = [n.lower() for n in archive.namelist()]
            except (zipfile.BadZipFile, OSError):
                return False
            return any(n.endswith(".xml") or n.endswith(".zip") for n in names) and not any(
                n.endswith(".shp") for n in names)
        return True
    return False


def _join_place(*parts: str) -> str:
    return "".join(p for p in parts if p)


def _read_vector(path: Path, encoding: str | None, keep_columns: Sequence[str],
                 chiban_column: str | None, shozai_column: str | None) -> gpd.GeoDataFrame:
    check_local_source(path, "the parcels")
    if encoding is None and path.suffix.lower() == ".shp":
        encoding = detect_shapefile_encoding(path)
    frame = read_vector(path, "parcel", encoding,
                        fix="pass a GeoPackage, Shapefile, GeoJSON or 地図XML")
    if frame.crs is None:
        raise UnusableCRS(f"{path} has no CRS (a Shapefile needs its .prj); add one or "
                          "convert the file to GeoPackage with its CRS.")
    chiban = _pick(frame, chiban_column, CHIBAN_CANDIDATES)
    if chiban is None:
        raise UserInputError(
            f"{path} has no 地番 column (columns: {', '.join(map(str, frame.columns[:12]))}); "
            "rename it to 地番 or pass --chiban-column (in FLIGHT.toml: chiban_column).")
    out = gpd.GeoDataFrame({"地番": frame[chiban].fillna("").astype(str).str.strip()},
                           geometry=frame.geometry, crs=frame.crs)
    shozai = _pick(frame, shozai_column, SHOZAI_CANDIDATES)
    part_columns = [_pick(frame, None, names) for names in SHOZAI_PARTS]
    parts = [c for c in part_columns if c is not None]
    if shozai is not None:
        out["所在"] = frame[shozai].fillna("").astype(str).str.strip()
    else:
        out["所在"] = (frame[parts].fillna("").astype(str).agg("".join, axis=1)
                     if parts else "")
    district_parts = [c for c in part_columns[:2] if c is not None]
    if district_parts:
        out["地区"] = frame[district_parts].fillna("").astype(str).agg("".join, axis=1)
    else:
        out["地区"] = [district_of(v) for v in out["所在"]]
    for column in keep_columns:
        if column in frame.columns:
            out[column] = frame[column].to_numpy()
    return out


def district_of(shozai: str) -> str:
    """大字/町丁目 of a 所在: drops a trailing 小字 (``大字小相木町字天神`` → ``大字小相木町``)."""
    return _KOAZA_SUFFIX.sub("", shozai or "")


def _pick(frame: pd.DataFrame, explicit: str | None, candidates: Sequence[str]) -> str | None:
    if explicit is not None:
        if explicit not in frame.columns:
            raise UserInputError(f"column {explicit!r} is not in the parcel file (columns: "
                                 f"{', '.join(map(str, frame.columns[:12]))}); check the name.")
        return explicit
    lower = {str(c).lower(): str(c) for c in frame.columns}
    for name in candidates:
        if name in frame.columns:
            return name
        if name.lower() in lower:
            return lower[name.lower()]
    return None


def detect_shapefile_encoding(shp: Path) -> str | None:
    """The attribute encoding of a Shapefile, or None to let GDAL decide (``.cpg`` present).

    Without ``.cpg`` the ``.dbf`` records are tried as UTF-8 then CP932 (Shift_JIS, the usual
    encoding of Japanese municipal data); pure ASCII reads the same either way.
    """
    for suffix in (".cpg", ".CPG"):
        if shp.with_suffix(suffix).exists():
            return None
    dbf = next((shp.with_suffix(s) for s in (".dbf", ".DBF") if shp.with_suffix(s).exists()),
               None)
    if dbf is None:
        return None
    raw = dbf.read_bytes()
    header_length = int.from_bytes(raw[8:10], "little") if len(raw) >= 10 else 0
    records = raw[header_length:]
    for candidate in ("utf-8", "cp932"):
        try:
            records.decode(candidate)
        except UnicodeDecodeError:
            continue
        return candidate
    return None


def clean_polygons(frame: gpd.GeoDataFrame) -> tuple[gpd.GeoDataFrame, int, Counter[str]]:
    """Repair invalid polygons, drop null/empty/non-areal ones; return counts.

    Returns:
        (cleaned frame, number repaired, Counter of drop reasons)
    """
    dropped: Counter[str] = Counter()
    geoms = frame.geometry
    null = geoms.isna()
    dropped["null geometry"] += int(null.sum())
    frame = frame[~null]
    empty = frame.geometry.is_empty
    dropped["empty geometry"] += int(empty.sum())
    frame = frame[~empty].copy()
    invalid = ~frame.geometry.is_valid
    repaired = int(invalid.sum())
    if repaired:
        frame.loc[invalid, "geometry"] = [
            _polygonal(shapely.make_valid(g)) for g in frame.geometry[invalid]]
    frame["geometry"] = [_polygonal(g) for g in frame.geometry]
    unusable = frame.geometry.isna() | frame.geometry.is_empty
    dropped["not a polygon after repair"] += int(unusable.sum())
    frame = frame[~unusable]
    return frame, repaired, +dropped


def _polygonal(geom: BaseGeometry | None) -> BaseGeometry | None:
    """Only the polygon parts of a geometry (a repair can add lines or points)."""
    if geom is None or geom.is_empty:
        return None
    if isinstance(geom, Polygon | MultiPolygon):
        return geom
    parts = [g for g in getattr(geom, "geoms", []) if isinstance(g, Polygon | MultiPolygon)]
    if not parts:
        return None
    return shapely.union_all(parts)


def _stable_ids(shozai: pd.Series, chiban: pd.Series,
                geometry: gpd.GeoSeries | None = None) -> list[str]:
    """``"{所在} {地番}"``; where that repeats (e.g. 地番 empty), the outline's centroid is added.

    A key never depends on row order: the same parcels in another order get the same ids, so
    a re-run carries each review to the right parcel. Identical rows (same key and outline)
    are numbered ``#2``, ``#3`` in the order of their outline's WKB.
    """
    keys = [f"{place} {number}".strip() for place, number in zip(shozai, chiban, strict=True)]
    counts = Counter(keys)
    if geometry is None or all(n == 1 for n in counts.values()):
        seen: Counter[str] = Counter()
        ids = []
        for key in keys:
            seen[key] += 1
            ids.append(key if seen[key] == 1 else f"{key}#{seen[key]}")
        return ids
    centroids = shapely.centroid(geometry.to_numpy())
    ids = [key if counts[key] == 1 else
           f"{key}@{shapely.get_x(c):.1f},{shapely.get_y(c):.1f}"
           for key, c in zip(keys, centroids, strict=True)]
    repeats = Counter(ids)
    wkb = shapely.to_wkb(geometry.to_numpy(), hex=True)
    order = sorted(range(len(ids)), key=lambda i: (ids[i], wkb[i]))
    numbered: Counter[str] = Counter()
    for i in order:
        if repeats[ids[i]] > 1:
            numbered[ids[i]] += 1
            if numbered[ids[i]] > 1:
                ids[i] = f"{ids[i]}#{numbered[ids[i]]}"
    return ids
