"""The stages of a change-detection run, each a typed step: align → predict → vectorise →
classify → write.

`idou detect` (:func:`idou.inference.detect.run_detect`) runs them all on one pair; `idou batch`
computes its probabilities block by block on Dask and then runs the same
:func:`finish_from_probabilities` (vectorise → classify → write) on the block mosaic, so both
give the same GeoPackage from the same probabilities. Stages report progress and messages
through callbacks (:mod:`idou.inference.progress`); none draws anything.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd

from idou.errors import InvalidOption
from idou.inference.contract import OUTPUT_PRESENCE, ModelContract
from idou.inference.footprint_evidence import BuildingEvidence, building_evidence
from idou.inference.progress import LogFn, Progress
from idou.inference.vector_inputs import read_vectors

if TYPE_CHECKING:  # imported where used, so that `idou --help` stays light
    from idou.geo.raster.preflight import PreflightReport
    from idou.geo.raster.sources import RasterSource
    from idou.inference.engine import EngineStats
    from idou.inference.model_source import LoadedModel
    from idou.inference.probability_store import PresenceStore, ProbabilityStore


@dataclass(frozen=True)
class Flights:
    """Both flights opened (raster sources), not yet on one grid."""

    before: RasterSource
    after: RasterSource


@dataclass(frozen=True)
class Prepared:
    """What the predict stage needs: the model, its thresholds, the aligned pair's preflight,
    and the parcels and buildings read in the grid's CRS."""

    model: LoadedModel
    thresholds: tuple[float, float]
    flights: Flights
    report: PreflightReport  # its grid is the run's
    parcels: gpd.GeoDataFrame | None = None
    buildings: gpd.GeoDataFrame | None = None


@dataclass(frozen=True)
class Probabilities:
    """The predict stage's result: blended probabilities of the grid (uint8 ``(2, H, W)``
    readable by window), the ``coverage`` layer, building presence (or None), engine counts."""

    store: ProbabilityStore
    coverage: gpd.GeoDataFrame
    presence: PresenceStore | None  # None when the model declares no presence
    stats: EngineStats
    infer_seconds: float


@dataclass(frozen=True)
class Changes:
    """The classify stage's result: classified changes, their candidate parcels, and what the
    building map added."""

    classified: gpd.GeoDataFrame
    candidates: gpd.GeoDataFrame
    evidence: BuildingEvidence


# --- align -----------------------------------------------------------------------------------


def resolve_thresholds(contract: ModelContract, threshold: float | None = None,
                       threshold_new: float | None = None,
                       threshold_demolished: float | None = None) -> tuple[float, float]:
    """The model's tuned (new, demolished) thresholds, overridden where the user asked."""
    new, dem = contract.thresholds
    if threshold is not None:
        new = dem = threshold
    new = threshold_new if threshold_new is not None else new
    dem = threshold_demolished if threshold_demolished is not None else dem
    for name, value in (("--threshold-new", new), ("--threshold-demolished", dem)):
        if not 0.0 < float(value) < 1.0:
            raise InvalidOption(f"{name} {value} is not a probability; pass a value strictly "
                                "between 0 and 1.")
    return (float(new), float(dem))


def load_model(model: str, say: LogFn) -> Any:
    """Resolve and check the model (card, sha256, contract); its warnings go to ``say``."""
    from idou.inference.model_source import resolve_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = resolve_model(model)
        for w in caught:
            say("warning", str(w.message))
    return loaded


def open_flights(before: Any, after: Any, crs: str | None, workdir: Path) -> Flights:
    """Open both flights (sheets are mosaicked through VRTs in ``workdir``)."""
    from idou.geo.raster.sources import open_source

    return Flights(open_source(before, crs=crs, workdir=workdir),
                   open_source(after, crs=crs, workdir=workdir))


def align(flights: Flights, contract: ModelContract, aoi: str | Path | None, say: LogFn) -> Any:
    """Preflight both flights onto one grid at the model's GSD; its notes and warnings go to
    ``say``. Returns the preflight report (grid, sources, misregistration)."""
    from idou.geo.raster.preflight import preflight

    report = preflight(flights.before, flights.after, contract,
                       aoi=Path(aoi) if aoi is not None else None)
    for note in report.notes:
        say("note", note)
    for warning in report.warnings:
        say("warning", warning)
    return report


# --- predict ---------------------------------------------------------------------------------


def make_session(prepared: Prepared, device: str, threads: int | None, say: LogFn) -> Any:
    """The ONNX Runtime session of the prepared model; its warnings go to ``say``."""
    from idou.inference.session import make_session as session_for

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session = session_for(prepared.model.data, device=device, threads=threads)
        for w in caught:
            say("warning", str(w.message))
    return session


