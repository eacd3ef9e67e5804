"""Whole-flight batch runs (the driver): blocks on Dask, a resumable journal, one final stage.

``run_batch(config)`` plans blocks of the aligned grid (:mod:`idou.inference.blocks`), records
them in the SQLite journal of the output folder (:mod:`idou.inference.journal`), skips those
already done, and computes the rest on Dask: a local cluster (``workers`` processes; one worker
runs in-process) or an existing scheduler (``tcp://HOST:PORT``; the workers must see the inputs
and the output folder at the same paths). Each block's probabilities (uint8, channel 0 = new,
1 = demolished) go to ``OUT/blocks/<id>.tif`` atomically (temporary file, then ``os.replace``);
only then is the block marked done. Because the engine computes every lattice tile touching a
block, block probabilities equal a whole-grid pass, and a resumed run equals an uninterrupted
one. At the end the blocks are mosaicked through ``OUT/probabilities.vrt`` and polygons, classes,
the parcel join and the GeoPackage are made once by the same code as ``idou detect``.
A model whose contract declares the ``presence`` output (building presence before, after) gets
it blended like the probabilities and kept as bands 3-4 of the same block files, so it is
resumed and recomputed with them; the final stage reads it through ``OUT/presence.vrt`` for
the ``unmapped_buildings`` layer.

The driver is this module; its parts live beside it: :mod:`~idou.inference.batch_prepare`
(model, preflight, blocks), :mod:`~idou.inference.batch_worker` (what runs on a worker),
:mod:`~idou.inference.batch_dask` (scheduling and retries), :mod:`~idou.inference.block_mosaic`
(block files, the mosaic), :mod:`~idou.inference.batch_check` (``--check``),
:mod:`~idou.inference.journal`, :mod:`~idou.inference.batch_sittings` and
:mod:`~idou.inference.batch_report` (status, log, summary).

Layout of the output folder::

    OUT/journal.sqlite    one row per block (state, attempts, worker, timings, error)
    OUT/status.json       progress for an operator or a monitor, rewritten after each block
    OUT/idou-batch.log    the run's log
    OUT/blocks/*.tif      per-block probabilities (2 x uint8, georeferenced; 4 with presence)
    OUT/probabilities.vrt the blocks as one raster (for QGIS and the final stage)
    OUT/presence.vrt      the blocks' building presence (before, after), with such a model
    OUT/review.gpkg       the review GeoPackage (as `idou detect` writes it)
    OUT/summary.html      blocks, km², Mpx/s, changes by class, run_info
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from idou.errors import OutputConflict, UserInputError
from idou.geo.files.network import allow_network_sources
from idou.geo.files.output_lock import output_lock
from idou.inference import sheet_changes
from idou.inference.batch_config import FlightConfig
from idou.inference.batch_dask import compute_blocks
from idou.inference.batch_prepare import (
    GPKG_NAME,
    MODEL_DIR,
    VRT_DIR,
    PreparedFlight,
    log_say,
    prepare_flight,
    stage_model,
)
from idou.inference.batch_report import (
    STATUS_NAME,
    SUMMARY_NAME,
    StatusFile,
    changes_by_class,
    close_run_log,
    setup_run_log,
    write_summary_html,
)
from idou.inference.batch_sittings import record_sitting
from idou.inference.batch_worker import RunSpec
from idou.inference.block_mosaic import (
    BLOCKS_DIR,
    MOSAIC_NAME,
    PRESENCE_BANDS,
    PRESENCE_NAME,
    MosaicReader,
    block_complete,
    block_path,
    coverage_from_blocks,
    keeps_presence,
    write_block_mosaic,
)
from idou.inference.blocks import Block
from idou.inference.engine import blended_channels
from idou.inference.journal import JOURNAL_NAME, Journal
from idou.inference.model_card import card_paths
from idou.inference.progress import Progress
from idou.inference.provenance import run_info

log = logging.getLogger("idou.batch")

LOCK_NAME = ".idou-batch.lock"

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USER = 2
EXIT_FAILED_BLOCKS = 3


@dataclass
class BatchResult:
    """The end of a run."""

    exit_code: int
    out_dir: Path
    blocks_total: int
    blocks_done: int
    blocks_failed: int
    gpkg: Path | None
    status: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def _run_lock(out_dir: Path) -> Iterator[None]:
    """One driver per output folder: a second `idou batch` on it is a user error."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fh = open(out_dir / LOCK_NAME, "a+")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise OutputConflict(
                f"another idou batch is running on {out_dir}; wait for it or stop it first."
            ) from exc
        yield
    finally:
        fh.close()


