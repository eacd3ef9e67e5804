"""Evaluate a model or a finished detection GeoPackage against truth.

A model is run through the engine ``idou detect`` uses (``open_source`` → ``preflight`` →
``AlignedPair`` → ``predict_grid`` with an ONNX Runtime session), so the probabilities measured
here are the ones detect thresholds. Scores follow :mod:`idou.geo.scoring.metrics`.

Validation scenes are folders holding two flights and ``truth.gpkg``: either ``before.tif`` and
``after.tif``, or exactly two ``flight_*.tif`` files (before = first by name, e.g.
``flight_2024.tif``; after = second, ``flight_2025.tif``) — the layout of ``data_samples/``.
A folder of such folders is a set of scenes. Nothing here imports torch or mlflow.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyogrio
import shapely
from rasterio.features import rasterize
from rasterio.windows import Window

from idou.errors import InputNotFound, UnreadableInput, UserInputError
from idou.geo.raster.grid import Grid
from idou.geo.review.review_fields import DETECTION, NOT_DETECTED_AGAIN
from idou.geo.scoring import metrics
from idou.geo.scoring.metrics import CHANNELS, ObjectScores, PixelScores

TRUTH_FILE = "truth.gpkg"
TRUTH_LAYER = "truth"
CHANGES_LAYER = "changes"
PARCELS_LAYER = "candidate_parcels"
COVERAGE_LAYER = "coverage"
INSIDE_SHARE = 0.5  # a truth object counts when at least half of it was processed
_RASTER_SUFFIXES = (".tif", ".tiff", ".vrt")


# ------------------------------------------------------------------------------------- scenes

@dataclass(frozen=True)
class Scene:
    """One validation flight pair with its truth."""

    name: str
    before: Path
    after: Path
    truth: Path
    buildings: Path | None = None  # the building map (家屋現況図) of the before flight


def scene_buildings(folder: Path) -> Path | None:
    """A scene's building map: ``buildings.gpkg``, else the first ``buildings_*.gpkg`` by name
    (``buildings_2024.gpkg``: the map held at the time of the before flight)."""
    if (folder / "buildings.gpkg").is_file():
        return folder / "buildings.gpkg"
    maps = sorted(folder.glob("buildings_*.gpkg"))
    return maps[0] if maps else None


def _scene_in(folder: Path) -> Scene:
    truth = folder / TRUTH_FILE
    named = [folder / f"{side}{suf}" for side in ("before", "after") for suf in _RASTER_SUFFIXES]
    before = next((p for p in named[:3] if p.is_file()), None)
    after = next((p for p in named[3:] if p.is_file()), None)
    if before is None or after is None:
        flights = sorted(p for p in folder.glob("flight_*") if p.suffix.lower() in _RASTER_SUFFIXES)
        if len(flights) != 2:
            raise UserInputError(
                f"{folder} holds {len(flights)} flight_*.tif files; a validation scene needs "
                "exactly two (before, after by name) or before.tif and after.tif, plus truth.gpkg.")
        before, after = flights
    return Scene(name=folder.name, before=before, after=after, truth=truth,
                 buildings=scene_buildings(folder))


def find_scenes(validation: str | Path) -> list[Scene]:
    """The validation scenes in ``validation``: one scene folder, or a folder of them."""
    root = Path(validation).expanduser()
    if not root.is_dir():
        raise InputNotFound(f"validation folder {root} does not exist; pass a folder holding "
                            "flight_*.tif and truth.gpkg (or a folder of such folders).")
    if (root / TRUTH_FILE).is_file():
        return [_scene_in(root)]
    scenes = [_scene_in(sub) for sub in sorted(root.iterdir())
              if sub.is_dir() and (sub / TRUTH_FILE).is_file()]
    if not scenes:
        raise UserInputError(f"{root} holds no {TRUTH_FILE} (nor do its subfolders); a "
                             "validation scene is a folder with two flights and truth.gpkg "
                             "(or pass a chip folder with A/, B/ and label/).")
    return scenes


# -------------------------------------------------------------------------------------- vectors

def read_layer(path: str | Path, layer: str | None, *, required: bool = True,
               what: str = "layer") -> gpd.GeoDataFrame | None:
    """Read ``layer`` of a vector file (the first layer when ``layer`` is None or absent)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputNotFound(f"{path} does not exist; check the path of the {what}.")
    try:
        names = [str(n) for n in pyogrio.list_layers(path)[:, 0]]
    except Exception as exc:  # noqa: BLE001 - GDAL raises several kinds
        raise UnreadableInput(f"{path.name} is not a readable vector file ({exc}); pass a "
                              "GeoPackage.") from exc
    if layer is not None and layer not in names:
        if required and len(names) != 1:
            raise UserInputError(f"{path.name} has no layer '{layer}' (it has "
                                 f"{', '.join(names) or 'none'}); pass the right file.")
        if not required:
            return None
    chosen = layer if layer in names else (names[0] if names else None)
    if chosen is None:
        raise UserInputError(f"{path.name} holds no layers; pass the right file.")
    return gpd.read_file(path, layer=chosen)


