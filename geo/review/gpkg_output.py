"""The review GeoPackage: one file per run that tax staff open in QGIS.

Layers: ``candidate_parcels`` (parcels to survey, with priority), ``changes`` (each detected
change and its class), ``existing_buildings`` (when given), ``coverage`` (processed area and
skipped nodata, column ``status``), ``missed`` (empty; staff draw buildings the run missed)
and the table ``run_info`` (``key``/``value`` rows; values that are not text are JSON).

Column names follow :mod:`idou.geo.review.review_fields`: Japanese names for text staff read or
edit, ASCII names with Japanese aliases for ids and numbers. Aliases are stored twice: in
``gpkg_data_columns`` (GeoPackage schema extension; ``title`` is the alias, read by GDAL) and
in the QGIS styles in ``layer_styles`` (what QGIS applies). 調査状況 also has an ``enum``
constraint in ``gpkg_data_column_constraints``. 調査日 is a GeoPackage ``DATE`` column.
The file is GeoPackage 1.2 so that older QGIS/GDAL read it without warnings.

Writing is atomic: everything goes to a temporary file in the target's folder, which is
renamed over the target only when complete. Re-running into an existing file is refused
unless ``force=True``; with force the staff's edits are merged in (see
:mod:`idou.geo.review.review_merge`) — never discarded. A ``.qgz`` QGIS project with the layers and
the two orthophotos is written beside the GeoPackage.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from idou.errors import OutputConflict, UserInputError
from idou.geo.files.leftovers import make_work_folder, remove_stale_work_folders
from idou.geo.files.owned_outputs import check_replaceable, idou_qgis_project, leave_wal_mode
from idou.geo.review.gpkg_sqlite import connect
from idou.geo.review.qgis_styles import write_layer_styles
from idou.geo.review.review_fields import (
    ALIASES,
    DETECTION,
    MAIN_CLASS,
    NOTE,
    STATUS,
    STATUS_UNCHECKED,
    STATUS_VALUES,
    SURVEY_DATE,
    SURVEYOR,
    UNMAPPED_LAYER,
)
from idou.geo.review.review_merge import (
    MergeStats,
    ReviewState,
    merge_review,
    read_review_state,
    with_review_fields,
)
from idou.geo.review.survey_dates import survey_dates

GEOMETRY_COLUMN = "geom"
LAYER_ORDER = ("candidate_parcels", "changes", "existing_buildings", UNMAPPED_LAYER, "coverage",
               "missed")
PARCEL_MIN_IOU = 0.9
"""A parcel whose key changed (e.g. a file from before geometry keys) keeps its review only
when the old outline covers the new one almost exactly."""
PARCEL_KEY_MIN_IOU = 0.1
"""A parcel whose key matches keeps the review only when the outlines overlap at least this
much: the same key on a parcel elsewhere is another parcel."""
MISSED_COLUMNS = ("channel", SURVEYOR, SURVEY_DATE, NOTE)
#: Columns every ``changes`` layer has, first, in this order (text or float).
CHANGE_SCHEMA: dict[str, type] = {
    "change_id": str, "異動区分": str, "change_type": str, "channel": str, "area_m2": float,
    "score_max": float, "score_mean": float, "地番": str, "所在": str, "地区": str,
    "parcel_ids": str,
    "building_ids": str}
#: Columns every ``candidate_parcels`` layer has, first, in this order.
PARCEL_SCHEMA: dict[str, type] = {
    "parcel_id": str, "地番": str, "所在": str, "地区": str, "異動区分": str, MAIN_CLASS: str,
    "n_changes": int, "changed_area_m2": float, "score_max": float, "priority": int,
    "shares": str, "change_ids": str}


@dataclass
class WriteResult:
    """What was written."""

    path: Path
    project: Path | None
    layers: dict[str, int]
    merged: bool = False
    merge: dict[str, MergeStats] = field(default_factory=dict)


def write_review_geopackage(target: Path, *, changes: gpd.GeoDataFrame,
                            candidate_parcels: gpd.GeoDataFrame,
                            existing_buildings: gpd.GeoDataFrame | None,
                            coverage: gpd.GeoDataFrame, run_info: Mapping[str, object],
                            orthophotos: tuple[Path, Path] | None = None,
                            force: bool = False, write_project: bool = True,
                            unmapped_buildings: gpd.GeoDataFrame | None = None) -> WriteResult:
    """Write (or re-run into) the review GeoPackage, atomically.

    Args:
        target: the ``.gpkg`` path; its folder must exist.
        changes: classified changes (:func:`idou.geo.changes.classify.classify_changes`).
        candidate_parcels: :func:`idou.geo.changes.parcel_join.join_parcels` output.
        existing_buildings: footprints, or None.
        coverage: polygons with column ``status`` (e.g. ``processed``, ``nodata``).
        run_info: provenance (model, thresholds, inputs with sha256, CRS, times, version);
            ``orthophotos`` are added as ``orthophoto_before`` / ``orthophoto_after``.
        orthophotos: (before, after) rasters for the QGIS project.
        force: re-run into an existing ``target``, merging the staff's edits.
        write_project: also write ``target.with_suffix('.qgz')``.
        unmapped_buildings: buildings the building map lacks (未評価家屋の候補), written as the
            ``unmapped_buildings`` layer (also when empty); None: no such layer.

    Raises:
        UserInputError: folder missing or not writable, target exists without ``force``,
            target open/locked in another program.
    """
    target = Path(target)
    existed = _check_target(target, force, write_project)
    state, stamp = _read_state(target) if existed else (ReviewState(), None)
    crs = changes.crs or candidate_parcels.crs or coverage.crs
    info, credits = _run_info(run_info, orthophotos, candidate_parcels, existing_buildings)
    result = WriteResult(path=target, project=None, layers={}, merged=existed)

    remove_stale_work_folders(target)
    for _attempt in range(MERGE_ATTEMPTS):
        layers = _merged_layers(result, state, changes, candidate_parcels, existing_buildings,
                                coverage, crs, unmapped_buildings)
        if _write_and_replace(target, layers, info, credits, stamp):
            break
        # staff committed an edit while this run wrote: merge against the file as it is now
        state, stamp = _read_state(target)
    else:
        raise OutputConflict(f"{target} kept being edited while idou wrote it, so it was left "
                             "as it is; save and close it in QGIS, then run again.")
    result.layers = {name: len(frame) for name, frame in layers.items()}
    if write_project:
        from idou.geo.review.qgis_project import write_qgis_project

        result.project = write_qgis_project(
            target.with_suffix(".qgz"), gpkg=target, layers=list(layers),
            crs=crs, orthophotos=orthophotos, extent=_extent(layers))
    return result


def _check_target(target: Path, force: bool, write_project: bool) -> bool:
    """Refuse a target (or its project) idou may not write; return whether it exists."""
    _check_folder(target)
    existed = target.exists()
    if existed:
        if not force:
            raise OutputConflict(
                f"{target} already exists; pass --force to re-run into it (staff edits in it "
                "are kept) or choose another output path.")
        leave_wal_mode(target)
        _check_not_locked(target)
        if not _is_review_geopackage(target):
            raise OutputConflict(
                f"{target} is not a review GeoPackage written by idou (it has no run_info "
                "table), so --force will not overwrite it; choose another output path.")
    if write_project:
        check_replaceable(target.with_suffix(".qgz"), force=force, what="output",
                          is_ours=idou_qgis_project)
    return existed


def _run_info(run_info: Mapping[str, object], orthophotos: tuple[Path, Path] | None,
              candidate_parcels: gpd.GeoDataFrame, existing_buildings: gpd.GeoDataFrame | None
              ) -> tuple[dict[str, object], dict[str, str]]:
    """The ``run_info`` written: with the orthophotos, the time, and the inputs' credits."""
    info = dict(run_info)
    if orthophotos is not None:
        info["orthophoto_before"] = str(Path(orthophotos[0]).resolve())
        info["orthophoto_after"] = str(Path(orthophotos[1]).resolve())
    info.setdefault("written_at", datetime.now(UTC).isoformat(timespec="seconds"))
    credits = _attributions(candidate_parcels, existing_buildings)
    if credits:
        info["attribution"] = "\n".join(dict.fromkeys(
            [*([str(info["attribution"])] if info.get("attribution") else []),
             *credits.values()]))
    return info, credits


