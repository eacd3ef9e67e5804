"""``idou detect``: one flight pair in, a review GeoPackage out.

open both flights → preflight (one grid) → resolve and check the model → blended probabilities
block by block into a disk store (and the optional probability COG) → polygons → classes,
parcels → the GeoPackage. Inputs are checked before the long part starts; the output appears
at its path only when everything succeeded (temporary file, then rename).
"""

from __future__ import annotations

import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import rasterio

from idou.errors import InvalidOption, OutputConflict, UserInputError
from idou.inference.contract import ModelContract
from idou.inference.provenance import run_info

Source = str | Path | Sequence[str | Path]
ProgressFn = Callable[[str, float, float], None]
"""Called as ``progress(stage, done, total)``; stage 'infer' counts input pixels."""
LogFn = Callable[[str, str], None]
"""Called as ``log(level, message)`` with level 'note' or 'warning'."""

GDAL_CACHE_BYTES = 16 * 1024 * 1024
"""GDAL's block cache (default 5 % of RAM): each block is read about once, so keep it small and
the resident memory independent of the flight's size (48 MiB let a 2k pair peak 35 MiB lower
than an 8k one; 16 MiB costs under 3 % more CPU on a 20k pair, measured)."""


@dataclass
class DetectSummary:
    """What a detect run did and found."""

    output: Path
    probabilities: Path | None
    model: str
    model_sha256: str
    thresholds: tuple[float, float]
    grid_shape: tuple[int, int]
    gsd_m: float
    input_megapixels: float
    seconds: float = 0.0
    infer_seconds: float = 0.0
    changes_by_type: dict[str, int] = field(default_factory=dict)
    candidate_parcels: int = 0
    tiles_run: int = 0
    tiles_skipped: int = 0
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def megapixels_per_second(self) -> float:
        """End-to-end throughput in input pixels (the after flight's overlap) per second."""
        return self.input_megapixels / self.seconds if self.seconds > 0 else 0.0


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


