"""Accuracy of change detections: object, pixel and parcel scores, threshold sweeps.

The object rules (the survey's, used by training, ``idou tune`` and ``idou evaluate`` alike):

- a true change object is *found* when predicted change covers at least ``cover`` (25%) of its
  area;
- a predicted object is a *false alarm* when less than ``cover`` of it overlaps true change;
- objects under the minimum area are left out of both counts (a predicted object under the
  minimum area is dropped entirely, as ``idou detect`` drops it, so it neither finds a true
  object nor counts as a false alarm).

Empty denominators score 1.0: recall with no true objects, precision with no predicted objects
(nothing was there to miss, nothing claimed was wrong). Pixel scores follow the same convention.

Rasters are labelled with 8-connectivity (``scipy.ndimage.label``); polygons are matched with
shapely 2 and an STRtree. Nothing here imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely
from scipy import ndimage

from idou.errors import UnusableCRS, UserInputError

DEFAULT_COVER = 0.25
DEFAULT_MIN_AREA_M2 = 8.0
CHANNELS = ("new", "demolished")
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)  # objects, as scored here and taught in training


def _ratio(num: int, den: int) -> float:
    return 1.0 if den == 0 else num / den


@dataclass(frozen=True)
class ObjectScores:
    """Object counts and the recall/precision they give.

    Attributes:
        n_true: true objects at or above the minimum area.
        n_found: of those, the ones covered at least ``cover`` by predicted change.
        n_pred: predicted objects at or above the minimum area.
        n_false_alarm: of those, the ones overlapping true change less than ``cover``.
    """

    n_true: int
    n_found: int
    n_pred: int
    n_false_alarm: int

    @property
    def recall(self) -> float:
        """Found / true objects; 1.0 when there are no true objects."""
        return _ratio(self.n_found, self.n_true)

    @property
    def precision(self) -> float:
        """Predicted objects that are not false alarms / predicted objects; 1.0 with none."""
        return _ratio(self.n_pred - self.n_false_alarm, self.n_pred)

    @property
    def f1(self) -> float:
        """Harmonic mean of object recall and precision (0.0 when both are 0)."""
        p, r = self.precision, self.recall
        return 0.0 if p + r == 0 else 2 * p * r / (p + r)

    def __add__(self, other: ObjectScores) -> ObjectScores:
        """Pool counts of two scenes (micro average)."""
        return ObjectScores(self.n_true + other.n_true, self.n_found + other.n_found,
                            self.n_pred + other.n_pred, self.n_false_alarm + other.n_false_alarm)

    def as_dict(self) -> dict[str, float]:
        """Counts and scores as plain numbers (for JSON, mlflow, tables)."""
        return {"n_true": self.n_true, "n_found": self.n_found, "n_pred": self.n_pred,
                "n_false_alarm": self.n_false_alarm, "recall": self.recall,
                "precision": self.precision, "f1": self.f1}


@dataclass(frozen=True)
class PixelScores:
    """Pixel counts (true/false positives, false negatives) and the usual scores.

    Every score is 1.0 when its denominator is empty (e.g. precision with no predicted pixels).
    """

    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        """tp / (tp + fp)."""
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        """tp / (tp + fn)."""
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        """2tp / (2tp + fp + fn)."""
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def iou(self) -> float:
        """tp / (tp + fp + fn) (intersection over union, a.k.a. Jaccard)."""
        return _ratio(self.tp, self.tp + self.fp + self.fn)

    def __add__(self, other: PixelScores) -> PixelScores:
        """Pool counts of two scenes."""
        return PixelScores(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def as_dict(self) -> dict[str, float]:
        """Counts and scores as plain numbers."""
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "precision": self.precision,
                "recall": self.recall, "f1": self.f1, "iou": self.iou}


# --------------------------------------------------------------------------------------- rasters


def _as_bool(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D mask, got shape {a.shape}")
    return a if a.dtype == bool else a.astype(bool)


class _TruthObjects:
    """True change labelled once, reused for every predicted mask (threshold sweeps)."""

    def __init__(self, truth: np.ndarray, valid: np.ndarray | None, min_area_px: int,
                 labelled: bool = False) -> None:
        truth = np.asarray(truth)
        if labelled:
            if truth.ndim != 2 or not np.issubdtype(truth.dtype, np.integer):
                raise ValueError(f"labelled truth must be a 2-D integer array, got {truth.dtype} "
                                 f"{truth.shape}")
            # a label image: each positive value is one object (e.g. one truth polygon)
            self.labels = np.where(truth > 0, truth, 0).astype(np.int64, copy=False)
            self.n = int(self.labels.max()) if self.labels.size else 0
            self.truth = self.labels > 0
        else:
            self.truth = _as_bool(truth, "truth")
            self.labels, self.n = ndimage.label(self.truth, structure=EIGHT_CONNECTED)
        self.valid = None if valid is None else _as_bool(valid, "valid")
        if self.valid is not None and self.valid.shape != self.truth.shape:
            raise ValueError(f"valid/ignore mask {self.valid.shape} != truth {self.truth.shape}")
        self.min_area_px = max(int(min_area_px), 1)
        if self.valid is not None and self.valid.all():
            self.valid = None
        truth_valid = self.truth if self.valid is None else self.truth & self.valid
        lab = self.labels if self.valid is None else np.where(self.valid, self.labels, 0)
        self.area = np.bincount(lab.ravel(), minlength=self.n + 1)
        self.kept = self.area >= self.min_area_px
        self.kept[0] = False
        self.n_true = int(self.kept.sum())
        # Where true change is (valid pixels only) and which object each such pixel belongs to:
        # small next to the raster, so scoring a prediction never indexes the whole raster twice.
        self.hit_index = np.flatnonzero(truth_valid)
        self.hit_label = self.labels.ravel()[self.hit_index]
        self.valid_flat = None if self.valid is None else self.valid.ravel()

    def score(self, pred: np.ndarray, cover: float) -> ObjectScores:
        pred = _as_bool(pred, "pred")
        if pred.shape != self.truth.shape:
            raise ValueError(f"pred {pred.shape} != truth {self.truth.shape}")
        plabels, n_pred_all = ndimage.label(pred, structure=EIGHT_CONNECTED)
        flat = plabels.ravel()
        counted = flat if self.valid_flat is None else flat[self.valid_flat]
        parea = np.bincount(counted, minlength=n_pred_all + 1)
        pkept = parea >= self.min_area_px
        pkept[0] = False
        # Overlap of each predicted object with (all valid) true change.
        at_truth = flat[self.hit_index]
        poverlap = np.bincount(at_truth, minlength=n_pred_all + 1)
        false_alarm = pkept & (poverlap < cover * parea)
        # Coverage of each true object by the kept predicted objects only.
        covered = np.bincount(self.hit_label[pkept[at_truth]], minlength=self.n + 1)
        found = self.kept & (covered >= cover * self.area)
        return ObjectScores(n_true=self.n_true, n_found=int(found.sum()),
                            n_pred=int(pkept.sum()), n_false_alarm=int(false_alarm.sum()))


def object_scores_from_masks(pred: np.ndarray, truth: np.ndarray, *, min_area_px: int,
                             cover: float = DEFAULT_COVER, ignore: np.ndarray | None = None,
                             labelled: bool = False) -> ObjectScores:
    """Object recall/precision of a predicted change mask against a true one.

    Objects are 8-connected components; with ``labelled=True``, ``truth`` is instead an integer
    label image (0 = background, each positive value one object, e.g. one truth polygon, as
    ``rasterio.features.rasterize`` writes it). Areas and overlaps count only pixels outside
    ``ignore`` (e.g. the ignore band along footprint edges, or nodata); an object whose counted
    area falls under ``min_area_px`` is left out.

    Args:
        pred: predicted change, bool (h, w).
        truth: true change, bool (h, w) (any other dtype is read as a mask, nonzero = change).
        min_area_px: minimum object area in pixels (see :func:`min_area_pixels`).
        cover: the overlap fraction of the object rules.
        ignore: pixels to leave out of every count, bool (h, w).
        labelled: ``truth`` is an integer label image, one value per true object.

    Returns:
        The object counts.
    """
    valid = None if ignore is None else ~_as_bool(ignore, "ignore")
    return _TruthObjects(truth, valid, min_area_px, labelled).score(pred, cover)


def pixel_scores(pred: np.ndarray, truth: np.ndarray, ignore: np.ndarray | None = None
                 ) -> PixelScores:
    """Pixel true/false positives and false negatives of ``pred`` against ``truth``."""
    p, t = _as_bool(pred, "pred"), _as_bool(truth, "truth")
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} != truth {t.shape}")
    if ignore is not None:
        keep = ~_as_bool(ignore, "ignore")
        p, t = p & keep, t & keep
    tp = int(np.count_nonzero(p & t))
    return PixelScores(tp=tp, fp=int(np.count_nonzero(p)) - tp, fn=int(np.count_nonzero(t)) - tp)


def min_area_pixels(min_area_m2: float, gsd_m: float) -> int:
    """The minimum object area in whole pixels for a grid of ``gsd_m`` metres (at least 1)."""
    if gsd_m <= 0:
        raise ValueError("gsd_m must be positive")
    return max(1, math.ceil(min_area_m2 / (gsd_m * gsd_m) - 1e-9))


def probabilities_as_float(prob: np.ndarray) -> np.ndarray:
    """Probabilities as float32 in [0, 1]: uint8 rasters (0..255, the stored scale) are / 255."""
    prob = np.asarray(prob)
    if prob.dtype == np.uint8:
        return prob.astype(np.float32) / np.float32(255.0)
    return prob.astype(np.float32, copy=False)


def uint8_cutoff(threshold: float) -> int:
    """The smallest uint8 value whose probability (value / 255) reaches ``threshold``.

    The same rule as ``idou.geo.changes.vectorize.threshold_uint8`` (what ``idou detect`` applies).
    """
    return int(math.ceil(threshold * 255.0 - 1e-9))


def threshold_mask(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Change where ``prob >= threshold``; uint8 rasters use :func:`uint8_cutoff` (as detect).

    The one thresholding rule shared by tuning, evaluation and detection, so that a tuned
    threshold means the same everywhere.
    """
    prob = np.asarray(prob)
    if prob.dtype == np.uint8:
        return prob >= uint8_cutoff(threshold)
    if np.issubdtype(prob.dtype, np.floating):  # compare in the raster's own precision
        return prob >= prob.dtype.type(threshold)
    return prob >= threshold