def read_truth(path: str | Path) -> gpd.GeoDataFrame:
    """The truth layer (``truth``, or the file's only layer); it needs a ``channel`` column."""
    truth = read_layer(path, TRUTH_LAYER, what="truth")
    assert truth is not None
    if "channel" not in truth.columns:
        raise UserInputError(f"{Path(path).name} has no 'channel' column (new / demolished); "
                             "pass a truth.gpkg written by `idou samples`.")
    return truth


def rasterize_labels(truth: gpd.GeoDataFrame, grid: Grid, *, column: str = "channel",
                     values: tuple[str, ...] = CHANNELS) -> dict[str, np.ndarray]:
    """Per value of ``column``: an int32 label image on ``grid``, one label per truth row.

    Rows are objects, as in :func:`idou.geo.scoring.metrics.object_scores_from_polygons` (two
    touching truth buildings stay two objects); 0 is background.
    """
    if truth.crs is not None and grid.crs is not None and truth.crs != grid.crs:
        truth = truth.to_crs(grid.crs)
    out: dict[str, np.ndarray] = {}
    keys = truth[column].astype(str).to_numpy()
    for value in values:
        shapes = [(g, i + 1) for i, g in enumerate(truth.geometry[keys == value])
                  if g is not None and not g.is_empty]
        if shapes:
            out[value] = rasterize(shapes, out_shape=(grid.height, grid.width),
                                   transform=grid.transform, fill=0, dtype="int32")
        else:
            out[value] = np.zeros((grid.height, grid.width), dtype=np.int32)
    return out


# ------------------------------------------------------------------------------------ prediction

class _ArraySink:
    """Collects the engine's uint8 probabilities (and valid mask) of a validation-sized grid."""

    def __init__(self, height: int, width: int) -> None:
        self.probs = np.zeros((2, height, width), dtype=np.uint8)
        self.valid = np.zeros((height, width), dtype=bool)
        self.complete_mask = True

    def write(self, window: Window, probs: np.ndarray, valid: np.ndarray | None = None) -> None:
        r0, c0 = int(window.row_off), int(window.col_off)
        h, w = probs.shape[1:]
        self.probs[:, r0:r0 + h, c0:c0 + w] = probs
        if valid is None:
            self.complete_mask = False
        else:
            self.valid[r0:r0 + h, c0:c0 + w] = valid