def run_batch(config: FlightConfig, workers: int | None = None, scheduler: str | None = None,
              progress: Progress | None = None,
              on_block: Callable[[dict[str, Any]], None] | None = None) -> BatchResult:
    """Run (or resume) a whole-flight batch.

    Args:
        config: the validated FLIGHT.toml.
        workers: local worker processes (default: the config's ``workers``); ignored with
            ``scheduler``.
        scheduler: address of an existing Dask scheduler (``tcp://HOST:PORT``).
        progress: told of each finished block (the CLI draws it as a bar); None: silent.
        on_block: called with the status after each finished block (tests, monitors).

    Returns:
        The run's result; ``exit_code`` is 0 (all done), or 3 (some blocks failed after their
        retries; re-run to retry them, the others are kept).

    Raises:
        UserInputError: a problem with the inputs, the model or the output folder.
    """
    out_dir = config.output
    with _run_lock(out_dir), output_lock(out_dir / GPKG_NAME), \
            allow_network_sources(config.allow_network):
        handler = setup_run_log(out_dir)
        try:
            return _run_locked(config, out_dir, workers or config.workers, scheduler, progress,
                               on_block)
        except UserInputError as exc:
            log.error("stopped: %s", exc)
            if (out_dir / STATUS_NAME).is_file():  # a run that stopped part-way says so
                with contextlib.suppress(Exception):
                    _mark_status_stopped(out_dir, "error", str(exc))
            raise
        except BaseException as exc:
            log.exception("stopped: %s", type(exc).__name__)
            with contextlib.suppress(Exception):
                _mark_status_stopped(out_dir, "interrupted" if isinstance(
                    exc, KeyboardInterrupt) else "error", repr(exc))
            raise
        finally:
            close_run_log(handler)


def _mark_status_stopped(out_dir: Path, state: str, reason: str) -> None:
    from idou.inference.batch_report import read_status, write_json_atomic

    status = read_status(out_dir)
    status.update(state=state, reason=reason[:500],
                  updated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    write_json_atomic(out_dir / STATUS_NAME, status)
    if status.get("started_at") and (out_dir / JOURNAL_NAME).is_file():
        with Journal(out_dir / JOURNAL_NAME) as journal:
            record_sitting(journal, status)


def _run_locked(config: FlightConfig, out_dir: Path, workers: int, scheduler: str | None,
                progress: Progress | None, on_block: Callable[[dict[str, Any]], None] | None
                ) -> BatchResult:
    """Prepare, plan against the journal, compute what is left, then finish the output."""
    log.info("batch %s → %s (workers=%s, scheduler=%s)", config.source, out_dir, workers,
             scheduler)
    prepared = prepare_flight(config, out_dir, out_dir / VRT_DIR)
    _refuse_other_run(out_dir, prepared.spec.key)
    staged = stage_model(prepared.model, out_dir)
    spec = _worker_spec(prepared, staged, workers, scheduler)
    (out_dir / BLOCKS_DIR).mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out_dir)
    status = _status_file(config, out_dir, prepared, workers, scheduler)
    status.update("planning", {}, 0)
    with Journal(out_dir / JOURNAL_NAME) as journal:
        todo, finished_before = _plan(journal, prepared, spec, out_dir)
        record_sitting(journal, status.update("running", journal.counts(),
                                              journal.done_seconds()[0]))
        log.info("%d block(s) planned, %d to compute", len(prepared.blocks), len(todo))
        failed = compute_blocks(spec, todo, journal, status, workers, scheduler,
                                config.max_attempts, progress, on_block, config.dashboard)
        counts = journal.counts()
        done_px = journal.done_seconds()[0]
        failures = [(r.block.id, r.error or "") for r in journal.records(["failed"])]
    card = card_paths(staged)[1]
    card_href = f"{MODEL_DIR}/{card.name}" if card.is_file() else None
    if failed:
        data = status.update("failed", counts, done_px)
        with Journal(out_dir / JOURNAL_NAME) as journal:
            sittings = record_sitting(journal, data)
        write_summary_html(out_dir / SUMMARY_NAME, data, {},
                           _run_info(config, prepared, status, hashes=False), failures,
                           sittings=sittings, card_href=card_href)
        log.error("%d block(s) failed; re-run the same command to retry them", failed)
        return BatchResult(EXIT_FAILED_BLOCKS, out_dir, counts["total"], counts["done"],
                           counts["failed"], None, data)
    gpkg, mosaic = _finish_output(config, prepared, status, counts, done_px,
                                  bool(todo) or not finished_before)
    data = status.update("done", counts, done_px, gpkg=str(gpkg), mosaic=str(mosaic))
    with Journal(out_dir / JOURNAL_NAME) as journal:
        sittings = record_sitting(journal, data)
    write_summary_html(out_dir / SUMMARY_NAME, data, changes_by_class(gpkg),
                       _run_info(config, prepared, status, hashes=False),
                       sittings=sittings, card_href=card_href)
    log.info("done: %d block(s), %s", counts["done"], gpkg)
    return BatchResult(EXIT_OK, out_dir, counts["total"], counts["done"], 0, gpkg, data)


