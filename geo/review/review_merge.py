"""Keep staff's review when a run is written into an existing review GeoPackage.

Keys: ``parcel_id`` for ``candidate_parcels``; ``change_id`` for ``changes``, and for a
change whose id changed (the model drew it a little differently) the old change it overlaps
most, when their intersection-over-union is at least ``min_iou``.

Every old row keeps its review fields (調査状況, 調査者, 調査日, 備考). Old rows that the
new run no longer finds are kept, not deleted, with ``検出状況 = 再実行で未検出``; rows the
new run finds have ``検出状況 = 検出``. The ``missed`` layer (drawn by staff) is kept as is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely

from idou.geo.review.review_fields import (
    DETECTED,
    DETECTION,
    NOT_DETECTED_AGAIN,
    NOTE,
    REVIEW_FIELDS,
    STATUS,
    STATUS_UNCHECKED,
    SURVEY_DATE,
    SURVEYOR,
)
from idou.geo.review.survey_dates import survey_dates


@dataclass
class ReviewState:
    """The layers of an existing review GeoPackage that hold staff's work."""

    candidate_parcels: gpd.GeoDataFrame | None = None
    changes: gpd.GeoDataFrame | None = None
    missed: gpd.GeoDataFrame | None = None


@dataclass
class MergeStats:
    """What a merge kept."""

    matched: int = 0
    matched_by_overlap: int = 0
    edits_kept: int = 0
    vanished: int = 0
    details: dict[str, int] = field(default_factory=dict)


def read_review_state(path: Path) -> ReviewState:
    """Read the review layers of ``path`` (missing layers are None)."""
    names = {row[0] for row in pyogrio.list_layers(path)}
    state = ReviewState()
    for layer in ("candidate_parcels", "changes", "missed"):
        if layer in names:
            frame = pyogrio.read_dataframe(path, layer=layer, fid_as_index=True)
            if SURVEY_DATE in frame:  # GDAL reads a DATE it cannot parse as null: take the text
                frame[SURVEY_DATE] = _raw_text(path, layer, SURVEY_DATE, frame.index)
            setattr(state, layer, frame.reset_index(drop=True))
    return state


def _raw_text(path: Path, layer: str, column: str, fids: pd.Index) -> list[object]:
    """The stored values of ``column`` by fid, as SQLite holds them."""
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)) as con:
        rows = dict(con.execute(f'SELECT fid, "{column}" FROM "{layer}"').fetchall())
    return [rows.get(int(fid)) for fid in fids]


def edited_mask(frame: gpd.GeoDataFrame | pd.DataFrame | None) -> pd.Series:
    """Rows where staff changed any review field from its default."""
    if frame is None or frame.empty:
        return pd.Series([], dtype=bool)
    mask = pd.Series(False, index=frame.index)
    if STATUS in frame:
        status = frame[STATUS].fillna(STATUS_UNCHECKED).astype(str)
        mask |= (status != STATUS_UNCHECKED) & (status != "")
    for column in (SURVEYOR, NOTE):
        if column in frame:
            mask |= frame[column].fillna("").astype(str).str.strip() != ""
    if SURVEY_DATE in frame:
        mask |= frame[SURVEY_DATE].notna()
    return mask


def has_review_edits(state: ReviewState) -> bool:
    """Whether staff edited anything (review fields, or drew in ``missed``)."""
    if state.missed is not None and not state.missed.empty:
        return True
    return any(bool(edited_mask(f).any()) for f in (state.candidate_parcels, state.changes))