def release_freed_memory() -> None:
    """Hand large freed buffers back to the OS at once (glibc's malloc).

    glibc raises its mmap threshold after large frees and then keeps such buffers on its heap,
    so the resident set grows with how much was processed. A fixed 1 MiB threshold keeps the
    peak resident set flat whatever the flight's size. No-op where mallopt is absent.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def _check_target(path: Path, force: bool, what: str) -> None:
    if not path.parent.is_dir():
        raise OutputConflict(f"the folder of {path} does not exist; create it or choose another "
                             f"{what} path.")
    if path.exists() and not force:
        raise OutputConflict(f"{path} already exists; pass --force to re-run into it or choose "
                             f"another {what} path.")


def _input_files(src_before: Any, src_after: Any, parcels: Any, buildings: Any, aoi: Any,
                 model: str) -> list[Path]:
    """Every file this run reads (flights' sheets, vectors, a model file), to never overwrite."""
    files = [Path(f) for src in (src_before, src_after) for f in (*src.files, src.path)]
    named = [] if parcels is None else [parcels] if isinstance(parcels, str | Path) \
        else list(parcels)
    named += [p for p in (buildings, aoi) if p is not None]
    if not model.startswith("models:/") and model != "default":
        named.append(model)
    for item in map(Path, named):
        files.append(item)
        if item.is_dir():
            files.extend(p for p in item.iterdir() if p.is_file())
        elif item.suffix.lower() == ".shp":
            files.extend(item.with_suffix(s) for s in (".dbf", ".shx", ".prj", ".cpg"))
    return files


def _check_outputs(output: Path, prob_path: Path | None, force: bool, write_project: bool,
                   inputs: list[Path]) -> None:
    """Every file this run will write may be written (before any pixel is computed)."""
    from idou.geo.files import owned_outputs as owned

    targets: list[tuple[Path, str, Callable[[Path], bool]]] = [
        (output, "output (-o)", owned.is_review_geopackage)]
    if prob_path is not None:
        targets.append((prob_path, "--prob", owned.idou_geotiff))
    if write_project:
        targets.append((output.with_suffix(".qgz"), "output (-o)", owned.idou_qgis_project))
        targets += [(output.with_name(f"{output.stem}.{which}.vrt"), "output (-o)",
                     owned.idou_vrt) for which in ("before", "after")]
    seen: dict[Path, str] = {}
    for path, what, is_ours in targets:
        resolved = path.resolve()
        if resolved in seen:
            raise OutputConflict(f"{path} would be written twice ({seen[resolved]} and {what}); "
                                 "give each output its own path.")
        seen[resolved] = what
        owned.check_replaceable(path, force=force, what=what, inputs=inputs, is_ours=is_ours)


def detect(before: Source, after: Source, output: str | Path, *,
           parcels: str | Path | Sequence[str | Path] | None = None,
           buildings: str | Path | None = None, aoi: str | Path | None = None,
           model: str = "default", threshold: float | None = None,
           threshold_new: float | None = None, threshold_demolished: float | None = None,
           prob: str | Path | None = None, device: str = "cpu", threads: int | None = None,
           crs: str | None = None, force: bool = False, min_area_m2: float = 8.0,
           block_size: int = 1024, batch_size: int = 4, write_project: bool = True,
           encoding: str | None = None, chiban_column: str | None = None,
           keep_unmatched: bool = False, threshold_footprint: float | None = None,
           progress: ProgressFn | None = None, log: LogFn | None = None) -> DetectSummary:
    """Find new and demolished buildings between two flights and write the review GeoPackage.

    Args:
        before: the earlier flight: a raster file, a folder of sheets, or a list of sheets.
        after: the later flight, likewise; its grid is kept.
        output: the GeoPackage to write.
        parcels: parcel file(s) (GeoPackage, Shapefile, GeoJSON, 地図XML) for candidate parcels.
        buildings: existing buildings (家屋現況図) for extension / demolition classes.
        aoi: a vector file limiting the processed area.
        model: ``default``, a path to an ONNX model, or ``models:/NAME@ALIAS``.
        threshold: one threshold for both channels (overrides the model's).
        threshold_new: threshold of the new channel (overrides ``threshold``).
        threshold_demolished: threshold of the demolished channel (overrides ``threshold``).
        prob: also write the blended probabilities as a 2-band uint8 COG here.
        device: 'cpu' or 'cuda'.
        threads: ONNX Runtime intra-op threads (default: every core).
        crs: the CRS of inputs that record none (TIFF + world file).
        force: re-run into an existing output (review edits are kept by the writer).
        min_area_m2: smallest change polygon kept.
        block_size: side in pixels of the blocks the grid is processed in.
        batch_size: tiles per model call.
        write_project: also write a QGIS project beside the GeoPackage.
        encoding: text encoding of the parcel and building files' attributes (default: read
            from the file, e.g. a Shapefile's .cpg, else CP932 for Shapefiles).
        chiban_column: the parcel files' 地番 column when it has another name.
        keep_unmatched: with ``buildings``, change the building map does not support
            (その他の変化) also makes its parcels candidates.
        threshold_footprint: the footprint demolished score that makes 滅失 (default: the
            model's tuned one, see :func:`footprint_threshold`).
        progress: progress callback (see ``ProgressFn``).
        log: receives notes and warnings as they arise.

    Returns:
        A summary of the run.

    Raises:
        UserInputError: anything about the inputs a user can fix; the output is then untouched.
    """
    from idou.geo.raster.align import AlignedPair
    from idou.geo.raster.preflight import preflight
    from idou.geo.raster.sources import open_source
    from idou.inference.coverage import CoverageSink
    from idou.inference.engine import predict_grid
    from idou.inference.model_source import resolve_model
    from idou.inference.probability_store import ProbabilityStore
    from idou.inference.session import make_session

    t_start = time.perf_counter()
    release_freed_memory()
    output = Path(output)
    prob_path = Path(prob) if prob is not None else None
    messages: list[tuple[str, str]] = []

    def say(level: str, message: str) -> None:
        messages.append((level, message))
        if log:
            log(level, message)

    _check_target(output, force, "output")
    if prob_path is not None:
        _check_target(prob_path, force, "--prob")
    if output.suffix.lower() != ".gpkg":
        raise UserInputError(f"{output} is not a .gpkg path; the output is a GeoPackage, name "
                             "it like changes.gpkg.")

    from idou.geo.files.leftovers import make_work_folder, remove_stale_work_folders
    from idou.geo.files.output_lock import acquire, lock_path, release

    lock = lock_path(output)
    acquire(lock, output)  # one writer per output, held until the output is in place
    try:
        for stale in remove_stale_work_folders(output):
            say("note", f"removed {stale.name}, left by an interrupted run.")
        workdir = make_work_folder(output)
    except BaseException:
        release(lock)
        raise
    prob_existed = prob_path is not None and prob_path.exists()
    prob_written = False
    created: list[Path] = []  # files beside the output this run made (removed on failure)
    env = rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES)
    env.__enter__()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loaded = resolve_model(model)
            for w in caught:
                say("warning", str(w.message))
        contract = loaded.contract
        thresholds = resolve_thresholds(contract, threshold, threshold_new, threshold_demolished)
        src_before = open_source(before, crs=crs, workdir=workdir)
        src_after = open_source(after, crs=crs, workdir=workdir)
        _check_outputs(output, prob_path, force, write_project,
                       _input_files(src_before, src_after, parcels, buildings, aoi, model))
        report = preflight(src_before, src_after, contract,
                           aoi=Path(aoi) if aoi is not None else None)
        for note in report.notes:
            say("note", note)
        for warning in report.warnings:
            say("warning", warning)
        grid = report.grid
        parcel_frame, building_frame = _read_vectors(parcels, buildings, grid.crs, grid, say,
                                                     encoding, chiban_column)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            session = make_session(loaded.data, device=device, threads=threads)
            for w in caught:
                say("warning", str(w.message))

        input_scale = (grid.gsd / src_after.grid.gsd) ** 2  # input pixels per grid pixel
        total_input = grid.width * grid.height * input_scale

        def infer_progress(done: int, total: int) -> None:
            if progress:
                progress("infer", done * input_scale, total * input_scale)

        coverage = CoverageSink(grid)
        t_infer = time.perf_counter()
        store_path = workdir / "probabilities.u8"
        with ProbabilityStore(store_path, grid.height, grid.width) as store, \
                AlignedPair(report) as pair, \
                _presence_store(contract, workdir, grid) as presence:
            sinks: list[Any] = [store, coverage]
            if presence is not None:
                sinks.append(presence)
            writer = None
            if prob_path is not None:
                from idou.geo.raster.probability_cog import ProbabilityWriter

                writer = ProbabilityWriter(prob_path, grid)
                sinks.append(writer)
            try:
                stats = predict_grid(pair, session, contract, sinks, block_size=block_size,
                                     batch_size=batch_size, progress=infer_progress)
                infer_seconds = time.perf_counter() - t_infer
                if writer is not None:
                    writer.finish()
                    prob_written = True
            finally:
                if writer is not None and not prob_written:
                    writer.abort()
            run_info = _run_info(loaded, thresholds, report, src_before, src_after, stats,
                                  [m for level, m in messages if level == "warning"])
            orthophotos = (Path(src_before.path), Path(src_after.path))
            if write_project:
                orthophotos = (_lasting(src_before, "before", output, workdir, created),
                               _lasting(src_after, "after", output, workdir, created))
            result = finish_from_probabilities(
                store, coverage.frame(), report, loaded, output, parcels=parcel_frame,
                buildings=building_frame, run_info=run_info, orthophotos=orthophotos,
                force=force,
                write_project=write_project, thresholds=thresholds, min_area_m2=min_area_m2,
                block_size=block_size, progress=progress, presence=presence,
                keep_unmatched=keep_unmatched, threshold_footprint=threshold_footprint)
        summary = DetectSummary(
            output=output, probabilities=prob_path, model=loaded.spec,
            model_sha256=loaded.sha256, thresholds=thresholds,
            grid_shape=(grid.height, grid.width), gsd_m=grid.gsd,
            input_megapixels=total_input / 1e6, infer_seconds=infer_seconds,
            changes_by_type=result["changes_by_type"],
            candidate_parcels=result["candidate_parcels"], tiles_run=stats.tiles_run,
            tiles_skipped=stats.tiles_skipped,
            warnings=[m for level, m in messages if level == "warning"],
            notes=[m for level, m in messages if level == "note"])
        summary.seconds = time.perf_counter() - t_start
        return summary
    except BaseException:
        if prob_written and prob_path is not None and not prob_existed:
            prob_path.unlink(missing_ok=True)
        for path in created:
            path.unlink(missing_ok=True)
        raise
    finally:
        env.__exit__(None, None, None)
        shutil.rmtree(workdir, ignore_errors=True)
        release(lock)