MERGE_ATTEMPTS = 5
"""How often the merge is redone when staff keep committing edits while the run writes."""


def _merged_layers(result: WriteResult, state: ReviewState, changes: gpd.GeoDataFrame,
                   candidate_parcels: gpd.GeoDataFrame,
                   existing_buildings: gpd.GeoDataFrame | None, coverage: gpd.GeoDataFrame,
                   crs: object, unmapped_buildings: gpd.GeoDataFrame | None = None
                   ) -> dict[str, gpd.GeoDataFrame]:
    """The layers to write: the new run with the staff's review in ``state`` merged in."""
    parcels_layer, stats = merge_review(_with_schema(_prepare(candidate_parcels, crs),
                                                     PARCEL_SCHEMA),
                                        state.candidate_parcels, "parcel_id",
                                        match_by_overlap=True, min_iou=PARCEL_MIN_IOU,
                                        key_min_iou=PARCEL_KEY_MIN_IOU)
    result.merge["candidate_parcels"] = stats
    changes_layer, stats = merge_review(_with_schema(_prepare(changes, crs), CHANGE_SCHEMA),
                                        state.changes, "change_id", match_by_overlap=True)
    result.merge["changes"] = stats
    layers: dict[str, gpd.GeoDataFrame] = {
        "candidate_parcels": _column_order(parcels_layer),
        "changes": _column_order(changes_layer),
    }
    if existing_buildings is not None:
        layers["existing_buildings"] = _prepare(existing_buildings[["building_id", "geometry"]]
                                                if "building_id" in existing_buildings
                                                else existing_buildings, crs)
    if unmapped_buildings is not None:
        layers[UNMAPPED_LAYER] = _prepare(unmapped_buildings, crs)
    layers["coverage"] = _prepare(coverage, crs)
    layers["missed"] = _missed_layer(state.missed, crs)
    return layers