def with_review_fields(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """A copy with empty review fields (調査状況 = 未確認) and ``検出状況 = 検出`` added."""
    out = frame.copy()
    if STATUS not in out:
        out[STATUS] = STATUS_UNCHECKED
    out[STATUS] = out[STATUS].fillna(STATUS_UNCHECKED)
    for column in (SURVEYOR, NOTE):
        if column not in out:
            out[column] = pd.Series([None] * len(out), index=out.index, dtype=object)
    if SURVEY_DATE not in out:
        out[SURVEY_DATE] = pd.Series([None] * len(out), index=out.index, dtype=object)
    out[SURVEY_DATE] = normalise_dates(out[SURVEY_DATE])
    out[DETECTION] = DETECTED
    return out


def normalise_dates(values: pd.Series) -> pd.Series:
    """Dates as ``YYYY-MM-DD`` text or None (the GeoPackage DATE encoding); text that is no
    readable date (see :mod:`idou.geo.review.survey_dates`) is kept as it is."""
    return survey_dates(values)


def _iou(a: object, b: object) -> float:
    if a is None or b is None:
        return 0.0
    union = float(shapely.area(shapely.union(a, b)))
    return float(shapely.area(shapely.intersection(a, b))) / union if union else 0.0


def merge_review(new: gpd.GeoDataFrame, old: gpd.GeoDataFrame | None, key: str, *,
                 match_by_overlap: bool = False, min_iou: float = 0.5,
                 key_min_iou: float = 0.0) -> tuple[gpd.GeoDataFrame, MergeStats]:
    """Carry old review fields onto ``new`` rows and append vanished old rows.

    Args:
        new: the new run's layer (review fields added if missing).
        old: the same layer from the existing file, or None.
        key: the stable key column (``parcel_id`` or ``change_id``).
        match_by_overlap: match rows whose key changed by geometry overlap (IoU).
        min_iou: least intersection-over-union for an overlap match.
        key_min_iou: least intersection-over-union for a match by key: rows with the same key
            whose outlines do not overlap this much are different features (a key that
            repeats in the input must never move a review to another place).

    Returns:
        (merged layer, statistics)
    """
    merged = with_review_fields(new).reset_index(drop=True)
    stats = MergeStats()
    if old is None or old.empty:
        return merged, stats
    old = _comparable(old, merged.crs)
    old_edited = edited_mask(old).to_numpy()
    match = _match_by_key(merged, old, key, key_min_iou)
    stats.matched = int((match >= 0).sum())
    if match_by_overlap and (match < 0).any():
        stats.matched_by_overlap += _match_by_overlap(merged, old, match, min_iou)
    new_rows = np.flatnonzero(match >= 0)
    old_rows = match[new_rows]
    for column in REVIEW_FIELDS:
        values = merged[column].to_numpy(dtype=object).copy()
        values[new_rows] = old[column].to_numpy(dtype=object)[old_rows]
        merged[column] = values
    stats.edits_kept += int(old_edited[old_rows].sum())
    merged[STATUS] = merged[STATUS].fillna(STATUS_UNCHECKED)
    vanished_rows = sorted(set(range(len(old))) - set(match[match >= 0].tolist()))
    if vanished_rows:
        vanished = old.iloc[vanished_rows].copy()
        vanished[DETECTION] = NOT_DETECTED_AGAIN
        vanished = vanished[[c for c in merged.columns if c in vanished.columns]]
        stats.vanished = len(vanished)
        stats.edits_kept += int(old_edited[vanished_rows].sum())
        merged = gpd.GeoDataFrame(pd.concat([merged, vanished], ignore_index=True),
                                  geometry=merged.geometry.name, crs=merged.crs)
    merged[STATUS] = merged[STATUS].fillna(STATUS_UNCHECKED)
    return merged, stats


def _comparable(old: gpd.GeoDataFrame, crs: object) -> gpd.GeoDataFrame:
    """A copy of ``old`` in ``crs`` with every review field, its 調査日 normalised."""
    old = old.reset_index(drop=True).copy()
    if old.crs is not None and crs is not None and old.crs != crs:
        old = old.to_crs(crs)
    for column in REVIEW_FIELDS:
        if column not in old:
            old[column] = None
    old[SURVEY_DATE] = normalise_dates(old[SURVEY_DATE])
    return old


def _match_by_key(merged: gpd.GeoDataFrame, old: gpd.GeoDataFrame, key: str,
                  key_min_iou: float) -> np.ndarray:
    """The old row of each new row with the same key (-1: none), unless their outlines
    overlap less than ``key_min_iou``."""
    old_row_by_key = {str(k): i for i, k in enumerate(old[key].astype(str))} if key in old \
        else {}
    match = np.full(len(merged), -1)
    for i, k in enumerate(merged[key].astype(str)):
        match[i] = old_row_by_key.get(k, -1)
    if key_min_iou > 0:
        for row in np.flatnonzero(match >= 0).tolist():
            if _iou(merged.geometry.iloc[row], old.geometry.iloc[int(match[row])]) < key_min_iou:
                match[row] = -1
    return match


def _match_by_overlap(merged: gpd.GeoDataFrame, old: gpd.GeoDataFrame, match: np.ndarray,
                      min_iou: float) -> int:
    """Match each unmatched new row to the free old row it overlaps most (IoU at least
    ``min_iou``), in place in ``match``; return how many were matched."""
    used = set(match[match >= 0].tolist())
    free_old = np.array([j for j in range(len(old)) if j not in used], dtype=int)
    if not free_old.size:
        return 0
    matched = 0
    old_geoms = old.geometry.to_numpy()[free_old]
    tree = shapely.STRtree(old_geoms)
    for row in np.flatnonzero(match < 0).tolist():
        geom = merged.geometry.iloc[row]
        candidates = tree.query(geom, predicate="intersects")
        best, best_iou = -1, float(min_iou)
        for c in candidates.tolist():
            old_row = int(free_old[c])
            if old_row in used:
                continue
            other = old_geoms[c]
            union = float(shapely.area(shapely.union(geom, other)))
            inter = float(shapely.area(shapely.intersection(geom, other)))
            iou = inter / union if union else 0.0
            if iou >= best_iou:
                best, best_iou = old_row, iou
        if best >= 0:
            match[row] = best
            used.add(best)
            matched += 1
    return matched