def _worker_spec(prepared: PreparedFlight, staged: Path, workers: int, scheduler: str | None
                 ) -> RunSpec:
    """The spec the workers get: the staged model copy, and threads shared out locally."""
    threads = prepared.config.threads
    if threads is None and scheduler is None:  # local: share this machine's cores
        from idou.inference.session import available_cores

        threads = max(1, available_cores() // workers)
    return RunSpec(**{**prepared.spec.__dict__, "model_path": str(staged), "threads": threads})


def _status_file(config: FlightConfig, out_dir: Path, prepared: PreparedFlight, workers: int,
                 scheduler: str | None) -> StatusFile:
    """``OUT/status.json`` with what stays the same for the whole run."""
    grid = prepared.report.grid
    pixel_area = abs(grid.transform.a * grid.transform.e - grid.transform.b * grid.transform.d)
    return StatusFile(out_dir, grid.width * grid.height, pixel_area, static={
        "flight": str(config.source), "output": str(out_dir),
        "grid": {"width": grid.width, "height": grid.height, "crs": str(grid.crs),
                 "gsd_m": grid.gsd},
        "model": {"name": prepared.model.contract.model_name,
                  "version": prepared.model.contract.model_version,
                  "sha256": prepared.model_sha},
        "workers": None if scheduler else workers, "scheduler": scheduler,
    }, input_scale=(grid.gsd / prepared.report.after.grid.gsd) ** 2)


def _plan(journal: Journal, prepared: PreparedFlight, spec: RunSpec, out_dir: Path
          ) -> tuple[list[Block], bool]:
    """Record the blocks in the journal, send back to pending what must be computed again;
    returns the blocks to compute and whether the GeoPackage from before still stands."""
    config, grid = prepared.config, prepared.report.grid
    fresh = journal.initialise(prepared.blocks, spec.key, {
        "grid": f"{grid.width}x{grid.height}", "crs": str(grid.crs),
        "model_sha256": prepared.model_sha, "flight": str(config.source)})
    sheets = sheet_changes.fingerprint_sources((prepared.report.before,
                                                prepared.report.after))
    sheets.update(sheet_changes.fingerprint_paths([config.aoi]))  # the AOI masks blocks
    vectors = sheet_changes.fingerprint_paths([config.parcels, config.buildings])
    vectors_changed: list[str] | None = []
    if not fresh:
        vectors_changed = sheet_changes.changed_files(
            journal.meta().get(sheet_changes.VECTORS_KEY), vectors)
        _requeue(journal, prepared, sheets, out_dir / BLOCKS_DIR)
    journal.set_meta(sheet_changes.META_KEY, sheet_changes.dumps(sheets))
    journal.set_meta(sheet_changes.VECTORS_KEY, sheet_changes.dumps(vectors))
    todo = [r.block for r in journal.records(["pending", "failed"])]
    finished_before = "finished_at" in journal.meta()
    if finished_before and vectors_changed != []:
        log.warning("the GeoPackage is written again: %s changed since it was made",
                    ", ".join(Path(p).name for p in vectors_changed or [])
                    or "the journal recorded no parcel or building fingerprints")
    if (todo or vectors_changed != []) and finished_before:
        journal.delete_meta("finished_at")
        finished_before = False
    return todo, finished_before


def _requeue(journal: Journal, prepared: PreparedFlight, sheets: dict[str, dict[str, object]],
             blocks_dir: Path) -> None:
    """On resuming: blocks over changed sheets, interrupted blocks and blocks whose file is
    missing or incomplete go back to pending."""
    grid = prepared.report.grid
    changed = sheet_changes.changed_files(journal.meta().get(sheet_changes.META_KEY), sheets)
    stale = sheet_changes.stale_blocks(
        [r.block for r in journal.records(["done", "failed"])], grid, changed,
        (prepared.report.before, prepared.report.after))
    if stale:
        journal.mark_pending(stale)
        log.warning("%d block(s) to compute again: %s changed since they were made",
                    len(stale), ", ".join(Path(p).name for p in changed or [])
                    or "the journal recorded no sheet fingerprints")
    reset = journal.reset_interrupted()
    channels = blended_channels(prepared.model.contract)
    missing = [r.block.id for r in journal.records(["done"])
               if not block_complete(block_path(blocks_dir, r.block), channels)]
    journal.mark_pending(missing)
    log.info("resuming: %d interrupted and %d missing block(s) back to pending",
             reset, len(missing))


def _finish_output(config: FlightConfig, prepared: PreparedFlight, status: StatusFile,
                   counts: dict[str, int], done_px: int, changed: bool) -> tuple[Path, Path]:
    """Mosaic the blocks and write the GeoPackage, unless a finished run left them as they
    would be made again; returns their paths."""
    out_dir, grid = config.output, prepared.report.grid
    gpkg = out_dir / GPKG_NAME
    mosaic = out_dir / MOSAIC_NAME
    with_presence = keeps_presence(prepared.model.contract)
    if changed or not gpkg.is_file() or not mosaic.is_file() or \
            with_presence and not (out_dir / PRESENCE_NAME).is_file():
        status.update("finishing", counts, done_px)
        mosaic = write_block_mosaic(out_dir, prepared.blocks, grid)
        if with_presence:
            write_block_mosaic(out_dir, prepared.blocks, grid, PRESENCE_BANDS, PRESENCE_NAME)
        finish_from_blocks(prepared, mosaic, gpkg, config, _run_info(config, prepared, status))
        with Journal(out_dir / JOURNAL_NAME) as journal:
            journal.set_meta("finished_at", f"{time.time():.3f}")
    else:
        log.info("nothing to do: every block and %s were already made", gpkg.name)
    return gpkg, mosaic


def _refuse_other_run(out_dir: Path, key: str) -> None:
    """A journal of other inputs, model or block size: refuse before writing anything."""
    path = out_dir / JOURNAL_NAME
    if path.is_file():
        with Journal(path) as journal:
            known = journal.meta().get("fingerprint")
        if known is not None and known != key:
            raise OutputConflict(
                f"{out_dir} holds a run with other inputs, model or block size; choose a new "
                "output folder or delete that one.")


def _remove_leftovers(out_dir: Path) -> None:
    """Temporary files of a run that died (we hold the folder's lock: nobody else writes)."""
    for folder in (out_dir, out_dir / BLOCKS_DIR, out_dir / MODEL_DIR):
        for pattern in (".*.tmp", ".*.tmp.gpkg", ".*.tmp.gpkg-*"):
            for stale in folder.glob(pattern):
                log.info("removing %s left by an interrupted run", stale.name)
                stale.unlink(missing_ok=True)


def _run_info(config: FlightConfig, prepared: PreparedFlight, status: StatusFile,
              hashes: bool = True) -> dict[str, Any]:
    """Provenance for the GeoPackage's ``run_info``: `idou detect`'s builder plus the batch's."""
    report = prepared.report
    info = run_info(prepared.model, report, report.before, report.after, hashes=hashes,
                    warnings=list(report.warnings))
    info["batch"] = {"flight": str(config.source), "blocks": len(prepared.blocks),
                     "block_size": prepared.blocks[0].width if prepared.blocks else 0,
                     "workers": status.static.get("workers"),
                     "scheduler": status.static.get("scheduler"),
                     "started_at": status.last.get("started_at")}
    return info


def finish_from_blocks(prepared: PreparedFlight, mosaic: Path, gpkg: Path, config: FlightConfig,
                       run_info: dict[str, Any]) -> dict[str, Any]:
    """Polygons, classes, parcel join and GeoPackage from the mosaic, by `idou detect`'s code.

    :func:`idou.inference.pipeline.finish_from_probabilities` (vectorise → classify → write) is
    what `idou detect` runs after its probabilities, so a batch run and a detect run give the
    same output from the same probabilities (and building presence, read from
    ``OUT/presence.vrt`` beside ``mosaic`` when the model declares it). Re-running into an
    existing GeoPackage keeps the staff's edits.
    """
    from idou.inference.pipeline import finish_from_probabilities

    coverage = coverage_from_blocks(config.output, prepared.blocks, prepared.report.grid)
    presence_path = mosaic.with_name(PRESENCE_NAME)
    with_presence = keeps_presence(prepared.model.contract)
    with MosaicReader(mosaic) as probs, contextlib.ExitStack() as stack:
        presence = stack.enter_context(MosaicReader(presence_path)) if with_presence else None
        return finish_from_probabilities(
            probs, coverage, prepared.report, prepared.model, gpkg,
            parcels=config.parcels if prepared.parcels is None else prepared.parcels,
            buildings=config.buildings if prepared.buildings is None else prepared.buildings,
            run_info=run_info, force=gpkg.exists(),
            encoding=config.encoding, chiban_column=config.chiban_column,
            say=log_say, presence=presence)
