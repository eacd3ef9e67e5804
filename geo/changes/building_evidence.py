"""The building map (家屋現況図) as evidence: 滅失, 増築 and 新築 decided per registered building.

- **滅失 per footprint.** Each registered footprint gets a demolished score: a robust statistic
  (the median) of the demolished probabilities inside the footprint shrunk inward by
  ``inset_m`` (1 m), so 1-2 m of misregistration or building lean between map and photo does
  not pull in the ground around it. A footprint whose score reaches the threshold becomes a 滅失
  change whose geometry is the footprint. Demolished change on no footprint that scored is not
  a 滅失 candidate: it becomes ``other`` (その他の変化), kept in the ``changes`` layer but not
  making a parcel a candidate unless asked.
- **増築 / 新築 against standing footprints.** New change is measured outside the standing
  footprints: if it comes within ``tolerance_m`` of none of them it is 新築; if the part outside
  them, less misregistration slivers (:func:`outside_part`), reaches
  ``min_area_m2`` it is 増築 (its geometry: that part); otherwise it lies on a standing house and
  is ``other``.
- **建替**: new change over a footprint that scored demolished (rule 4 of
  :mod:`idou.geo.changes.classify`, or on the same parcel), or a house rebuilt on the same spot: new
  change over most of a footprint with demolished change on it too (:func:`rebuilt_in_place`).
- **Buildings the map lacks** (未評価家屋の候補): from a model's per-date building presence,
  buildings present in both photos on no footprint (:func:`unmapped_buildings`).

Every decided row carries ``判定理由``: one sentence (Japanese) saying why it is, or is not, a
candidate. Nothing here imports inference, training or torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio.features
import shapely
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from idou.geo.changes.vectorize import ProbabilityReader
from idou.geo.raster.grid import Grid

DEFAULT_INSET_M = 1.0
DEFAULT_TOLERANCE_M = 1.0
DEFAULT_FOOTPRINT_THRESHOLD = 0.5
DEFAULT_PRESENCE_THRESHOLD = 0.5
QUANTILE = 0.5  # the median: half the footprint must read demolished
REBUILT_COVER = 0.5
REASON = "判定理由"
OTHER = "other"


@dataclass(frozen=True)
class FootprintScores:
    """Per footprint (in the order given): the robust score, and max and mean, NaN off the grid."""

    score: np.ndarray
    score_max: np.ndarray
    score_mean: np.ndarray


def _scored_shapes(footprints: np.ndarray, inset_m: float, min_area_m2: float) -> np.ndarray:
    """Each footprint shrunk by ``inset_m`` (by less, down to none, when that empties it)."""
    shapes = footprints.copy()
    for inset in (inset_m / 2, inset_m):
        if inset <= 0:
            continue
        shrunk = shapely.buffer(footprints, -inset, join_style="mitre")
        ok = shapely.area(shrunk) >= min_area_m2
        shapes = np.where(ok, shrunk, shapes)
    return shapes


def footprint_scores(probabilities: ProbabilityReader, grid: Grid, footprints: gpd.GeoSeries, *,
                     channel: int = 1, inset_m: float = DEFAULT_INSET_M,
                     quantile: float = QUANTILE, block_size: int = 1024) -> FootprintScores:
    """Score registered footprints on one channel of a probability raster.

    Args:
        probabilities: uint8 ``(C, H, W)`` probabilities on ``grid``, read by windows.
        grid: their grid; ``footprints`` must be in its CRS.
        footprints: registered building footprints.
        channel: which channel to score (1: demolished).
        inset_m: how far each footprint is shrunk before scoring (misregistration tolerance);
            a footprint too small for it is shrunk by half as much, or not at all.
        quantile: the robust statistic (0.5: median) of the pixels inside.
        block_size: footprints are read in groups of about this many pixels a side.

    Returns:
        Scores in [0, 1] per footprint; NaN for a footprint with no pixel on the grid.
    """
    geoms = np.asarray(footprints.values, dtype=object)
    n = len(geoms)
    score, smax, smean = (np.full(n, np.nan) for _ in range(3))
    if n == 0:
        return FootprintScores(score, smax, smean)
    px_area = grid.gsd ** 2
    shapes = _scored_shapes(geoms, inset_m, 4 * px_area)
    bounds = shapely.bounds(shapes)
    inv = ~grid.transform
    x, y = bounds[:, 0], bounds[:, 3]
    cols, rows = inv.a * x + inv.b * y + inv.c, inv.d * x + inv.e * y + inv.f
    key = (np.floor(rows / block_size).astype(np.int64) * 1_000_003
           + np.floor(cols / block_size).astype(np.int64))
    for block in np.unique(key):
        members = np.flatnonzero((key == block) & ~shapely.is_empty(shapes))
        if members.size == 0:
            continue
        b = bounds[members]
        window = grid.clip(grid.window_from_bounds(
            (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max())))
        if window is None:
            continue
        values = probabilities.read(window)[channel].astype(np.float64) / 255.0
        transform = grid.window_transform(window)
        labels = np.zeros(values.shape, dtype=np.int32)
        for all_touched in (False, True):
            todo = [i for i in members if not np.isfinite(score[i])]
            if not todo:
                break
            labels[:] = 0
            labels = rasterio.features.rasterize(
                [(shapes[i], k + 1) for k, i in enumerate(todo)], out=labels,
                transform=transform, all_touched=all_touched)
            _label_statistics(values, labels, np.asarray(todo), quantile, score, smax, smean)
    return FootprintScores(score, smax, smean)


def _label_statistics(values: np.ndarray, labels: np.ndarray, rows: np.ndarray, quantile: float,
                      score: np.ndarray, smax: np.ndarray, smean: np.ndarray) -> None:
    flat = labels.ravel()
    inside = flat > 0
    lab, val = flat[inside], values.ravel()[inside]
    if lab.size == 0:
        return
    order = np.lexsort((val, lab))
    lab, val = lab[order], val[order]
    counts = np.bincount(lab, minlength=len(rows) + 1)[1:]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    have = counts > 0
    pick = starts + np.floor(quantile * (counts - 1)).astype(np.int64)
    sums = np.bincount(lab, weights=val, minlength=len(rows) + 1)[1:]
    target = rows[have]
    score[target] = val[pick[have]]
    smax[target] = val[(starts + counts - 1)[have]]
    smean[target] = sums[have] / counts[have]


def _ids(buildings: gpd.GeoDataFrame) -> np.ndarray:
    if "building_id" in buildings:
        return buildings["building_id"].astype(str).to_numpy()
    return np.array([str(i) for i in range(len(buildings))], dtype=object)


def outside_part(change: BaseGeometry, footprints: np.ndarray, tolerance_m: float,
                 min_area_m2: float = 8.0) -> BaseGeometry:
    """The part of a new change outside the footprints, less misregistration slivers.

    The change minus the footprints, opened (shrunk, then grown back) by ``tolerance_m``: a
    band under twice that wide along a footprint's edge (the same house drawn 1-2 m off, or
    leaning) goes, while a wing wider than that keeps its whole area. A change lying mostly
    outside the footprints is opened by half as much, so a narrow wing is not lost.
    """
    rest = shapely.difference(change, shapely.union_all(footprints))
    if tolerance_m <= 0:
        return rest
    opened = _opening(rest, tolerance_m)
    if shapely.area(opened) < min_area_m2 and \
            shapely.area(rest) >= 0.5 * shapely.area(change):
        opened = _opening(rest, tolerance_m / 2)
    return shapely.intersection(opened, rest)


def _opening(geom: BaseGeometry, radius: float) -> BaseGeometry:
    return shapely.buffer(shapely.buffer(geom, -radius, join_style="mitre"), radius,
                          join_style="mitre")


def rebuilt_in_place(changes: gpd.GeoDataFrame, footprints: np.ndarray, candidates: np.ndarray,
                     cover: float = 0.5, score_max: np.ndarray | None = None,
                     channel_threshold: float | None = None) -> np.ndarray:
    """Footprints (among ``candidates``) rebuilt on the same spot: new change covers at least
    ``cover`` of the footprint and demolished change lies on it too.

    A house rebuilt where it stood keeps much of its outline, so its footprint's demolished
    score stays low (a building stands there in both photos); both channels agreeing on it is
    the evidence instead: demolished change on it, or (``score_max``, ``channel_threshold``) a
    demolished probability inside the footprint reaching the demolished channel's threshold.
    """
    out = np.zeros(len(footprints), dtype=bool)
    channel = changes["channel"].astype(str).to_numpy()
    geoms = np.asarray(changes.geometry.values, dtype=object)
    new, old = geoms[channel == "new"], geoms[channel == "demolished"]
    if not len(new) or not candidates.any():
        return out
    new_tree, old_tree = shapely.STRtree(new), shapely.STRtree(old)
    responds = np.zeros(len(footprints), dtype=bool)
    if score_max is not None and channel_threshold is not None:
        responds = np.nan_to_num(score_max, nan=0.0) >= channel_threshold
    for f in np.flatnonzero(candidates):
        footprint = footprints[f]
        hits = new_tree.query(footprint, predicate="intersects")
        if not hits.size or not (responds[f] or
                                 old_tree.query(footprint, predicate="intersects").size):
            continue
        covered = shapely.area(shapely.intersection(footprint, shapely.union_all(new[hits])))
        out[f] = covered >= cover * shapely.area(footprint)
    return out


def apply_building_evidence(changes: gpd.GeoDataFrame, buildings: gpd.GeoDataFrame,
                            scores: FootprintScores, *,
                            threshold: float = DEFAULT_FOOTPRINT_THRESHOLD,
                            tolerance_m: float = DEFAULT_TOLERANCE_M, min_area_m2: float = 8.0,
                            rebuilt_cover: float = REBUILT_COVER,
                            channel_threshold: float | None = None) -> gpd.GeoDataFrame:
    """Decide demolished, new and extension change against the registered footprints.

    Args:
        changes: vectorised change (``channel``, ``change_type``, ``score_max``,
            ``score_mean``, geometry), every row ``new`` or ``demolished``.
        buildings: registered footprints (``building_id``, geometry), same CRS.
        scores: :func:`footprint_scores` of ``buildings`` on the demolished channel.
        threshold: footprint score that makes a 滅失 candidate.
        tolerance_m: gap between map and photo still counted as on a footprint.
        min_area_m2: smallest new built area outside standing footprints that is 増築.
        rebuilt_cover: share of a footprint new change must cover (with demolished change on
            it too) for the footprint to be rebuilt in place (see :func:`rebuilt_in_place`).
        channel_threshold: the demolished channel's threshold: a footprint with a pixel
            reaching it counts as demolished change on it for :func:`rebuilt_in_place`.

    Returns:
        A new frame: one ``demolished`` row per footprint that scored (geometry: the
        footprint), the other demolished change as ``other``, new change as ``new``,
        ``extension`` or ``other``; with ``building_ids``, ``footprint_score`` and ``判定理由``.
    """
    out = changes.copy().reset_index(drop=True)
    out["building_ids"] = ""
    out["footprint_score"] = np.nan
    out[REASON] = ""
    footprints = np.asarray(buildings.geometry.values, dtype=object)
    ids = _ids(buildings)
    score = np.nan_to_num(scores.score, nan=0.0)
    rebuilt = rebuilt_in_place(out, footprints, score < threshold, rebuilt_cover)
    # a weaker sign (a demolished pixel, no change polygon): the new change alone is 建替
    weak = rebuilt_in_place(out, footprints, score < threshold, rebuilt_cover,
                            scores.score_max, channel_threshold) & ~rebuilt
    demolished = (score >= threshold) | rebuilt
    types = out["change_type"].to_numpy().copy()
    new_geoms = np.asarray(out.geometry.values, dtype=object).copy()
    _judge_demolished_change(out, types, footprints, ids, score, demolished, threshold)
    _judge_new_change(out, types, new_geoms, footprints[~demolished], ids[~demolished],
                      weak[~demolished], tolerance_m, min_area_m2)
    out["change_type"] = types
    out = out.set_geometry(gpd.GeoSeries(new_geoms, index=out.index, crs=out.crs))
    out = out[out["change_type"] != "absorbed"]
    footprint_rows = _demolished_footprints(footprints, ids, scores, score, demolished, rebuilt,
                                            threshold, out.crs)
    merged = pd.concat([out, footprint_rows], ignore_index=True)
    return gpd.GeoDataFrame(merged, geometry=out.geometry.name, crs=out.crs)


def _judge_demolished_change(out: gpd.GeoDataFrame, types: np.ndarray, footprints: np.ndarray,
                             ids: np.ndarray, score: np.ndarray, demolished: np.ndarray,
                             threshold: float) -> None:
    """Demolished change on a demolished footprint is absorbed by it; other such change is
    ``other``, with the footprint it lies on most (if any) and the reason (in ``out``)."""
    geoms = np.asarray(out.geometry.values, dtype=object)
    all_tree = shapely.STRtree(footprints)
    for row in np.flatnonzero(out["channel"].astype(str).to_numpy() == "demolished"):
        on = all_tree.query(geoms[row], predicate="intersects")
        hit = [int(f) for f in on if demolished[f]]
        if hit:
            types[row] = "absorbed"
            continue
        types[row] = OTHER
        if len(on):
            best = int(on[np.argmax(shapely.area(shapely.intersection(footprints[on],
                                                                      geoms[row])))])
            out.at[row, "building_ids"] = ids[best]
            out.at[row, "footprint_score"] = round(float(score[best]), 3)
            out.at[row, REASON] = (f"登録家屋 {ids[best]} の滅失スコア {score[best]:.2f} が閾値 "
                                   f"{threshold:.2f} 未満のため候補にしない")
        else:
            out.at[row, REASON] = "登録家屋のない場所の滅失反応のため候補にしない（樹木・車など）"


def _judge_new_change(out: gpd.GeoDataFrame, types: np.ndarray, new_geoms: np.ndarray,
                      standing_geoms: np.ndarray, standing_ids: np.ndarray,
                      standing_weak: np.ndarray, tolerance_m: float,
                      min_area_m2: float) -> None:
    """New change against the standing footprints: ``new`` away from them, ``extension`` (its
    outside part) when enough lies outside, ``rebuilt`` on a weakly demolished one, else
    ``other``; the footprints' ids and the reason go into ``out``."""
    geoms = np.asarray(out.geometry.values, dtype=object)
    standing_tree = shapely.STRtree(standing_geoms)
    for row in np.flatnonzero(out["channel"].astype(str).to_numpy() == "new"):
        near = standing_tree.query(geoms[row], predicate="dwithin", distance=tolerance_m)
        if near.size == 0:
            types[row] = "new"
            out.at[row, REASON] = "登録家屋から離れた新しい建物"
            continue
        outside = outside_part(geoms[row], standing_geoms[near], tolerance_m, min_area_m2)
        area = float(shapely.area(outside))
        names = ",".join(standing_ids[sorted(near)])
        out.at[row, "building_ids"] = names
        if area >= min_area_m2:
            types[row] = "extension"
            new_geoms[row] = outside
            out.at[row, REASON] = f"登録家屋 {names} の外側に {area:.0f}㎡ の増築部分"
        elif standing_weak[near].any():
            best = standing_ids[near[standing_weak[near]]][0]
            types[row] = "rebuilt"
            out.at[row, REASON] = (f"登録家屋 {best} の屋根の大半に新築反応、弱い滅失反応もあり"
                                   "建替の可能性")
        else:
            types[row] = OTHER
            out.at[row, REASON] = (f"登録家屋 {names} の上の反応で、外側の部分 {area:.0f}㎡ が"
                                   f"最小面積 {min_area_m2:g}㎡ 未満のため候補にしない")