@contextlib.contextmanager
def predict(prepared: Prepared, session: Any, workdir: Path, *, prob_path: Path | None = None,
            block_size: int = 1024, batch_size: int = 4, progress: Progress | None = None,
            written: list[Path] | None = None) -> Iterator[Probabilities]:
    """Blended probabilities of the whole grid into disk stores in ``workdir`` (open while the
    ``with`` lasts), and the probability COG at ``prob_path`` (appended to ``written``).

    ``progress`` hears stage ``infer`` in input pixels (the after flight's resolution).
    """
    from idou.geo.raster.align import AlignedPair
    from idou.inference.coverage import CoverageSink
    from idou.inference.engine import predict_grid
    from idou.inference.probability_store import ProbabilityStore

    grid = prepared.report.grid
    contract = prepared.model.contract
    input_scale = (grid.gsd / prepared.flights.after.grid.gsd) ** 2  # input px per grid px

    def infer_progress(done: int, total: int) -> None:
        if progress:
            progress("infer", done * input_scale, total * input_scale)

    coverage = CoverageSink(grid)
    t_infer = time.perf_counter()
    with ProbabilityStore(workdir / "probabilities.u8", grid.height, grid.width) as store, \
            AlignedPair(prepared.report) as pair, \
            _presence_store(contract, workdir, grid) as presence:
        sinks: list[Any] = [store, coverage]
        if presence is not None:
            sinks.append(presence)
        writer = None
        if prob_path is not None:
            from idou.geo.raster.probability_cog import ProbabilityWriter

            writer = ProbabilityWriter(prob_path, grid)
            sinks.append(writer)
        finished = False
        try:
            stats = predict_grid(pair, session, contract, sinks, block_size=block_size,
                                 batch_size=batch_size, progress=infer_progress)
            infer_seconds = time.perf_counter() - t_infer
            if writer is not None:
                writer.finish()
                finished = True
                if written is not None and prob_path is not None:
                    written.append(prob_path)
        finally:
            if writer is not None and not finished:
                writer.abort()
        yield Probabilities(store, coverage.frame(), presence, stats, infer_seconds)


class _NoPresence:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _presence_store(contract: ModelContract, workdir: Path, grid: Any) -> Any:
    """A disk store for the model's blended building presence, when its contract declares it."""
    from idou.inference.probability_store import PresenceStore

    if OUTPUT_PRESENCE not in contract.extra_outputs:
        return _NoPresence()
    return PresenceStore(workdir / "presence.u8", grid.height, grid.width)


# --- vectorise → classify → write ------------------------------------------------------------


def vectorise(probabilities: Any, grid: Any, thresholds: tuple[float, float], *,
              min_area_m2: float = 8.0, block_size: int = 2048,
              progress: Progress | None = None) -> gpd.GeoDataFrame:
    """Probabilities → change polygons (new, demolished) above ``thresholds``, block by block.

    ``progress`` hears stage ``vectorize`` in blocks.
    """
    from idou.geo.changes import vectorize as vectorize_module

    def vector_progress(done: int, total: int) -> None:
        if progress:
            progress("vectorize", done, total)

    return vectorize_module.vectorize(probabilities, grid, thresholds, min_area_m2=min_area_m2,
                                      block_size=block_size, progress=vector_progress)


def classify(changes: gpd.GeoDataFrame, evidence: BuildingEvidence,
             parcels: gpd.GeoDataFrame | None, buildings: gpd.GeoDataFrame | None, *,
             min_area_m2: float, threshold_demolished: float) -> Changes:
    """Decide per registered building (新築/増築/滅失/建替) and join candidates to parcels."""
    from idou.geo.changes.classify import candidate_changes, classify_changes
    from idou.geo.changes.parcel_join import join_parcels

    classified = classify_changes(changes, buildings, parcels, footprints=evidence.scores,
                                  footprint_threshold=evidence.threshold,
                                  min_area_m2=min_area_m2,
                                  demolished_threshold=threshold_demolished)
    joined = candidate_changes(classified, evidence.keep_unmatched)
    if parcels is not None:
        candidates = join_parcels(joined, parcels)
    else:
        candidates = join_parcels(joined, gpd.GeoDataFrame(
            {"parcel_id": [], "地番": [], "所在": []}, geometry=gpd.GeoSeries([]),
            crs=changes.crs))
    return Changes(classified, candidates, evidence)


def write(output: Path, changes: Changes, buildings: gpd.GeoDataFrame | None,
          coverage: gpd.GeoDataFrame, run_info: dict[str, object],
          orthophotos: tuple[Path, Path], *, force: bool = False, write_project: bool = True
          ) -> dict[str, Any]:
    """Write the review GeoPackage atomically (keeping staff's edits with ``force``).

    Returns ``{"changes_by_type": {class: count}, "candidate_parcels": n}``.
    """
    from idou.geo.review.gpkg_output import write_review_geopackage

    classified = changes.classified
    write_review_geopackage(output, changes=classified, candidate_parcels=changes.candidates,
                            existing_buildings=buildings, coverage=coverage, run_info=run_info,
                            orthophotos=orthophotos, force=force, write_project=write_project,
                            unmapped_buildings=changes.evidence.unmapped)
    counts = classified["change_type"].value_counts().to_dict() if len(classified) else {}
    return {"changes_by_type": {str(k): int(v) for k, v in counts.items()},
            "candidate_parcels": len(changes.candidates)}