def sweep_pixel_scores(prob: np.ndarray, truth: np.ndarray, thresholds: Sequence[float], *,
                       valid: np.ndarray | None = None) -> list[tuple[float, PixelScores]]:
    """Pixel scores of ``prob >= t`` for every threshold ``t`` (pixels outside ``valid`` ignored).
    """
    ignore = None if valid is None else ~_as_bool(valid, "valid")
    return [(float(t), pixel_scores(threshold_mask(prob, t), truth, ignore)) for t in thresholds]


def sweep_thresholds(prob: np.ndarray, truth: np.ndarray, thresholds: Sequence[float], *,
                     min_area_px: int, cover: float = DEFAULT_COVER,
                     valid: np.ndarray | None = None,
                     clean: Callable[[np.ndarray], np.ndarray] | None = None,
                     labelled: bool = False) -> list[tuple[float, ObjectScores]]:
    """Object scores of ``prob >= t`` for every threshold ``t`` (the PR curve of one channel).

    Args:
        prob: probabilities (h, w), float in [0, 1] or uint8 0..255 (see :func:`threshold_mask`).
        truth: true change, bool (h, w) (see ``labelled``).
        thresholds: the thresholds to try, in [0, 1].
        min_area_px: minimum object area in pixels.
        cover: the overlap fraction of the object rules.
        valid: pixels to count (e.g. where both flights have data); None = all.
        clean: applied to each thresholded mask before scoring (e.g. detect's morphological
            clean-up, ``functools.partial(idou.geo.changes.vectorize.clean_mask, radius=1)``).
        labelled: ``truth`` is an integer label image, one value per true object (e.g. one per
            truth polygon, so touching buildings stay apart).

    Returns:
        ``(threshold, scores)`` pairs in the order of ``thresholds``.
    """
    prob = np.asarray(prob)
    objects = _TruthObjects(truth, valid, min_area_px, labelled)
    if prob.shape != objects.truth.shape:
        raise ValueError(f"prob {prob.shape} != truth {objects.truth.shape}")
    out = []
    for t in thresholds:
        mask = threshold_mask(prob, t)
        if clean is not None:
            mask = clean(mask)
        out.append((float(t), objects.score(mask, cover)))
    return out