def _demolished_footprints(footprints: np.ndarray, ids: np.ndarray, scores: FootprintScores,
                           score: np.ndarray, demolished: np.ndarray, rebuilt: np.ndarray,
                           threshold: float, crs: Any) -> gpd.GeoDataFrame:
    """One ``demolished`` row per demolished footprint (its geometry), with its reason."""
    rows = np.flatnonzero(demolished)
    return gpd.GeoDataFrame({
        "channel": "demolished",
        "change_type": "demolished",  # rule 4 of classify makes it 建替 with the new change
        "area_m2": shapely.area(footprints[rows]).round(2),
        "score_max": scores.score_max[rows], "score_mean": scores.score_mean[rows],
        "building_ids": ids[rows], "footprint_score": np.round(score[rows], 3),
        REASON: [f"登録家屋 {i} の屋根の大半に新築反応、滅失反応もあり建替（滅失スコア {s:.2f}）"
                 if r else f"登録家屋 {i} の滅失スコア {s:.2f} が閾値 {threshold:.2f} 以上"
                 for i, s, r in zip(ids[rows], score[rows], rebuilt[rows], strict=True)],
    }, geometry=gpd.GeoSeries(footprints[rows], crs=crs), crs=crs)


class _BothDates:
    """Presence in both dates as the first channel of a reader ``vectorize`` understands."""

    def __init__(self, presence: ProbabilityReader) -> None:
        self.presence = presence

    def read(self, window: Window) -> np.ndarray:
        both = self.presence.read(window)
        out = np.zeros_like(both[:2])
        out[0] = np.minimum(both[0], both[1])
        return out