def _write_and_replace(target: Path, layers: Mapping[str, gpd.GeoDataFrame],
                       info: Mapping[str, object], credits: Mapping[str, str],
                       stamp: tuple[object, ...] | None) -> bool:
    """Write a temporary GeoPackage and move it over ``target`` unless ``target`` changed.

    Returns False (nothing replaced) when ``target`` is no longer the file whose review was
    merged (``stamp``): staff committed an edit meanwhile.
    """
    work: Path | None = None
    temp = target  # until the work folder exists
    try:
        work = make_work_folder(target)
        temp = work / f"{target.stem}.tmp.gpkg"
        _write_layers(temp, layers)
        _write_run_info(temp, info)
        _write_data_columns(temp, layers)
        _write_descriptions(temp, credits)
        write_layer_styles(temp, dict.fromkeys(layers, GEOMETRY_COLUMN))
        _check_integrity(temp)
        return _replace_unless_changed(temp, target, stamp)
    except PermissionError as exc:
        raise OutputConflict(f"{target} cannot be written ({exc.strerror}); close it in QGIS "
                             "or choose a folder you can write to.") from exc
    except Exception as exc:
        if _disk_full(temp, exc):
            raise OutputConflict(f"the disk holding {target.parent} is full, so {target.name} "
                                 "was not written; free some space or choose another output "
                                 "folder.") from exc
        raise
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


def _stamp(fd: int, target: Path) -> tuple[object, ...]:
    """What changes when anyone commits to ``target``: its SQLite change counter and stat."""
    st = os.fstat(fd)
    return (os.pread(fd, 4, 24), st.st_ino, st.st_size, st.st_mtime_ns)


def _read_state(target: Path) -> tuple[ReviewState, tuple[object, ...]]:
    """The staff's review in ``target`` and the stamp of the file it was read from."""
    for _ in range(MERGE_ATTEMPTS):
        fd = os.open(target, os.O_RDONLY)
        try:
            before = _stamp(fd, target)
            try:
                state = read_review_state(target)
            except pyogrio.errors.DataSourceError as exc:
                raise OutputConflict(f"{target} exists but is not a readable GeoPackage "
                                     f"({exc}); move it away or choose another output "
                                     "path.") from exc
            if _stamp(fd, target) == before:
                return state, before
        finally:
            os.close(fd)
    raise OutputConflict(f"{target} kept being edited while idou read it; save and close it in "
                         "QGIS, then run again.")