@dataclass
class ScenePrediction:
    """The engine's output on one scene, with truth on the same grid."""

    name: str
    grid: Grid
    probs: np.ndarray  # uint8 (2, H, W): new, demolished (detect's stored scale)
    valid: np.ndarray  # bool (H, W): both flights hold data
    truth: gpd.GeoDataFrame
    truth_labels: dict[str, np.ndarray] = field(default_factory=dict)  # per channel
    buildings: gpd.GeoDataFrame | None = None  # the building map, in the grid's CRS
    _footprints: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.truth_labels:
            self.truth_labels = rasterize_labels(self.truth, self.grid)

    def truth_mask(self, channel: str) -> np.ndarray:
        """True change of ``channel`` as a bool mask."""
        return np.asarray(self.truth_labels[channel]) > 0

    @property
    def gsd(self) -> float:
        """Ground sampling distance of the grid in metres."""
        return float(self.grid.gsd)

    def read(self, window: Window) -> np.ndarray:
        """uint8 ``(2, h, w)`` probabilities of a window (what ``vectorize`` reads)."""
        r0, c0 = int(window.row_off), int(window.col_off)
        return self.probs[:, r0:r0 + int(window.height), c0:c0 + int(window.width)]

    def changes(self, thresholds: dict[str, float],
                min_area_m2: float = metrics.DEFAULT_MIN_AREA_M2) -> gpd.GeoDataFrame:
        """The change polygons ``idou detect`` makes of these probabilities at ``thresholds``."""
        from idou.geo.changes.vectorize import vectorize

        return vectorize(self, self.grid, (thresholds["new"], thresholds["demolished"]),
                         min_area_m2=min_area_m2)

    def footprint_scores(self) -> Any:
        """Demolished scores of the building map's footprints (computed once)."""
        from idou.geo.changes.building_evidence import footprint_scores

        if self.buildings is None:
            return None
        if self._footprints is None:
            self._footprints = footprint_scores(self, self.grid, self.buildings.geometry)
        return self._footprints

    def changes_with_map(self, thresholds: dict[str, float], footprint_threshold: float,
                         min_area_m2: float = metrics.DEFAULT_MIN_AREA_M2
                         ) -> gpd.GeoDataFrame:
        """The change ``idou detect --buildings`` lists as candidates (その他の変化 left out)."""
        from idou.geo.changes.classify import candidate_changes, classify_changes

        classified = classify_changes(self.changes(thresholds, min_area_m2), self.buildings,
                                      None, footprints=self.footprint_scores(),
                                      footprint_threshold=footprint_threshold,
                                      min_area_m2=min_area_m2,
                                      demolished_threshold=thresholds["demolished"])
        return candidate_changes(classified)


def detect_clean(mask: np.ndarray) -> np.ndarray:
    """The morphological clean-up ``idou detect`` applies to a thresholded mask.

    ``idou.geo.changes.vectorize.clean_mask`` with ``vectorize``'s default radius (detect passes
    none).
    """
    import inspect

    from idou.geo.changes.vectorize import clean_mask, vectorize

    radius = inspect.signature(vectorize).parameters["clean_radius"].default
    return clean_mask(np.asarray(mask, dtype=bool), int(radius))


def _valid_mask(pair: Any, block: int = 2048) -> np.ndarray:
    grid = pair.grid
    valid = np.zeros((grid.height, grid.width), dtype=bool)
    for r in range(0, grid.height, block):
        for c in range(0, grid.width, block):
            h, w = min(block, grid.height - r), min(block, grid.width - c)
            valid[r:r + h, c:c + w] = pair.read(Window(c, r, w, h))[2]
    return valid


def predict_pair(loaded: Any, session: Any, before: str | Path, after: str | Path,
                 truth: gpd.GeoDataFrame, *, name: str = "", crs: str | None = None,
                 batch_size: int = 4, buildings: str | Path | None = None) -> ScenePrediction:
    """Run a loaded model on one flight pair with detect's engine.

    Args:
        loaded: ``idou.inference.model_source.LoadedModel``.
        session: its ONNX Runtime session (``idou.inference.session.make_session``).
        before, after: the two flights (anything ``open_source`` accepts).
        truth: the truth polygons.
        name: scene name for reports.
        crs: CRS of inputs that record none.
        batch_size: tiles per model call.
        buildings: the building map (家屋現況図) to score with, if any.
    """
    from idou.geo.raster.align import AlignedPair
    from idou.geo.raster.preflight import preflight
    from idou.geo.raster.sources import open_source
    from idou.geo.vector.buildings import read_buildings
    from idou.inference.engine import predict_grid

    src_b = open_source(before, crs=crs)
    src_a = open_source(after, crs=crs)
    report = preflight(src_b, src_a, loaded.contract, estimate_misregistration=False)
    footprint = report.grid.footprint()
    in_grid = truth.to_crs(report.grid.crs) if truth.crs is not None else truth
    if len(truth) and not in_grid.intersects(footprint).any():
        raise UserInputError(
            f"none of the {len(truth)} truth objects lie on the flights {src_b.label} and "
            f"{src_a.label}, so nothing can be scored (recall would be 0/0); check that the "
            "truth is for this pair and in the right CRS.")
    with AlignedPair(report) as pair:
        sink = _ArraySink(report.grid.height, report.grid.width)
        predict_grid(pair, session, loaded.contract, sink, batch_size=batch_size)
        valid = sink.valid if sink.complete_mask else _valid_mask(pair)
    building_map = (read_buildings(Path(buildings), report.grid.crs) if buildings is not None
                    else None)
    return ScenePrediction(name=name or Path(str(after)).stem, grid=report.grid,
                           probs=sink.probs, valid=valid, truth=truth, buildings=building_map)