def unmapped_buildings(presence: ProbabilityReader, grid: Grid,
                       buildings: gpd.GeoDataFrame | None, *,
                       threshold: float = DEFAULT_PRESENCE_THRESHOLD,
                       tolerance_m: float = DEFAULT_TOLERANCE_M, min_area_m2: float = 8.0
                       ) -> gpd.GeoDataFrame:
    """Buildings present in both photos that lie on no registered footprint (未評価家屋の候補).

    Args:
        presence: uint8 ``(2, H, W)`` building presence (before, after) on ``grid``.
        grid: its grid.
        buildings: registered footprints (same CRS), or None (then every building counts).
        threshold: presence both dates must reach.
        tolerance_m: footprints are grown by this before the building is compared with them.
        min_area_m2: smallest part off the footprints that is reported.

    Returns:
        ``candidate_id``, ``area_m2``, ``score_max``, ``score_mean``, ``判定理由``, geometry.
    """
    from idou.geo.changes.vectorize import vectorize

    found = vectorize(_BothDates(presence), grid, (threshold, 1.0 - 1e-6),
                      min_area_m2=min_area_m2)
    found = found[found["channel"] == "new"].reset_index(drop=True)
    geoms = np.asarray(found.geometry.values, dtype=object)
    if buildings is not None and len(buildings) and len(found):
        tree = shapely.STRtree(np.asarray(buildings.geometry.values, dtype=object))
        footprints = np.asarray(buildings.geometry.values, dtype=object)
        for k, geom in enumerate(geoms):
            near = tree.query(geom, predicate="dwithin", distance=tolerance_m)
            if near.size:
                geoms[k] = shapely.difference(
                    geom, shapely.union_all(shapely.buffer(footprints[near], tolerance_m)))
    area = shapely.area(geoms) if len(geoms) else np.zeros(0)
    keep = area >= min_area_m2
    frame = gpd.GeoDataFrame({
        "candidate_id": [f"U{k + 1:05d}" for k in range(int(keep.sum()))],
        "area_m2": np.round(area[keep], 2),
        "score_max": found["score_max"].to_numpy()[keep],
        "score_mean": found["score_mean"].to_numpy()[keep],
        REASON: ["両時期の写真に建物があり、家屋現況図に登録家屋がない"] * int(keep.sum()),
    }, geometry=gpd.GeoSeries(geoms[keep], crs=grid.crs), crs=grid.crs)
    return frame


def empty_unmapped(crs: object) -> gpd.GeoDataFrame:
    """The unmapped-building layer with no rows (the model declares no presence outputs)."""
    return gpd.GeoDataFrame({"candidate_id": pd.Series(dtype=object),
                             "area_m2": pd.Series(dtype=float),
                             "score_max": pd.Series(dtype=float),
                             "score_mean": pd.Series(dtype=float),
                             REASON: pd.Series(dtype=object)},
                            geometry=gpd.GeoSeries([], crs=crs), crs=crs)