def finish_from_probabilities(
        probabilities: Any, coverage: gpd.GeoDataFrame, report: Any, model: Any, output: Path, *,
        parcels: Any = None, buildings: Any = None, run_info: dict[str, Any] | None = None,
        orthophotos: tuple[Path, Path] | None = None, force: bool = False,
        write_project: bool = True, thresholds: tuple[float, float] | None = None,
        min_area_m2: float = 8.0, block_size: int = 2048, progress: ProgressFn | None = None,
        encoding: str | None = None, chiban_column: str | None = None,
        say: LogFn | None = None, presence: Any = None, keep_unmatched: bool = False,
        threshold_footprint: float | None = None) -> dict[str, Any]:
    """Everything after the probabilities: polygons, classes, parcels, the GeoPackage.

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
        encoding: attribute encoding of parcel and building files (see ``detect``).
        chiban_column: the parcel files' 地番 column when it has another name.
        say: where warnings about parcel or building files read here go (level, message).
        presence: uint8 ``(2, H, W)`` building presence (before, after) when the model
            declares it, else None.
        keep_unmatched: change the building map does not support also makes candidates.
        threshold_footprint: footprint score that makes 滅失 (default: the model's).

    Returns:
        ``{"changes_by_type": {class: count}, "candidate_parcels": n}``.
    """
    from idou.geo.changes import vectorize as vectorize_module

    grid = report.grid
    thresholds = thresholds or resolve_thresholds(model.contract)
    parcel_frame = parcels if isinstance(parcels, gpd.GeoDataFrame) else None
    building_frame = buildings if isinstance(buildings, gpd.GeoDataFrame) else None
    if parcel_frame is None and parcels is not None or building_frame is None and \
            buildings is not None:
        read_p, read_b = _read_vectors(None if parcel_frame is not None else parcels,
                                       None if building_frame is not None else buildings,
                                       grid.crs, grid, say, encoding=encoding,
                                       chiban_column=chiban_column)
        parcel_frame = parcel_frame if parcel_frame is not None else read_p
        building_frame = building_frame if building_frame is not None else read_b

    def vector_progress(done: int, total: int) -> None:
        if progress:
            progress("vectorize", done, total)

    changes = vectorize_module.vectorize(probabilities, grid, thresholds,
                                         min_area_m2=min_area_m2, block_size=block_size,
                                         progress=vector_progress)
    info = {**(run_info or {}), "threshold_new": thresholds[0],
            "threshold_demolished": thresholds[1], "min_area_m2": min_area_m2}
    evidence = building_evidence(probabilities, presence, grid, model.contract, building_frame,
                                 threshold_footprint=threshold_footprint,
                                 min_area_m2=min_area_m2, keep_unmatched=keep_unmatched)
    info.update(evidence.run_info)
    if orthophotos is None:
        orthophotos = (Path(report.before.path), Path(report.after.path))
    return _write_output(output, changes, parcel_frame, building_frame, coverage, info,
                         orthophotos, force, write_project, evidence)