def _replace_unless_changed(temp: Path, target: Path, stamp: tuple[object, ...] | None) -> bool:
    """``os.replace(temp, target)`` while no one can commit to ``target``, if unchanged.

    The old file is held with an exclusive SQLite lock from the comparison to the rename, so
    an edit is either in the merged state or waits and then fails on the replaced file's old
    copy (never silently lost). The descriptor used for the stamp stays open until the lock is
    released: closing it earlier would drop the lock (POSIX).
    """
    if stamp is None:
        if target.exists():
            raise OutputConflict(f"{target} appeared while idou ran, so it was left as it is; "
                                 "move it away or run again with --force.")
        os.replace(temp, target)
        return True
    if Path(f"{target}-wal").exists() or Path(f"{target}-shm").exists():
        raise OutputConflict(f"{target} was opened for editing while idou ran (its -wal/-shm "
                             "files exist); save and close it in QGIS, then run again.")
    try:
        fd = os.open(target, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        con = sqlite3.connect(target, timeout=10.0)
        try:
            con.execute("BEGIN EXCLUSIVE")
            if _stamp(fd, target) != stamp:
                con.rollback()
                return False
            os.replace(temp, target)
            con.rollback()
            return True
        except sqlite3.OperationalError as exc:
            raise OutputConflict(f"{target} is open in another program ({exc}); save and "
                                 "close it in QGIS, then run again.") from exc
        finally:
            con.close()
    finally:
        os.close(fd)


def _disk_full(temp: Path, exc: BaseException) -> bool:
    """Whether a failed write ran out of space (GDAL and SQLite do not always say ENOSPC)."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    if "disk is full" in str(exc) or "No space left" in str(exc):
        return True
    try:
        return shutil.disk_usage(temp.parent).free < 1024 * 1024
    except OSError:
        return False


def _extent(layers: Mapping[str, gpd.GeoDataFrame]
            ) -> tuple[float, float, float, float] | None:
    for name in ("coverage", "candidate_parcels", "changes"):
        frame = layers.get(name)
        if frame is not None and not frame.empty:
            xmin, ymin, xmax, ymax = (float(v) for v in frame.total_bounds)
            return (xmin, ymin, xmax, ymax)
    return None


def _attributions(candidate_parcels: gpd.GeoDataFrame,
                  existing_buildings: gpd.GeoDataFrame | None) -> dict[str, str]:
    """Credit lines the source data's terms ask for (地図XML, PLATEAU), by layer."""
    credits = {}
    if candidate_parcels.attrs.get("attribution"):
        credits["candidate_parcels"] = str(candidate_parcels.attrs["attribution"])
    if existing_buildings is not None and existing_buildings.attrs.get("attribution"):
        credits["existing_buildings"] = str(existing_buildings.attrs["attribution"])
    return credits


def _write_descriptions(path: Path, credits: Mapping[str, str]) -> None:
    """Put each layer's credit line in ``gpkg_contents.description`` (QGIS shows it)."""
    if not credits:
        return
    with connect(path) as con:
        con.executemany("UPDATE gpkg_contents SET description = ? WHERE table_name = ?",
                        [(text, table) for table, text in credits.items()])


def _check_folder(target: Path) -> None:
    folder = target.parent
    if not folder.exists():
        raise OutputConflict(f"output folder {folder} does not exist; create it or choose "
                             "another output path.")
    if not folder.is_dir():
        raise OutputConflict(f"{folder} is not a folder; choose another output path.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputConflict(f"output folder {folder} is not writable; choose a folder you "
                             "can write to.")
    if target.is_dir():
        raise UserInputError(f"{target} is a folder; give the GeoPackage's file name, e.g. "
                             f"{target / 'result.gpkg'}.")
    if target.suffix.lower() != ".gpkg":
        raise UserInputError(f"{target} must end in .gpkg; choose an output path like "
                             f"{target.with_suffix('.gpkg').name}.")


def _is_review_geopackage(target: Path) -> bool:
    """Whether ``target`` is a GeoPackage idou wrote (so --force may re-run into it).

    Guards against ``-o parcels.gpkg --force`` replacing an input or any other user file.
    """
    try:
        with connect(target, read_only=True) as con:
            row = con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                              "name = 'run_info'").fetchone()
    except sqlite3.DatabaseError:
        return False
    return row is not None


def _check_not_locked(target: Path) -> None:
    """Refuse when another program holds the file (QGIS editing it, another run)."""
    try:
        con = sqlite3.connect(target, timeout=1.0)
        try:
            con.execute("BEGIN EXCLUSIVE")
            con.rollback()
        finally:
            con.close()
    except sqlite3.OperationalError as exc:
        raise OutputConflict(f"{target} is open in another program ({exc}); save and close "
                             "it in QGIS, then run again.") from exc
    except sqlite3.DatabaseError as exc:
        raise OutputConflict(f"{target} exists but is not a GeoPackage ({exc}); move it away "
                             "or choose another output path.") from exc
    if Path(f"{target}-wal").exists() or Path(f"{target}-shm").exists():
        raise OutputConflict(f"{target} is open in another program (its -wal/-shm files "
                             "exist); save and close it in QGIS, then run again.")