def predict_scenes(loaded: Any, session: Any, scenes: list[Scene], *, crs: str | None = None,
                   batch_size: int = 4) -> Iterator[ScenePrediction]:
    """:func:`predict_pair` over validation scenes, one at a time (memory: one scene)."""
    for scene in scenes:
        yield predict_pair(loaded, session, scene.before, scene.after, read_truth(scene.truth),
                           name=scene.name, crs=crs, batch_size=batch_size,
                           buildings=scene.buildings)


def load_model(spec: str, device: str = "cpu", threads: int | None = None) -> tuple[Any, Any]:
    """``(LoadedModel, session)`` for a model spec, exactly as detect loads it."""
    from idou.inference.model_source import resolve_model
    from idou.inference.session import make_session

    loaded = resolve_model(spec)
    return loaded, make_session(loaded.data, device=device, threads=threads)


# ------------------------------------------------------------------------------------ evaluation

@dataclass
class Evaluation:
    """Scores of one model or one GeoPackage against truth."""

    source: str
    channels: dict[str, ObjectScores]
    change_types: dict[str, ObjectScores] = field(default_factory=dict)
    pixels: dict[str, PixelScores] | None = None
    parcels: tuple[int, int] | None = None  # (truly changed parcels, found among candidates)
    thresholds: dict[str, float] | None = None
    min_area_m2: float = metrics.DEFAULT_MIN_AREA_M2
    cover: float = metrics.DEFAULT_COVER
    scenes: list[str] = field(default_factory=list)
    truth_outside: int = 0  # truth rows left out: outside the run's processed coverage
    with_map: dict[str, ObjectScores] | None = None  # candidates with the building map
    footprint_threshold: float | None = None
    not_candidates: int = 0  # その他の変化 rows of a GeoPackage, left out of the scores

    @property
    def parcel_recall(self) -> float | None:
        """Share of truly changed parcels among the candidates (None when not measured)."""
        if self.parcels is None:
            return None
        n, found = self.parcels
        return 1.0 if n == 0 else found / n

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-ready numbers and strings."""
        out: dict[str, Any] = {
            "source": self.source, "min_area_m2": self.min_area_m2, "cover": self.cover,
            "objects": {c: s.as_dict() for c, s in self.channels.items()},
            "change_types": {t: {"n_true": s.n_true, "n_found": s.n_found, "recall": s.recall}
                             for t, s in self.change_types.items()},
        }
        if self.scenes:
            out["scenes"] = list(self.scenes)
        out["truth_outside_coverage"] = self.truth_outside
        if self.thresholds is not None:
            out["thresholds"] = dict(self.thresholds)
        if self.pixels is not None:
            out["pixels"] = {c: s.as_dict() for c, s in self.pixels.items()}
        if self.parcels is not None:
            out["parcels"] = {"n_changed": self.parcels[0], "n_found": self.parcels[1],
                              "recall": self.parcel_recall}
        if self.with_map is not None:
            out["objects_with_building_map"] = {c: s.as_dict() for c, s in self.with_map.items()}
            out["threshold_footprint"] = self.footprint_threshold
        if self.not_candidates:
            out["other_changes_left_out"] = self.not_candidates
        return out

    def flat_metrics(self) -> dict[str, float]:
        """``{"object_recall_new": ..., "pixel_f1_demolished": ...}`` for mlflow and cards."""
        flat: dict[str, float] = {}
        for c, s in self.channels.items():
            flat[f"object_recall_{c}"] = s.recall
            flat[f"object_precision_{c}"] = s.precision
        for c, p in (self.pixels or {}).items():
            for key in ("precision", "recall", "f1", "iou"):
                flat[f"pixel_{key}_{c}"] = float(getattr(p, key))
        for t, s in self.change_types.items():
            flat[f"recall_type_{t}"] = s.recall
        if self.parcel_recall is not None:
            flat["parcel_recall"] = self.parcel_recall
        for c, s in (self.with_map or {}).items():
            flat[f"map_object_recall_{c}"] = s.recall
            flat[f"map_object_precision_{c}"] = s.precision
        return flat


def processed_truth(truth: gpd.GeoDataFrame, coverage: gpd.GeoDataFrame | None
                    ) -> tuple[gpd.GeoDataFrame, int]:
    """Truth rows at least half inside the ``processed`` coverage, and how many were left out.

    A change where a run had no data in both flights cannot be found; it is reported apart
    rather than counted as missed. Without a coverage layer all truth counts.
    """
    if coverage is None or not len(coverage):
        return truth, 0
    if "status" in coverage.columns:
        coverage = coverage[coverage["status"].astype(str) == "processed"]
    if coverage.crs is not None and truth.crs is not None and coverage.crs != truth.crs:
        coverage = coverage.to_crs(truth.crs)
    area = shapely.union_all(np.asarray(coverage.geometry.values, dtype=object))
    geoms = np.asarray(truth.geometry.values, dtype=object)
    whole = shapely.area(geoms)
    inside = shapely.area(shapely.intersection(geoms, area)) >= INSIDE_SHARE * whole
    inside |= whole == 0
    return truth[inside], int((~inside).sum())


def _this_run(frame: gpd.GeoDataFrame | None) -> gpd.GeoDataFrame | None:
    """Rows the latest run detected: a ``--force`` re-run keeps rows it no longer finds (for
    their review edits) with 検出状況 = 再実行で未検出; they are not its detections."""
    if frame is None or DETECTION not in frame.columns:
        return frame
    return frame[frame[DETECTION] != NOT_DETECTED_AGAIN]


def evaluate_geopackage(result: str | Path, truth: str | Path, *,
                        min_area_m2: float = metrics.DEFAULT_MIN_AREA_M2,
                        cover: float = metrics.DEFAULT_COVER, parcels_key: str = "地番"
                        ) -> Evaluation:
    """Scores of a finished detection GeoPackage against truth.

    Reads the layers ``changes`` (objects per channel and per true change type),
    ``candidate_parcels`` (parcel recall, when present) and ``coverage`` (truth outside the
    processed area is left out and counted in ``truth_outside``).
    """
    changes = _this_run(read_layer(result, CHANGES_LAYER, what="detection GeoPackage"))
    assert changes is not None
    others = 0
    if "change_type" in changes.columns:  # その他の変化 (building map): not candidates
        other = changes["change_type"].astype(str) == "other"
        changes, others = changes[~other], int(other.sum())
    truth_gdf, outside = processed_truth(read_truth(truth),
                                         read_layer(result, COVERAGE_LAYER, required=False))
    if outside and truth_gdf.empty:
        raise UserInputError(
            f"none of the {outside} truth objects in {Path(truth).name} lie in the area "
            f"{Path(result).name} processed, so nothing can be scored (recall would be 0/0); "
            "check that the truth is for this flight and in the right CRS.")
    evaluation = Evaluation(
        source=str(result),
        channels=metrics.channel_scores(changes, truth_gdf, min_area_m2=min_area_m2, cover=cover),
        change_types=metrics.change_type_recall(changes, truth_gdf, min_area_m2=min_area_m2,
                                                cover=cover),
        min_area_m2=min_area_m2, cover=cover, truth_outside=outside, not_candidates=others)
    candidates = _this_run(read_layer(result, PARCELS_LAYER, required=False))
    if candidates is not None and parcels_key in truth_gdf.columns:
        evaluation.parcels = metrics.parcel_counts(candidates, truth_gdf, parcels_key)
    return evaluation


def score_predictions(predictions: Iterable[ScenePrediction], thresholds: dict[str, float], *,
                      min_area_m2: float = metrics.DEFAULT_MIN_AREA_M2,
                      cover: float = metrics.DEFAULT_COVER, source: str = "",
                      channels: Sequence[str] = CHANNELS,
                      footprint_threshold: float | None = None) -> Evaluation:
    """Scores of probability rasters at fixed thresholds, pooled over scenes.

    Objects are detect's own polygons (:meth:`ScenePrediction.changes`) scored like a finished
    GeoPackage; pixel scores compare the thresholded raster with the rasterised truth. Only
    ``channels`` are scored (e.g. ``("new",)`` where the truth cannot judge demolitions).
    Scenes with a building map are also scored as ``idou detect --buildings`` lists candidates
    (``with_map``, at ``footprint_threshold``; 0.5 when not given).
    """
    objects = {c: ObjectScores(0, 0, 0, 0) for c in channels}
    with_map: dict[str, ObjectScores] | None = None
    fp_threshold = 0.5 if footprint_threshold is None else footprint_threshold
    pixels = {c: PixelScores(0, 0, 0) for c in channels}
    types: dict[str, ObjectScores] = {}
    names = []
    for pred in predictions:
        names.append(pred.name)
        changes = pred.changes(thresholds, min_area_m2)
        for c, s in metrics.channel_scores(changes, pred.truth, min_area_m2=min_area_m2,
                                           cover=cover).items():
            if c in objects:
                objects[c] = objects[c] + s
        if pred.buildings is not None:
            with_map = with_map or {c: ObjectScores(0, 0, 0, 0) for c in channels}
            mapped = pred.changes_with_map(thresholds, fp_threshold, min_area_m2)
            for c, s in metrics.channel_scores(mapped, pred.truth, min_area_m2=min_area_m2,
                                               cover=cover).items():
                if c in with_map:
                    with_map[c] = with_map[c] + s
        for kind, s in metrics.change_type_recall(changes, pred.truth, min_area_m2=min_area_m2,
                                                  cover=cover).items():
            types[kind] = types.get(kind, ObjectScores(0, 0, 0, 0)) + s
        for k, c in enumerate(CHANNELS):
            if c not in pixels:
                continue
            mask = metrics.threshold_mask(pred.probs[k], thresholds[c])
            pixels[c] = pixels[c] + metrics.pixel_scores(mask, pred.truth_mask(c), ~pred.valid)
    return Evaluation(source=source, channels=objects, change_types=dict(sorted(types.items())),
                      pixels=pixels, thresholds={c: thresholds[c] for c in channels},
                      min_area_m2=min_area_m2, cover=cover, scenes=names, with_map=with_map,
                      footprint_threshold=fp_threshold if with_map is not None else None)


def evaluate_model(spec: str, *, scenes: list[Scene] | None = None,
                   pair: tuple[str | Path, str | Path, str | Path] | None = None,
                   thresholds: dict[str, float] | None = None,
                   min_area_m2: float = metrics.DEFAULT_MIN_AREA_M2,
                   cover: float = metrics.DEFAULT_COVER, device: str = "cpu",
                   crs: str | None = None, batch_size: int = 4,
                   buildings: str | Path | None = None) -> Evaluation:
    """Scores of a model on validation ``scenes`` or on one ``(before, after, truth)`` pair.

    Thresholds default to the model's own (its contract), as ``idou detect`` would use them,
    the footprint threshold too. Scenes with a building map (a scene folder's
    ``buildings_*.gpkg``, or ``buildings`` for a pair) are scored with and without it.
    """
    from idou.inference.footprint_evidence import footprint_threshold

    loaded, session = load_model(spec, device=device)
    if thresholds is None:
        thresholds = dict(zip(CHANNELS, loaded.contract.thresholds, strict=True))
    if pair is not None:
        before, after, truth = pair
        predictions: Iterator[ScenePrediction] | list[ScenePrediction] = [predict_pair(
            loaded, session, before, after, read_truth(truth), crs=crs, batch_size=batch_size,
            buildings=buildings)]
    elif scenes:
        predictions = predict_scenes(loaded, session, scenes, crs=crs, batch_size=batch_size)
    else:
        raise ValueError("give scenes or a pair")
    return score_predictions(predictions, thresholds, min_area_m2=min_area_m2, cover=cover,
                             source=spec,
                             footprint_threshold=footprint_threshold(loaded.contract))