def _lasting(source: Any, which: str, output: Path, workdir: Path, created: list[Path]
             ) -> Path:
    """The raster a QGIS project can refer to: a mosaic VRT made in ``workdir`` is copied
    beside the output (it names its sheets by absolute path)."""
    path = Path(source.path)
    if workdir not in path.parents:
        return path
    target = output.with_name(f"{output.stem}.{which}.vrt")
    if not target.exists():
        created.append(target)
    shutil.copyfile(path, target)
    return target


def _read_vectors(parcels: Any, buildings: Any, crs: Any, grid: Any = None,
                  say: LogFn | None = None, encoding: str | None = None,
                  chiban_column: str | None = None
                  ) -> tuple[gpd.GeoDataFrame | None, gpd.GeoDataFrame | None]:
    """Read parcels and existing buildings in the grid's CRS (before any inference runs).

    With ``say``, repaired or dropped parcels, and parcels or buildings that all lie outside
    ``grid``, are reported as warnings.
    """
    parcel_frame = building_frame = None
    if parcels is not None:
        from idou.geo.vector.parcels import read_parcels

        paths = [Path(parcels)] if isinstance(parcels, str | Path) else [Path(p) for p in parcels]
        parcel_set = read_parcels(paths if len(paths) > 1 else paths[0], crs, encoding,
                                  chiban_column=chiban_column)
        parcel_frame = parcel_set.frame
        if say is not None:
            _report_parcels(parcel_set, ", ".join(p.name for p in paths), grid, say)
    if buildings is not None:
        from idou.geo.vector.buildings import read_buildings

        building_frame = read_buildings(Path(buildings), crs, encoding)
        if say is not None and grid is not None and len(building_frame) and \
                not building_frame.intersects(grid.footprint()).any():
            say("warning", f"none of the {len(building_frame)} buildings in "
                           f"{Path(buildings).name} overlap the flights, so changes are "
                           "classified as if no building stood there; check the buildings "
                           "file and its CRS.")
    return parcel_frame, building_frame


