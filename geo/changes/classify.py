"""Give each detected change its class: 新築, 増築, 滅失 or 建替.

Rules (in this order):

1. ``channel == "new"`` → ``new`` (新築); ``channel == "demolished"`` → ``demolished`` (滅失).
2. With existing buildings: an existing footprint covered for at least ``footprint_cover``
   (50 %) of its area by demolished change is demolished; the demolished change that overlaps
   it most takes the footprint's outline (snapped) and its ``building_ids``.
3. With existing buildings: new change touching or overlapping a footprint that still stands
   (within ``touch_tolerance_m``) → ``extension`` (増築).
4. New (or extension) and demolished change that overlap each other, or that lie on the same
   parcel (a change lies on the parcel holding most of it and on every other one holding at
   least ``on_parcel_share`` of its area or 10 m²), → both ``rebuilt`` (建替).

Without buildings only rules 1 and 4 apply. With buildings *and* their footprint scores
(:func:`idou.geo.changes.building_evidence.footprint_scores`), rules 2 and 3 are replaced by the
building map as evidence
(:func:`idou.geo.changes.building_evidence.apply_building_evidence`): 滅失 is decided per
footprint, 増築 needs new built area outside the standing footprints, and change the map does
not support becomes ``other`` (その他の変化), which rule 4 ignores.

``change_id`` is a stable hash of the geometry (rounded to 0.5 m, normalised) and the class, so
a re-run on the same result gives the same ids.
With parcels the output also carries ``地番`` (every parcel the change lies on, comma-joined),
``所在`` and ``地区`` (大字/町丁目) of the main parcel, and ``parcel_ids``.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

from idou.geo.changes.building_evidence import (
    OTHER,
    REASON,
    FootprintScores,
    apply_building_evidence,
)
from idou.geo.review.review_fields import CLASS_JA, OTHER_CLASS_JA
from idou.geo.vector.parcels import district_of

REQUIRED = ("channel", "geometry")


def classify_changes(changes: gpd.GeoDataFrame, buildings: gpd.GeoDataFrame | None,
                     parcels: gpd.GeoDataFrame | None, *, footprint_cover: float = 0.5,
                     touch_tolerance_m: float = 0.5, on_parcel_share: float = 0.2,
                     footprints: FootprintScores | None = None,
                     footprint_threshold: float = 0.5, tolerance_m: float = 1.0,
                     min_area_m2: float = 8.0, demolished_threshold: float | None = None
                     ) -> gpd.GeoDataFrame:
    """Classify change polygons from the vectoriser.

    Args:
        changes: columns ``channel`` ('new' | 'demolished'), ``area_m2``, ``score_max``,
            ``score_mean``, ``geometry`` (projected CRS, metres).
        buildings: existing footprints (``building_id``, ``geometry``) or None.
        parcels: parcels (``parcel_id``, ``地番``, ``所在``, ``geometry``) or None.
        footprint_cover: share of a footprint that demolished change must cover.
        touch_tolerance_m: gap still counted as touching a footprint (extension).
        on_parcel_share: share of a change's area that puts it on a parcel.
        footprints: demolished scores of ``buildings`` (same order); with them the building
            map decides 滅失 / 増築 / 新築 (see the module docstring).
        footprint_threshold: footprint score that makes a 滅失 candidate.
        tolerance_m: misregistration between map and photo tolerated for 増築.
        min_area_m2: smallest new built area outside standing footprints that is 増築.
        demolished_threshold: the demolished channel's threshold (evidence of a house rebuilt
            on its spot, see :func:`idou.geo.changes.building_evidence.rebuilt_in_place`).

    Returns:
        A copy with ``change_id``, ``change_type``, ``異動区分``, ``building_ids``, ``地番``,
        ``所在``, ``地区``, ``parcel_ids`` added (the last four empty without parcels);
        ``area_m2`` follows snapped outlines.
    """
    out = _checked_copy(changes)
    if buildings is not None and (not buildings.empty or footprints is not None) \
            and not out.empty:
        if buildings.crs is not None and out.crs is not None and buildings.crs != out.crs:
            buildings = buildings.to_crs(out.crs)
        if footprints is not None:  # an empty map leaves every change unsupported
            out = apply_building_evidence(out, buildings, footprints,
                                          threshold=footprint_threshold,
                                          tolerance_m=tolerance_m, min_area_m2=min_area_m2,
                                          channel_threshold=demolished_threshold)
        else:
            standing = _snap_demolished(out, buildings, footprint_cover)
            _mark_extensions(out, buildings[standing], touch_tolerance_m)
    out["area_m2"] = out.geometry.area.round(2)
    _mark_rebuilt_by_overlap(out)
    _on_parcels(out, parcels, on_parcel_share)
    if REASON in out:
        rebuilt = (out["change_type"] == "rebuilt") & ~out[REASON].astype(str).str.contains("建替")
        out.loc[rebuilt, REASON] = "滅失と新築が同じ場所または同じ筆にあるため建替"
    out["異動区分"] = out["change_type"].map({**CLASS_JA, OTHER: OTHER_CLASS_JA}).astype(object)
    out.insert(0, "change_id", pd.Series(change_ids(out.geometry, out["change_type"]),
                                         index=out.index, dtype=object))
    return out


def _checked_copy(changes: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """A copy of ``changes`` with each row's type from its channel; refuses unknown input."""
    missing = [c for c in REQUIRED if c not in changes.columns]
    if missing:
        raise ValueError(f"classify_changes needs columns {missing}")
    out = changes.copy().reset_index(drop=True)
    channel = out["channel"].astype(str)
    bad = ~channel.isin(["new", "demolished"])
    if bad.any():
        raise ValueError(f"unknown channel values {sorted(set(channel[bad]))}")
    out["change_type"] = np.where(channel == "new", "new", "demolished").astype(object)
    out["building_ids"] = ""
    return out