def pick_threshold(curve: Sequence[tuple[float, ObjectScores]], recall_target: float
                   ) -> tuple[float, ObjectScores]:
    """The highest threshold whose object recall reaches ``recall_target``.

    Args:
        curve: ``(threshold, scores)`` pairs, e.g. from :func:`sweep_thresholds` (any order).
        recall_target: the recall to reach, in [0, 1].

    Returns:
        ``(threshold, scores)``. When no threshold reaches the target: the threshold with the
        best recall (the highest such threshold on ties); :func:`reaches` tells the two apart.
    """
    if not curve:
        raise ValueError("empty threshold curve")
    reaching = [(t, s) for t, s in curve if reaches(s, recall_target)]
    if reaching:
        return max(reaching, key=lambda ts: ts[0])
    return max(curve, key=lambda ts: (ts[1].recall, ts[0]))


def reaches(scores: ObjectScores, recall_target: float) -> bool:
    """Whether ``scores`` reach ``recall_target`` (with a tolerance for float round-off)."""
    return scores.recall >= recall_target - 1e-9


# -------------------------------------------------------------------------------------- polygons


def _polygon_parts(gdf: gpd.GeoDataFrame) -> np.ndarray:
    """Polygonal geometries of ``gdf`` (empty and non-areal rows dropped), one per row."""
    geoms = np.asarray(gdf.geometry.values, dtype=object)
    if len(geoms) == 0:
        return geoms
    geoms = geoms[~(shapely.is_missing(geoms) | shapely.is_empty(geoms))]
    geoms = shapely.make_valid(geoms)
    return geoms[shapely.area(geoms) > 0]