def _report_parcels(parcel_set: Any, names: str, grid: Any, say: LogFn) -> None:
    """Warn about repaired or dropped parcels and about parcels that miss the flights."""
    if parcel_set.repaired or parcel_set.n_dropped:
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(parcel_set.dropped.items()))
        say("warning", f"{names}: repaired {parcel_set.repaired} invalid parcel geometries and "
                       f"dropped {parcel_set.n_dropped}" + (f" ({reasons})" if reasons else "")
                       + "; check the parcel file if parcels are missing from the output.")
    for note in getattr(parcel_set, "notes", []):
        say("warning", note)
    frame = parcel_set.frame
    if grid is not None and len(frame) and not frame.intersects(grid.footprint()).any():
        say("warning", f"none of the {len(frame)} parcels in {names} overlap the flights, so no "
                       "candidate parcels can be listed; check the parcel file and its CRS.")


def _run_info(loaded: Any, thresholds: tuple[float, float], report: Any, src_before: Any,
              src_after: Any, stats: Any, warns: list[str]) -> dict[str, object]:
    info = run_info(loaded, report, src_before, src_after, thresholds=thresholds)
    info.update(tiles_run=stats.tiles_run, tiles_skipped=stats.tiles_skipped, warnings=warns)
    return info


def _write_output(output: Path, changes: gpd.GeoDataFrame, parcels: gpd.GeoDataFrame | None,
                  buildings: gpd.GeoDataFrame | None, coverage: gpd.GeoDataFrame,
                  run_info: dict[str, object], orthophotos: tuple[Path, Path], force: bool,
                  write_project: bool, evidence: BuildingEvidence | None = None
                  ) -> dict[str, Any]:
    """Classify, join to parcels and write the review GeoPackage (atomically)."""
    from idou.geo.changes.classify import candidate_changes, classify_changes
    from idou.geo.changes.parcel_join import join_parcels
    from idou.geo.review.gpkg_output import write_review_geopackage

    evidence = evidence or BuildingEvidence()
    classified = classify_changes(changes, buildings, parcels, footprints=evidence.scores,
                                  footprint_threshold=evidence.threshold,
                                  min_area_m2=float(str(run_info.get("min_area_m2", 8.0))),
                                  demolished_threshold=float(str(
                                      run_info.get("threshold_demolished", 0.5))))
    joined = candidate_changes(classified, evidence.keep_unmatched)
    if parcels is not None:
        candidates = join_parcels(joined, parcels)
    else:
        candidates = join_parcels(joined, gpd.GeoDataFrame(
            {"parcel_id": [], "地番": [], "所在": []}, geometry=gpd.GeoSeries([]),
            crs=changes.crs))
    write_review_geopackage(output, changes=classified, candidate_parcels=candidates,
                            existing_buildings=buildings, coverage=coverage, run_info=run_info,
                            orthophotos=orthophotos, force=force, write_project=write_project,
                            unmapped_buildings=evidence.unmapped)
    counts = classified["change_type"].value_counts().to_dict() if len(classified) else {}
    return {"changes_by_type": {str(k): int(v) for k, v in counts.items()},
            "candidate_parcels": len(candidates)}