def _on_parcels(out: gpd.GeoDataFrame, parcels: gpd.GeoDataFrame | None,
                on_parcel_share: float) -> None:
    """Rule 4 by parcel (建替 on one 筆) and each change's 地番, 所在, 地区 and parcel ids
    (empty without parcels), in place."""
    out["地番"] = ""
    out["所在"] = ""
    out["地区"] = ""
    out["parcel_ids"] = ""
    if parcels is not None and not parcels.empty and not out.empty:
        if parcels.crs is not None and out.crs is not None and parcels.crs != out.crs:
            parcels = parcels.to_crs(out.crs)
        on_parcels = changes_on_parcels(out, parcels, on_parcel_share)
        _mark_rebuilt_by_parcel(out, on_parcels)
        _annotate_parcels(out, parcels, on_parcels)


def candidate_changes(classified: gpd.GeoDataFrame, keep_unmatched: bool = False
                      ) -> gpd.GeoDataFrame:
    """The classified changes that make their parcels candidates: all but ``other``
    (その他の変化, change the building map does not support) unless ``keep_unmatched``."""
    if keep_unmatched or "change_type" not in classified:
        return classified
    return classified[classified["change_type"] != "other"]


def _snap_demolished(out: gpd.GeoDataFrame, buildings: gpd.GeoDataFrame,
                     footprint_cover: float) -> np.ndarray:
    """Mark demolished footprints, snap demolished changes to them; return standing mask."""
    demolished_idx = np.flatnonzero(out["change_type"].to_numpy() == "demolished")
    standing = np.ones(len(buildings), dtype=bool)
    if demolished_idx.size == 0:
        return standing
    demolished_geoms = out.geometry.to_numpy()[demolished_idx]
    tree = shapely.STRtree(demolished_geoms)
    footprints = buildings.geometry.to_numpy()
    ids = buildings["building_id"].astype(str).to_numpy() if "building_id" in buildings \
        else np.array([str(i) for i in range(len(buildings))])
    assigned: dict[int, list[int]] = defaultdict(list)
    fp_idx, ch_idx = tree.query(footprints, predicate="intersects")
    by_footprint: dict[int, list[int]] = defaultdict(list)
    for f, c in zip(fp_idx, ch_idx, strict=True):
        by_footprint[int(f)].append(int(c))
    for f, cands in by_footprint.items():
        footprint = footprints[f]
        if footprint.area <= 0:
            continue
        overlaps = shapely.area(shapely.intersection(footprint, demolished_geoms[cands]))
        if overlaps.sum() / footprint.area >= footprint_cover:
            standing[f] = False
            assigned[int(demolished_idx[cands[int(np.argmax(overlaps))]])].append(f)
    geometry = out.geometry.to_numpy().copy()
    for row, fps in assigned.items():
        geometry[row] = shapely.union_all(footprints[fps])
        out.at[row, "building_ids"] = ",".join(ids[fps])
    out.geometry = gpd.GeoSeries(geometry, index=out.index, crs=out.crs)
    return standing