def _multi(geom: BaseGeometry | None) -> BaseGeometry | None:
    if isinstance(geom, Polygon):
        return MultiPolygon([geom])
    return geom


def _prepare(frame: gpd.GeoDataFrame, crs: object) -> gpd.GeoDataFrame:
    out = frame.copy()
    if crs is not None and out.crs is not None and out.crs != crs:
        out = out.to_crs(crs)
    elif out.crs is None and crs is not None:
        out = out.set_crs(crs)
    out = out.set_geometry([_multi(g) for g in out.geometry], crs=out.crs)
    if out.geometry.name != "geometry":
        out = out.rename_geometry("geometry")
    return out.reset_index(drop=True)


def _with_schema(frame: gpd.GeoDataFrame, schema: Mapping[str, type]) -> gpd.GeoDataFrame:
    """``schema`` columns first with their types (missing ones empty), then the others."""
    out = frame.copy()
    for column, kind in schema.items():
        if column not in out:
            out[column] = "" if kind is str else pd.NA
        if kind is str:
            out[column] = pd.Series([None if pd.isna(v) else str(v) for v in out[column]],
                                    index=out.index, dtype=object)
        elif kind is int:
            out[column] = pd.to_numeric(out[column], errors="coerce").astype("Int64")
        else:
            out[column] = pd.to_numeric(out[column], errors="coerce").astype(float)
    rest = [c for c in out.columns if c not in schema and c != out.geometry.name]
    return out[list(schema) + rest + [out.geometry.name]]


def _column_order(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    review = [STATUS, SURVEYOR, SURVEY_DATE, NOTE, DETECTION]
    first = [c for c in frame.columns if c not in review and c != frame.geometry.name]
    return frame[first + [c for c in review if c in frame.columns] + [frame.geometry.name]]


def _missed_layer(old: gpd.GeoDataFrame | None, crs: object) -> gpd.GeoDataFrame:
    if old is not None and not old.empty:
        kept = _prepare(old, crs)
        for column in MISSED_COLUMNS:
            if column not in kept:
                kept[column] = None
        return kept
    empty = pd.DataFrame({c: pd.Series(dtype=object) for c in MISSED_COLUMNS})
    return gpd.GeoDataFrame(empty, geometry=gpd.GeoSeries([], crs=crs), crs=crs)


def _write_layers(path: Path, layers: Mapping[str, gpd.GeoDataFrame]) -> None:
    first = True
    for name, frame in layers.items():
        frame = frame.copy()
        if SURVEY_DATE in frame:
            frame[SURVEY_DATE] = _date_text(frame[SURVEY_DATE])
        for column in frame.columns:
            if column != frame.geometry.name and frame[column].dtype == object:
                frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
        pyogrio.write_dataframe(
            frame, path, layer=name, driver="GPKG", geometry_type="MultiPolygon",
            append=not first, dataset_options={"VERSION": "1.2"} if first else None,
            layer_options={"GEOMETRY_NAME": GEOMETRY_COLUMN, "FID": "fid",
                           "DESCRIPTION": name})
        first = False
    _declare_date_columns(path, [n for n, f in layers.items() if SURVEY_DATE in f])


def _date_text(values: pd.Series) -> pd.Series:
    return survey_dates(values)


def _declare_date_columns(path: Path, tables: list[str]) -> None:
    """Declare 調査日 as GeoPackage DATE (pyogrio writes ``YYYY-MM-DD`` text columns).

    The values are already GeoPackage DATE text, so only the declared type changes. Where
    SQLite refuses schema edits (a build in defensive mode) the column stays TEXT, which the
    QGIS calendar widget (``field_format`` yyyy-MM-dd) edits just as well.
    """
    if not tables:
        return
    try:
        _rewrite_declared_types(path, tables)
    except sqlite3.DatabaseError:
        return


def _rewrite_declared_types(path: Path, tables: list[str]) -> None:
    with connect(path) as con:
        con.execute("PRAGMA writable_schema = ON")
        for table in tables:
            (sql,) = con.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND "
                                 "name = ?", (table,)).fetchone()
            fixed = sql.replace(f'"{SURVEY_DATE}" TEXT', f'"{SURVEY_DATE}" DATE')
            con.execute("UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?",
                        (fixed, table))
        (version,) = con.execute("PRAGMA schema_version").fetchone()
        con.execute(f"PRAGMA schema_version = {int(version) + 1}")
        con.execute("PRAGMA writable_schema = OFF")


