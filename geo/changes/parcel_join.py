"""Candidate parcels: the parcels a survey must visit, with their changes and a route priority.

A change that spans several parcels counts in each of them with the area it has there (its
share): on the parcel holding most of it, and on every other parcel holding at least
``on_parcel_share`` (20 %) of it or at least ``min_share_m2`` (10 m²); smaller slivers are
boundary misfit between the parcel map and the orthophoto and are ignored.
``priority`` 1 is surveyed first: parcels are ranked by highest score, then changed area.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd

from idou.geo.changes.classify import changes_on_parcels
from idou.geo.review.review_fields import CLASS_ORDER_JA, MAIN_CLASS, OTHER_CLASS_JA
from idou.geo.vector.parcels import district_of

CANDIDATE_COLUMNS = ["parcel_id", "地番", "所在", "地区", "異動区分", MAIN_CLASS, "n_changes",
                     "changed_area_m2", "score_max", "priority", "shares", "change_ids"]


def join_parcels(changes: gpd.GeoDataFrame, parcels: gpd.GeoDataFrame, *,
                 on_parcel_share: float = 0.2, min_share_m2: float = 10.0) -> gpd.GeoDataFrame:
    """One row per parcel touched by classified changes.

    Args:
        changes: output of :func:`idou.geo.changes.classify.classify_changes` (``change_id``,
            ``異動区分``, ``score_max``, geometry).
        parcels: ``ParcelSet.frame`` (``parcel_id``, ``地番``, ``所在``, geometry).
        on_parcel_share: share of a change's area that counts it on a parcel.
        min_share_m2: area on a parcel that counts it there whatever its share.

    Returns:
        GeoDataFrame (parcel geometry) with :data:`CANDIDATE_COLUMNS`: ``異動区分`` is the
        comma list of classes (建替, 新築, 増築, 滅失 order), ``主な異動区分`` the class with the
        largest area, ``changed_area_m2`` the sum of shares, ``shares`` the detail
        (``異動ID:区分:面積㎡(割合%)`` per change).
    """
    crs = parcels.crs
    if changes.empty or parcels.empty:
        return _empty(crs)
    if changes.crs is not None and crs is not None and changes.crs != crs:
        changes = changes.to_crs(crs)
    changes = changes.reset_index(drop=True)
    parcels = parcels.reset_index(drop=True)
    links = _links(changes, parcels, on_parcel_share, min_share_m2)
    if links.empty:
        return _empty(crs)
    classes = changes["異動区分"].astype(str).to_numpy()
    ids = changes["change_id"].astype(str).to_numpy()
    scores = (changes["score_max"].astype(float).to_numpy() if "score_max" in changes
              else np.full(len(changes), np.nan))
    parcel_ids, chiban, shozai, district = _parcel_columns(parcels)
    parcel_geoms = parcels.geometry.to_numpy()
    rows = []
    for parcel_row, group in links.groupby("parcel_row"):
        change_rows = group["change_row"].to_numpy()
        ordered, main = _classes(classes[change_rows], group["area_m2"])
        shares = "; ".join(
            f"{ids[r]}:{classes[r]}:{a:.1f}㎡({s * 100:.0f}%)"
            for r, a, s in zip(change_rows, group["area_m2"], group["share"], strict=True))
        p = int(str(parcel_row))
        rows.append({
            "parcel_id": parcel_ids[p],
            "地番": chiban[p],
            "所在": shozai[p],
            "地区": district[p],
            "異動区分": ",".join(ordered),
            MAIN_CLASS: main,
            "n_changes": int(len(change_rows)),
            "changed_area_m2": round(float(group["area_m2"].sum()), 2),
            "score_max": float(np.nanmax(scores[change_rows])) if len(change_rows) else np.nan,
            "shares": shares,
            "change_ids": ",".join(ids[change_rows]),
            "geometry": parcel_geoms[p],
        })
    out = _by_priority(gpd.GeoDataFrame(rows, geometry="geometry", crs=crs))
    result = gpd.GeoDataFrame(out[CANDIDATE_COLUMNS + ["geometry"]], geometry="geometry",
                              crs=crs)
    if "attribution" in parcels.attrs:
        result.attrs["attribution"] = parcels.attrs["attribution"]
    return result


def _links(changes: gpd.GeoDataFrame, parcels: gpd.GeoDataFrame, on_parcel_share: float,
           min_share_m2: float) -> pd.DataFrame:
    """Each change on each parcel it counts on, with its area there and its ``share``."""
    links = changes_on_parcels(changes, parcels, share=on_parcel_share,
                               min_area_m2=min_share_m2)
    if links.empty:
        return links
    links = links.copy()
    links["share"] = links["area_m2"] / np.maximum(
        changes.geometry.area.to_numpy()[links["change_row"].to_numpy()], 1e-9)
    return links


def _parcel_columns(parcels: gpd.GeoDataFrame) -> tuple[np.ndarray, ...]:
    """parcel_id, 地番, 所在 ("" where missing) and 地区 (from 所在 where missing)."""
    parcel_ids, chiban, shozai = (
        parcels[c].fillna("").astype(str).to_numpy() if c in parcels
        else np.full(len(parcels), "", dtype=object) for c in ("parcel_id", "地番", "所在"))
    district = (parcels["地区"].fillna("").astype(str).to_numpy() if "地区" in parcels
                else np.array([district_of(v) for v in shozai], dtype=object))
    return parcel_ids, chiban, shozai, district


def _classes(classes: np.ndarray, areas: pd.Series) -> tuple[list[str], str]:
    """A parcel's classes in the survey's order and the one with the largest area."""
    area_by_class: dict[str, float] = {}
    for c, a in zip(classes, areas, strict=True):
        area_by_class[c] = area_by_class.get(c, 0.0) + float(a)
    order = (*CLASS_ORDER_JA, OTHER_CLASS_JA)  # その他の変化: only with --keep-unmatched
    ordered = [c for c in order if c in area_by_class]
    return ordered, max(ordered, key=lambda c: (area_by_class[c], -order.index(c)))


def _by_priority(out: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Rows numbered and sorted by route priority: highest score, then largest area."""
    order = out.sort_values(["score_max", "changed_area_m2", "parcel_id"],
                            ascending=[False, False, True]).index
    out.loc[order, "priority"] = np.arange(1, len(out) + 1)
    out["priority"] = out["priority"].astype(int)
    return out.loc[order].reset_index(drop=True)


def _empty(crs: object) -> gpd.GeoDataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in CANDIDATE_COLUMNS})
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries([], crs=crs), crs=crs)


def _dtype(column: str) -> str:
    if column in ("n_changes", "priority"):
        return "int64"
    if column in ("changed_area_m2", "score_max"):
        return "float64"
    return "object"