def _mark_extensions(out: gpd.GeoDataFrame, standing: gpd.GeoDataFrame,
                     tolerance: float) -> None:
    new_idx = np.flatnonzero(out["change_type"].to_numpy() == "new")
    if new_idx.size == 0 or standing.empty:
        return
    tree = shapely.STRtree(standing.geometry.to_numpy())
    ids = standing["building_id"].astype(str).to_numpy() if "building_id" in standing \
        else np.array([str(i) for i in range(len(standing))])
    geoms = out.geometry.to_numpy()[new_idx]
    ch, fp = tree.query(geoms, predicate="dwithin", distance=tolerance)
    touched: dict[int, list[int]] = defaultdict(list)
    for c, f in zip(ch, fp, strict=True):
        touched[int(new_idx[c])].append(int(f))
    for row, fps in touched.items():
        out.at[row, "change_type"] = "extension"
        out.at[row, "building_ids"] = ",".join(ids[sorted(set(fps))])


def _mark_rebuilt_by_overlap(out: gpd.GeoDataFrame) -> None:
    types = out["change_type"].to_numpy()
    demolished = np.flatnonzero(types == "demolished")
    built = np.flatnonzero(np.isin(types, ["new", "extension"]))
    if demolished.size == 0 or built.size == 0:
        return
    geoms = out.geometry.to_numpy()
    tree = shapely.STRtree(geoms[demolished])
    b, d = tree.query(geoms[built], predicate="intersects")
    for bi, di in zip(b, d, strict=True):
        if shapely.area(shapely.intersection(geoms[built[bi]], geoms[demolished[di]])) > 0:
            out.at[int(built[bi]), "change_type"] = "rebuilt"
            out.at[int(demolished[di]), "change_type"] = "rebuilt"


def changes_on_parcels(changes: gpd.GeoDataFrame, parcels: gpd.GeoDataFrame,
                       share: float = 0.2, min_area_m2: float = 10.0) -> pd.DataFrame:
    """Which parcels each change lies on, with the intersecting area.

    Returns:
        DataFrame ``change_row`` (position in ``changes``), ``parcel_row`` (position in
        ``parcels``), ``area_m2`` (intersection), ``main`` (the parcel holding most of it).
        A change lies on its main parcel and on every parcel holding at least ``share`` of
        its area or at least ``min_area_m2`` (smaller slivers are parcel-map misfit).
    """
    geoms = changes.geometry.to_numpy()
    parcel_geoms = parcels.geometry.to_numpy()
    tree = shapely.STRtree(parcel_geoms)
    ch, pa = tree.query(geoms, predicate="intersects")
    if ch.size == 0:
        return pd.DataFrame({"change_row": [], "parcel_row": [], "area_m2": [], "main": []})
    areas = shapely.area(shapely.intersection(geoms[ch], parcel_geoms[pa]))
    frame = pd.DataFrame({"change_row": ch, "parcel_row": pa, "area_m2": areas})
    frame = frame[frame["area_m2"] > 0]
    change_area = shapely.area(geoms)[frame["change_row"].to_numpy()]
    best = frame.groupby("change_row")["area_m2"].transform("max")
    frame["main"] = frame["area_m2"] == best
    keep = (frame["main"] | (frame["area_m2"] >= share * np.maximum(change_area, 1e-9))
            | (frame["area_m2"] >= min_area_m2))
    return frame[keep].reset_index(drop=True)