def _covered_area(objects: np.ndarray, cover_geoms: np.ndarray) -> np.ndarray:
    """Area of each of ``objects`` covered by the union of ``cover_geoms``."""
    out = np.zeros(len(objects), dtype=float)
    if len(objects) == 0 or len(cover_geoms) == 0:
        return out
    dissolved = shapely.get_parts(shapely.union_all(cover_geoms))
    tree = shapely.STRtree(dissolved)
    i_obj, i_cov = tree.query(objects, predicate="intersects")
    if len(i_obj):
        inter = shapely.area(shapely.intersection(objects[i_obj], dissolved[i_cov]))
        out += np.bincount(i_obj, weights=inter, minlength=len(objects))
    return out


def _check_projected(gdf: gpd.GeoDataFrame, name: str) -> None:
    if gdf.crs is not None and not gdf.crs.is_projected:
        raise UnusableCRS(
            f"{name} is in a geographic CRS ({gdf.crs.to_string()}); areas need metres — "
            "reproject it to a plane rectangular zone (e.g. EPSG:6677)."
        )


def _same_crs(pred: gpd.GeoDataFrame, truth: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    if pred.crs is not None and truth.crs is not None and pred.crs != truth.crs:
        return pred.to_crs(truth.crs)
    return pred


def object_scores_from_polygons(pred: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, *,
                                min_area_m2: float = DEFAULT_MIN_AREA_M2,
                                cover: float = DEFAULT_COVER) -> ObjectScores:
    """Object recall/precision of predicted change polygons against true ones.

    Each row is one object (filter both frames to one channel first; see
    :func:`channel_scores`). Predictions are reprojected to the truth's CRS when they differ;
    areas are in CRS units, so both must be in a projected CRS in metres.
    """
    _check_projected(truth, "the truth layer")
    pred = _same_crs(pred, truth)
    _check_projected(pred, "the detection layer")
    t = _polygon_parts(truth)
    p = _polygon_parts(pred)
    t = t[shapely.area(t) >= min_area_m2]
    p = p[shapely.area(p) >= min_area_m2]
    t_area, p_area = shapely.area(t), shapely.area(p)
    found = _covered_area(t, p) >= cover * t_area
    # A prediction over true change under the minimum area is not a false alarm either.
    false_alarm = _covered_area(p, _polygon_parts(truth)) < cover * p_area
    return ObjectScores(n_true=len(t), n_found=int(found.sum()), n_pred=len(p),
                        n_false_alarm=int(false_alarm.sum()))


def _channel_rows(gdf: gpd.GeoDataFrame, channel: str) -> gpd.GeoDataFrame:
    if "channel" not in gdf.columns:
        raise UserInputError(
            "the layer has no 'channel' column ('new' or 'demolished'); "
            "pass an idou detection GeoPackage or a truth.gpkg from `idou samples`."
        )
    return gdf[gdf["channel"].astype(str) == channel]


def channel_scores(pred: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, *,
                   min_area_m2: float = DEFAULT_MIN_AREA_M2, cover: float = DEFAULT_COVER
                   ) -> dict[str, ObjectScores]:
    """Object scores per channel (``new``, ``demolished``); both frames need a ``channel`` column.
    """
    return {c: object_scores_from_polygons(_channel_rows(pred, c), _channel_rows(truth, c),
                                           min_area_m2=min_area_m2, cover=cover)
            for c in CHANNELS}


def change_type_recall(pred: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, *,
                       min_area_m2: float = DEFAULT_MIN_AREA_M2, cover: float = DEFAULT_COVER
                       ) -> dict[str, ObjectScores]:
    """Recall per true ``change_type`` (new, extension, rebuilt, demolished, ...).

    A true object of a given type is found by predicted change of its own channel (a rebuilt
    change has a row in each channel and counts once per row). Only ``n_true``/``n_found`` are
    meaningful; predicted counts are zero because predictions carry no trusted type.
    """
    if "change_type" not in truth.columns:
        return {}
    out: dict[str, ObjectScores] = {}
    for ctype in sorted(truth["change_type"].dropna().astype(str).unique()):
        total = ObjectScores(0, 0, 0, 0)
        rows = truth[truth["change_type"].astype(str) == ctype]
        for c in CHANNELS:
            t = _channel_rows(rows, c)
            if len(t):
                s = object_scores_from_polygons(_channel_rows(pred, c), t,
                                                min_area_m2=min_area_m2, cover=cover)
                total = total + ObjectScores(s.n_true, s.n_found, 0, 0)
        out[ctype] = total
    return out


# --------------------------------------------------------------------------------------- parcels


def _parcel_ids(gdf: gpd.GeoDataFrame, key: str, name: str) -> set[str]:
    if key not in gdf.columns:
        raise UserInputError(
            f"{name} has no '{key}' column; name the parcel key with --parcel-key."
        )
    values = gdf[key].dropna().astype(str).str.strip()
    return {v for v in values if v}


def parcel_counts(candidate_parcels: gpd.GeoDataFrame, truth: gpd.GeoDataFrame,
                  parcels_key: str = "地番") -> tuple[int, int]:
    """``(truly changed parcels, of those among the candidates)``, matched on ``parcels_key``."""
    changed = _parcel_ids(truth, parcels_key, "the truth layer")
    candidates = _parcel_ids(candidate_parcels, parcels_key, "the candidate parcels layer")
    return len(changed), len(changed & candidates)


def parcel_recall(candidate_parcels: gpd.GeoDataFrame, truth: gpd.GeoDataFrame,
                  parcels_key: str = "地番") -> float:
    """Share of truly changed parcels that are among the candidates (1.0 when none changed)."""
    n_changed, n_found = parcel_counts(candidate_parcels, truth, parcels_key)
    return _ratio(n_found, n_changed)
