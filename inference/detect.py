"""``idou detect``: one flight pair in, a review GeoPackage out.

A :class:`DetectJob` says what to read, which model and thresholds, and what to write;
:func:`run_detect` runs the stages of :mod:`idou.inference.pipeline` on it: load the model →
open the flights → align (preflight, one grid) → predict (blended probabilities block by block
into a disk store, and the optional probability COG) → vectorise → classify (buildings,
parcels) → write the GeoPackage. Inputs are checked before the long part starts; the output
appears at its path only when everything succeeded (temporary file, then rename).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rasterio

from idou.errors import OutputConflict, UserInputError
from idou.inference import pipeline
from idou.inference.progress import LogFn, Progress
from idou.inference.provenance import run_info
from idou.inference.vector_inputs import read_vectors

Source = str | Path | Sequence[str | Path]

GDAL_CACHE_BYTES = 16 * 1024 * 1024
"""GDAL's block cache (default 5 % of RAM): each block is read about once, so keep it small and
the resident memory independent of the flight's size (48 MiB let a 2k pair peak 35 MiB lower
than an 8k one; 16 MiB costs under 3 % more CPU on a 20k pair, measured)."""


@dataclass(frozen=True)
class DetectJob:
    """One `idou detect` run: the flights, the model and thresholds, the files to join, the
    output and its options.

    Attributes:
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
        threshold_footprint: the footprint demolished score that makes 滅失 (default: the
            model's tuned one, see :func:`~idou.inference.footprint_evidence.footprint_threshold`).
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
    """

    before: Source
    after: Source
    output: Path
    parcels: str | Path | Sequence[str | Path] | None = None
    buildings: str | Path | None = None
    aoi: str | Path | None = None
    model: str = "default"
    threshold: float | None = None
    threshold_new: float | None = None
    threshold_demolished: float | None = None
    threshold_footprint: float | None = None
    prob: Path | None = None
    device: str = "cpu"
    threads: int | None = None
    crs: str | None = None
    force: bool = False
    min_area_m2: float = 8.0
    block_size: int = 1024
    batch_size: int = 4
    write_project: bool = True
    encoding: str | None = None
    chiban_column: str | None = None
    keep_unmatched: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "output", Path(self.output))
        if self.prob is not None:
            object.__setattr__(self, "prob", Path(self.prob))


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


def run_detect(job: DetectJob, progress: Progress | None = None, log: LogFn | None = None
               ) -> DetectSummary:
    """Find new and demolished buildings between two flights and write the review GeoPackage.

    Args:
        job: what to read, with which model and thresholds, and what to write.
        progress: told how far each stage has come (``infer``, ``vectorize``).
        log: receives notes and warnings as they arise.

    Returns:
        A summary of the run.

    Raises:
        UserInputError: anything about the inputs a user can fix; the output is then untouched.
    """
    t_start = time.perf_counter()
    release_freed_memory()
    messages: list[tuple[str, str]] = []

    def say(level: str, message: str) -> None:
        messages.append((level, message))
        if log:
            log(level, message)

    _check_paths(job)
    with _work_folder(job.output, say) as workdir, \
            rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
        prob_existed = job.prob is not None and job.prob.exists()
        created: list[Path] = []  # files beside the output this run made (removed on failure)
        try:
            prepared = _prepare(job, workdir, say)
            session = pipeline.make_session(prepared, job.device, job.threads, say)
            with pipeline.predict(prepared, session, workdir, prob_path=job.prob,
                                  block_size=job.block_size, batch_size=job.batch_size,
                                  progress=progress,
                                  written=None if prob_existed else created) as probs:
                result = _finish(job, prepared, probs, workdir, created, messages, progress)
            summary = _summary(job, prepared, probs, result, messages)
            summary.seconds = time.perf_counter() - t_start
            return summary
        except BaseException:
            for path in created:
                path.unlink(missing_ok=True)
            raise


def _check_paths(job: DetectJob) -> None:
    """The output (and --prob) may be written there and is named like a GeoPackage."""
    _check_target(job.output, job.force, "output")
    if job.prob is not None:
        _check_target(job.prob, job.force, "--prob")
    if job.output.suffix.lower() != ".gpkg":
        raise UserInputError(f"{job.output} is not a .gpkg path; the output is a GeoPackage, "
                             "name it like changes.gpkg.")


@contextmanager
def _work_folder(output: Path, say: LogFn) -> Iterator[Path]:
    """Hold the output's lock and a hidden work folder beside it for the whole run."""
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
    try:
        yield workdir
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        release(lock)


def _prepare(job: DetectJob, workdir: Path, say: LogFn) -> pipeline.Prepared:
    """Load the model, open and align the flights, read parcels and buildings; every output
    path is checked once the inputs are known (before any pixel is computed)."""
    loaded = pipeline.load_model(job.model, say)
    thresholds = pipeline.resolve_thresholds(loaded.contract, job.threshold, job.threshold_new,
                                             job.threshold_demolished)
    flights = pipeline.open_flights(job.before, job.after, job.crs, workdir)
    _check_outputs(job.output, job.prob, job.force, job.write_project,
                   _input_files(flights.before, flights.after, job.parcels, job.buildings,
                                job.aoi, job.model))
    report = pipeline.align(flights, loaded.contract, job.aoi, say)
    parcels, buildings = read_vectors(job.parcels, job.buildings, report.grid.crs, report.grid,
                                      say, job.encoding, job.chiban_column)
    return pipeline.Prepared(loaded, thresholds, flights, report, parcels, buildings)


def _finish(job: DetectJob, prepared: pipeline.Prepared, probs: pipeline.Probabilities,
            workdir: Path, created: list[Path], messages: list[tuple[str, str]],
            progress: Progress | None) -> dict[str, Any]:
    """Record the run's provenance, then vectorise → classify → write."""
    flights = prepared.flights
    info = run_info(prepared.model, prepared.report, flights.before, flights.after,
                    thresholds=prepared.thresholds, tiles=probs.stats,
                    warnings=[m for level, m in messages if level == "warning"])
    orthophotos = (Path(flights.before.path), Path(flights.after.path))
    if job.write_project:
        orthophotos = (_lasting(flights.before, "before", job.output, workdir, created),
                       _lasting(flights.after, "after", job.output, workdir, created))
    return pipeline.finish_from_probabilities(
        probs.store, probs.coverage, prepared.report, prepared.model, job.output,
        parcels=prepared.parcels, buildings=prepared.buildings, run_info=info,
        orthophotos=orthophotos, force=job.force, write_project=job.write_project,
        thresholds=prepared.thresholds, min_area_m2=job.min_area_m2,
        block_size=job.block_size, progress=progress, presence=probs.presence,
        keep_unmatched=job.keep_unmatched, threshold_footprint=job.threshold_footprint)


def _summary(job: DetectJob, prepared: pipeline.Prepared, probs: pipeline.Probabilities,
             result: dict[str, Any], messages: list[tuple[str, str]]) -> DetectSummary:
    grid = prepared.report.grid
    input_scale = (grid.gsd / prepared.flights.after.grid.gsd) ** 2  # input px per grid px
    return DetectSummary(
        output=job.output, probabilities=job.prob, model=prepared.model.spec,
        model_sha256=prepared.model.sha256, thresholds=prepared.thresholds,
        grid_shape=(grid.height, grid.width), gsd_m=grid.gsd,
        input_megapixels=grid.width * grid.height * input_scale / 1e6,
        infer_seconds=probs.infer_seconds, changes_by_type=result["changes_by_type"],
        candidate_parcels=result["candidate_parcels"], tiles_run=probs.stats.tiles_run,
        tiles_skipped=probs.stats.tiles_skipped,
        warnings=[m for level, m in messages if level == "warning"],
        notes=[m for level, m in messages if level == "note"])


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