def _mark_rebuilt_by_parcel(out: gpd.GeoDataFrame, on_parcels: pd.DataFrame) -> None:
    if on_parcels.empty:
        return
    rows = on_parcels["change_row"].to_numpy(dtype=int)
    types = out["change_type"].to_numpy()[rows]
    channel = out["channel"].to_numpy()[rows]
    links = pd.DataFrame({
        "parcel": on_parcels["parcel_row"].to_numpy(), "row": rows,
        "old": (types == "demolished") | ((types == "rebuilt") & (channel == "demolished")),
        "new": np.isin(types, ["new", "extension"]) | ((types == "rebuilt") & (channel == "new")),
    })
    per_parcel = links.groupby("parcel")[["old", "new"]].any()
    both = per_parcel.index[per_parcel["old"] & per_parcel["new"]]
    on_both = links["parcel"].isin(both) & (links["old"] | links["new"])  # never その他の変化
    rebuilt = np.unique(links.loc[on_both, "row"].to_numpy())
    if rebuilt.size:
        column = out["change_type"].to_numpy().copy()
        column[rebuilt] = "rebuilt"
        out["change_type"] = column


def _annotate_parcels(out: gpd.GeoDataFrame, parcels: gpd.GeoDataFrame,
                      on_parcels: pd.DataFrame) -> None:
    chiban = parcels["地番"].astype(str).to_numpy() if "地番" in parcels else None
    shozai = parcels["所在"].astype(str).to_numpy() if "所在" in parcels else None
    district = (parcels["地区"].astype(str).to_numpy() if "地区" in parcels
                else np.array([district_of(v) for v in shozai]) if shozai is not None else None)
    districts = [""] * len(out)
    pid = parcels["parcel_id"].astype(str).to_numpy() if "parcel_id" in parcels else None
    numbers = [""] * len(out)
    places = [""] * len(out)
    ids = [""] * len(out)
    ordered = on_parcels.sort_values(["change_row", "area_m2"], ascending=[True, False])
    for change_row, group in ordered.groupby("change_row"):
        row = int(str(change_row))
        rows = group["parcel_row"].to_numpy()
        if chiban is not None:
            numbers[row] = ",".join(dict.fromkeys(chiban[rows]))
        if shozai is not None:
            places[row] = shozai[rows[0]]
        if district is not None:
            districts[row] = district[rows[0]]
        if pid is not None:
            ids[row] = ",".join(pid[rows])
    out["地番"] = numbers
    out["所在"] = places
    out["地区"] = districts
    out["parcel_ids"] = ids


def change_ids(geometries: gpd.GeoSeries, change_types: pd.Series, grid_m: float = 0.5
               ) -> list[str]:
    """Stable ids: sha1 of the normalised, grid-rounded geometry WKB and the class."""
    seen: dict[str, int] = defaultdict(int)
    ids: list[str] = []
    for geom, kind in zip(geometries, change_types, strict=True):
        key = _geometry_key(geom, grid_m) + str(kind).encode()
        digest = hashlib.sha1(key, usedforsecurity=False).hexdigest()[:16]
        seen[digest] += 1
        ids.append(digest if seen[digest] == 1 else f"{digest}-{seen[digest]}")
    return ids


def _geometry_key(geom: BaseGeometry | None, grid_m: float) -> bytes:
    if geom is None or geom.is_empty:
        return b""
    rounded = shapely.normalize(shapely.set_precision(geom, grid_m))
    return shapely.to_wkb(rounded, output_dimension=2)