def _write_run_info(path: Path, info: Mapping[str, object]) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    with connect(path) as con:
        con.execute('CREATE TABLE run_info ("fid" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, '
                    '"key" TEXT NOT NULL UNIQUE, "value" TEXT)')
        con.executemany("INSERT INTO run_info (key, value) VALUES (?, ?)",
                        [(str(k), _json_text(v)) for k, v in info.items()])
        con.execute("INSERT INTO gpkg_contents (table_name, data_type, identifier, "
                    "description, last_change) VALUES ('run_info', 'attributes', 'run_info', "
                    "'実行情報 (idou run provenance)', ?)", (now,))


def _json_text(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)


def read_run_info(path: Path) -> dict[str, object]:
    """The ``run_info`` table of a review GeoPackage as a dict (JSON values decoded)."""
    with connect(path, read_only=True) as con:
        rows = con.execute("SELECT key, value FROM run_info").fetchall()
    info: dict[str, object] = {}
    for key, value in rows:
        try:
            info[key] = json.loads(value) if value is not None else None
        except (TypeError, ValueError):
            info[key] = value
    return info


_DATA_COLUMNS = """
CREATE TABLE IF NOT EXISTS gpkg_data_columns (
  table_name TEXT NOT NULL, column_name TEXT NOT NULL, name TEXT, title TEXT,
  description TEXT, mime_type TEXT, constraint_name TEXT,
  CONSTRAINT pk_gdc PRIMARY KEY (table_name, column_name),
  CONSTRAINT gdc_tn UNIQUE (table_name, name))
"""
_CONSTRAINTS = """
CREATE TABLE IF NOT EXISTS gpkg_data_column_constraints (
  constraint_name TEXT NOT NULL, constraint_type TEXT NOT NULL, value TEXT, min NUMERIC,
  min_is_inclusive BOOLEAN, max NUMERIC, max_is_inclusive BOOLEAN, description TEXT,
  CONSTRAINT gdcc_ntv UNIQUE (constraint_name, constraint_type, value))
"""
_EXTENSIONS = """
CREATE TABLE IF NOT EXISTS gpkg_extensions (
  table_name TEXT, column_name TEXT, extension_name TEXT NOT NULL, definition TEXT NOT NULL,
  scope TEXT NOT NULL, CONSTRAINT ge_tce UNIQUE (table_name, column_name, extension_name))
"""
STATUS_CONSTRAINT = "idou_review_status"


def _write_data_columns(path: Path, layers: Mapping[str, gpd.GeoDataFrame]) -> None:
    titles = {**ALIASES, MAIN_CLASS: MAIN_CLASS}
    with connect(path) as con:
        con.execute(_DATA_COLUMNS)
        con.execute(_CONSTRAINTS)
        con.execute(_EXTENSIONS)
        for table in ("gpkg_data_columns", "gpkg_data_column_constraints"):
            con.execute("INSERT OR IGNORE INTO gpkg_extensions VALUES (?, NULL, 'gpkg_schema', "
                        "'http://www.geopackage.org/spec120/#extension_schema', 'read-write')",
                        (table,))
        con.executemany(
            "INSERT OR IGNORE INTO gpkg_data_column_constraints (constraint_name, "
            "constraint_type, value, description) VALUES (?, 'enum', ?, ?)",
            [(STATUS_CONSTRAINT, v, v) for v in STATUS_VALUES])
        rows = []
        for table, frame in layers.items():
            for column in frame.columns:
                if column == frame.geometry.name:
                    continue
                title = titles.get(column, column)
                constraint = STATUS_CONSTRAINT if column == STATUS else None
                rows.append((table, column, column, title, _description(column), constraint))
        con.executemany("INSERT OR REPLACE INTO gpkg_data_columns (table_name, column_name, "
                        "name, title, description, constraint_name) VALUES (?, ?, ?, ?, ?, ?)",
                        rows)


def _description(column: str) -> str | None:
    if column == STATUS:
        return f"調査結果: {' / '.join(STATUS_VALUES)} (既定 {STATUS_UNCHECKED})"
    if column == DETECTION:
        return "検出 = 今回の実行で検出 / 再実行で未検出 = 以前の実行だけが検出"
    return None


def _check_integrity(path: Path) -> None:
    with connect(path) as con:
        (ok,) = con.execute("PRAGMA integrity_check").fetchone()
    if ok != "ok":
        raise RuntimeError(f"the GeoPackage written to {path} failed its integrity check: {ok}")


__all__ = ["WriteResult", "read_run_info", "with_review_fields", "write_review_geopackage"]