@dataclass
class BuildingEvidence:
    """What the building map adds to a run: footprint scores, its threshold, unmapped buildings.
    """

    scores: Any = None  # idou.geo.changes.building_evidence.FootprintScores, or None without a map
    threshold: float = 0.5
    keep_unmatched: bool = False
    unmapped: gpd.GeoDataFrame | None = None  # None: no layer (no building map given)
    run_info: dict[str, object] = field(default_factory=dict)


def footprint_threshold(contract: ModelContract, override: float | None = None) -> float:
    """The footprint demolished score that makes 滅失: ``override``, else the model's tuned one
    (``extra["building_map"]["threshold_demolished"]``, written by ``idou tune``), else the
    demolished channel's threshold (half the footprint must pass what makes a change polygon).
    """
    value = override
    if value is None:
        value = (contract.extra.get("building_map") or {}).get("threshold_demolished",
                                                               contract.threshold_demolished)
    if not 0.0 < float(value) < 1.0:
        raise InvalidOption(f"--threshold-footprint {value} is not a probability; pass a value "
                            "strictly between 0 and 1.")
    return float(value)


def building_evidence(probabilities: Any, presence: Any, grid: Any, contract: ModelContract,
                      buildings: gpd.GeoDataFrame | None, *,
                      threshold_footprint: float | None = None, min_area_m2: float = 8.0,
                      keep_unmatched: bool = False) -> BuildingEvidence:
    """Score the registered footprints and find buildings the map lacks (with a building map).
    """
    from idou.geo.changes import building_evidence as be

    threshold = footprint_threshold(contract, threshold_footprint)
    if buildings is None:
        return BuildingEvidence(threshold=threshold)
    scores = be.footprint_scores(probabilities, grid, buildings.geometry)
    info: dict[str, object] = {"threshold_footprint": threshold,
                               "keep_unmatched": keep_unmatched,
                               "footprint_inset_m": be.DEFAULT_INSET_M,
                               "tolerance_m": be.DEFAULT_TOLERANCE_M}
    if presence is None:
        from idou.inference.contract import OUTPUT_PRESENCE

        unmapped = be.empty_unmapped(grid.crs)
        info["unmapped_buildings"] = (
            "empty: this run was given no building presence although the model declares it"
            if OUTPUT_PRESENCE in contract.extra_outputs else
            f"empty: the model ({contract.model_name} {contract.model_version}) declares no "
            "building-presence output, so buildings missing from the map cannot be found")
    else:
        unmapped = be.unmapped_buildings(presence, grid, buildings, min_area_m2=min_area_m2)
        info["unmapped_buildings"] = (f"{len(unmapped)} buildings present in both photos on no "
                                      "registered footprint (model output 'presence')")
    return BuildingEvidence(scores=scores, threshold=threshold, keep_unmatched=keep_unmatched,
                            unmapped=unmapped, run_info=info)


class _NoPresence:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _presence_store(contract: ModelContract, workdir: Path, grid: Any) -> Any:
    """A disk store for the model's blended building presence, when its contract declares it."""
    from idou.inference.contract import OUTPUT_PRESENCE
    from idou.inference.probability_store import PresenceStore

    if OUTPUT_PRESENCE not in contract.extra_outputs:
        return _NoPresence()
    return PresenceStore(workdir / "presence.u8", grid.height, grid.width)