def finish_from_probabilities(
        probabilities: Any, coverage: gpd.GeoDataFrame, report: Any, model: Any, output: Path, *,
        parcels: Any = None, buildings: Any = None, run_info: dict[str, Any] | None = None,
        orthophotos: tuple[Path, Path] | None = None, force: bool = False,
        write_project: bool = True, thresholds: tuple[float, float] | None = None,
        min_area_m2: float = 8.0, block_size: int = 2048, progress: Progress | None = None,
        encoding: str | None = None, chiban_column: str | None = None,
        say: LogFn | None = None, presence: Any = None, keep_unmatched: bool = False,
        threshold_footprint: float | None = None) -> dict[str, Any]:
    """Everything after the probabilities: vectorise → classify → write.

    Shared by ``idou detect`` and ``idou batch`` (on its block mosaic), so both give the same
    output from the same probabilities.

    Args:
        probabilities: uint8 ``(2, H, W)`` probabilities of ``report.grid`` (``read(window)``).
        coverage: the ``coverage`` layer (``status`` processed / nodata).
        report: the run's preflight report (grid, sources).
        model: the ``LoadedModel`` (its contract's thresholds are the default).
        output: the GeoPackage, written atomically.
        parcels: parcel file(s) or an already read parcel frame, or None.
        buildings: existing-building file or frame, or None.
        run_info: provenance for the ``run_info`` table (thresholds are added).
        orthophotos: (before, after) for the QGIS project; default the report's sources.
        force: re-run into an existing GeoPackage (staff edits are kept).
        write_project: also write the ``.qgz`` QGIS project.
        thresholds: (new, demolished); default the model's tuned thresholds.
        min_area_m2: smallest change polygon kept.
        block_size: block side for vectorising.
        progress: progress callback (stage 'vectorize').
        encoding: attribute encoding of parcel and building files (see ``DetectJob``).
        chiban_column: the parcel files' 地番 column when it has another name.
        say: where warnings about parcel or building files read here go (level, message).
        presence: uint8 ``(2, H, W)`` building presence (before, after) when the model
            declares it, else None.
        keep_unmatched: change the building map does not support also makes candidates.
        threshold_footprint: footprint score that makes 滅失 (default: the model's).

    Returns:
        ``{"changes_by_type": {class: count}, "candidate_parcels": n}``.
    """
    grid = report.grid
    thresholds = thresholds or resolve_thresholds(model.contract)
    parcel_frame, building_frame = _frames(parcels, buildings, grid, say, encoding,
                                           chiban_column)
    changes = vectorise(probabilities, grid, thresholds, min_area_m2=min_area_m2,
                        block_size=block_size, progress=progress)
    info = {**(run_info or {}), "threshold_new": thresholds[0],
            "threshold_demolished": thresholds[1], "min_area_m2": min_area_m2}
    evidence = building_evidence(probabilities, presence, grid, model.contract, building_frame,
                                 threshold_footprint=threshold_footprint,
                                 min_area_m2=min_area_m2, keep_unmatched=keep_unmatched)
    info.update(evidence.run_info)
    classified = classify(changes, evidence, parcel_frame, building_frame,
                          min_area_m2=min_area_m2, threshold_demolished=thresholds[1])
    if orthophotos is None:
        orthophotos = (Path(report.before.path), Path(report.after.path))
    return write(output, classified, building_frame, coverage, info, orthophotos, force=force,
                 write_project=write_project)


def _frames(parcels: Any, buildings: Any, grid: Any, say: LogFn | None,
            encoding: str | None, chiban_column: str | None
            ) -> tuple[gpd.GeoDataFrame | None, gpd.GeoDataFrame | None]:
    """Parcels and buildings as frames: those given as frames kept, files read now."""
    parcel_frame = parcels if isinstance(parcels, gpd.GeoDataFrame) else None
    building_frame = buildings if isinstance(buildings, gpd.GeoDataFrame) else None
    if parcel_frame is None and parcels is not None or building_frame is None and \
            buildings is not None:
        read_p, read_b = read_vectors(None if parcel_frame is not None else parcels,
                                      None if building_frame is not None else buildings,
                                      grid.crs, grid, say, encoding=encoding,
                                      chiban_column=chiban_column)
        parcel_frame = parcel_frame if parcel_frame is not None else read_p
        building_frame = building_frame if building_frame is not None else read_b
    return parcel_frame, building_frame
