"""Whole-flight batch runs: blocks on Dask, a resumable journal, one final detect stage.

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
import hashlib
import json
import logging
import os
import socket
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import rasterio

from idou.errors import OutputConflict, UserInputError
from idou.geo.files.network import allow_network_sources
from idou.geo.files.output_lock import output_lock
from idou.inference import sheet_changes
from idou.inference.batch_config import FlightConfig
from idou.inference.batch_report import (
    LOG_NAME,
    STATUS_NAME,
    SUMMARY_NAME,
    StatusFile,
    changes_by_class,
    close_run_log,
    merge_sitting,
    setup_run_log,
    sitting,
    write_summary_html,
)
from idou.inference.blocks import Block, plan_blocks, snap_block_size
from idou.inference.contract import OUTPUT_PRESENCE
from idou.inference.engine import blended_channels
from idou.inference.journal import JOURNAL_NAME, Journal
from idou.inference.model_card import card_paths, sha256_file, write_card
from idou.inference.provenance import run_info

log = logging.getLogger("idou.batch")

BLOCKS_DIR = "blocks"
VRT_DIR = "vrt"
MODEL_DIR = "model"
MOSAIC_NAME = "probabilities.vrt"
PRESENCE_NAME = "presence.vrt"
PROBABILITY_BANDS = ((1, "new"), (2, "demolished"))
PRESENCE_BANDS = ((3, "presence_before"), (4, "presence_after"))
GPKG_NAME = "review.gpkg"
LOCK_NAME = ".idou-batch.lock"
SITTINGS_KEY = "sittings"  # journal meta: each start of the run (resumes included), as JSON

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USER = 2
EXIT_FAILED_BLOCKS = 3


# --- what travels to the workers -------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """Everything a worker needs to compute a block: paths and the preflight, no pixel data.

    ``report`` is the driver's :class:`~idou.geo.raster.preflight.PreflightReport` (its sources
    point at files or at VRTs in ``OUT/vrt``), so every worker reads the same grid and bands.
    """

    key: str
    report: Any
    blocks_dir: str
    model_path: str
    model_sha256: str
    threads: int | None
    device: str


@dataclass(frozen=True)
class BlockOutcome:
    """What a worker reports for one block."""

    block_id: str
    worker: str
    seconds: float
    timings: dict[str, float]
    pixels: int


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


# --- worker side -----------------------------------------------------------------------------

_WORKER_CACHE: dict[str, Any] = {}


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


def _worker_state(spec: RunSpec) -> Any:
    """The open pair and ONNX session for ``spec``, kept per process between blocks."""
    state = _WORKER_CACHE.get(spec.key)
    if state is None:
        for old in list(_WORKER_CACHE.values()):
            with contextlib.suppress(Exception):
                old.close()
        _WORKER_CACHE.clear()
        state = _WorkerEngine(spec)
        _WORKER_CACHE[spec.key] = state
    return state


class _WorkerEngine:
    """Opens the flights on the run's grid and the model once per worker process."""

    def __init__(self, spec: RunSpec) -> None:
        from idou.geo.raster.align import AlignedPair
        from idou.inference.model_source import load_model_bytes
        from idou.inference.session import make_session

        data = Path(spec.model_path).read_bytes()
        if hashlib.sha256(data).hexdigest() != spec.model_sha256:
            raise RuntimeError(f"{spec.model_path} changed since the run started (sha256)")
        with warnings.catch_warnings():  # the driver checked the card; this is its copy
            warnings.simplefilter("ignore", UserWarning)
            model = load_model_bytes(data, Path(spec.model_path), card_required=False)
        self.contract = model.contract
        self.pair = AlignedPair(spec.report)
        self.pair.__enter__()
        self.session = make_session(data, device=spec.device,
                                    threads=spec.threads or _auto_threads())

    def predict(self, block: Block, stats: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """uint8 ``(c, h, w)`` probabilities of the block (then building presence before and
        after when the model declares it: ``c`` is 2 or 4), bit-identical to a whole-grid pass,
        and ``(h, w)`` bool where both dates have data."""
        from idou.inference.engine import predict_window_uint8

        probs, valid = predict_window_uint8(self.pair, self.session, self.contract,
                                            block.window, stats=stats, extra_outputs=True)
        return np.asarray(probs), np.asarray(valid, dtype=bool)

    def close(self) -> None:
        self.pair.__exit__(None, None, None)


def _auto_threads() -> int:
    """ONNX Runtime threads when FLIGHT.toml names none: this machine's cores per task slot."""
    from idou.inference.session import available_cores

    slots = 1
    try:
        from distributed import get_worker

        slots = max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):
        pass
    return max(1, available_cores() // slots)


def compute_block(spec: RunSpec, block: Block) -> BlockOutcome:
    """Compute one block's probabilities (and presence) and write ``blocks/<id>.tif``
    atomically.

    Runs on a worker. Raises whatever the engine raises; the driver records it in the journal.
    """
    from idou.inference.engine import EngineStats

    t0 = time.perf_counter()
    engine = _worker_state(spec)
    t1 = time.perf_counter()
    stats = EngineStats()
    data, valid = engine.predict(block, stats)
    channels = blended_channels(engine.contract)
    if data.shape != (channels, block.height, block.width) or data.dtype != np.uint8:
        raise RuntimeError(f"engine returned {data.dtype} {data.shape} for block {block.id}")
    t2 = time.perf_counter()
    write_block(Path(spec.blocks_dir), block, data, engine.pair.grid, valid)
    t3 = time.perf_counter()
    return BlockOutcome(block_id=block.id, worker=_worker_name(), seconds=t3 - t0,
                        timings={"setup": t1 - t0, "read": stats.read_seconds,
                                 "model": stats.model_seconds, "write": t3 - t2,
                                 "tiles_run": stats.tiles_run,
                                 "tiles_skipped": stats.tiles_skipped},
                        pixels=block.pixels)


def block_path(blocks_dir: Path, block: Block) -> Path:
    """Where a block's probabilities live."""
    return blocks_dir / f"{block.id}.tif"


def keeps_presence(contract: Any) -> bool:
    """The model declares building presence, so block files hold it as bands 3-4."""
    return OUTPUT_PRESENCE in contract.extra_outputs


def _block_complete(path: Path, channels: int) -> bool:
    """The block file exists and holds every band this model makes (a block written without
    presence, e.g. by an older idou, is computed again)."""
    if not path.is_file():
        return False
    if channels == 2:
        return True
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(path) as ds:
            return int(ds.count) >= channels
    except RasterioIOError:
        return False


def write_block(blocks_dir: Path, block: Block, data: np.ndarray, grid: Any,
                valid: np.ndarray | None = None) -> Path:
    """Write uint8 ``(2, h, w)`` probabilities (``(4, h, w)`` with presence) as a GeoTIFF:
    temporary file, then rename.

    ``valid`` (where both dates have data) becomes the file's internal mask, from which the
    final stage draws the ``coverage`` layer.
    """
    blocks_dir.mkdir(parents=True, exist_ok=True)
    target = block_path(blocks_dir, block)
    tmp = blocks_dir / f".{block.id}.{uuid.uuid4().hex}.tmp"
    profile = {
        "driver": "GTiff", "dtype": "uint8", "count": data.shape[0], "height": block.height,
        "width": block.width, "crs": grid.crs, "transform": grid.window_transform(block.window),
        "compress": "deflate", "tiled": True, "blockxsize": 256, "blockysize": 256,
    }
    try:
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
            if valid is not None:
                dst.write_mask(valid.astype(np.uint8) * 255)
            for band, name in (*PROBABILITY_BANDS, *PRESENCE_BANDS)[:data.shape[0]]:
                dst.set_band_description(band, name)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


# --- shared by driver and workers ------------------------------------------------------------


def open_pair_report(before: str | list[str], after: str | list[str], before_crs: str | None,
                     after_crs: str | None, aoi: str | None, contract: Any, vrt_dir: Path,
                     estimate_misregistration: bool = True) -> Any:
    """Open both flights (sheets mosaicked through VRTs in ``vrt_dir``) and run preflight."""
    from idou.geo.raster.preflight import preflight
    from idou.geo.raster.sources import open_source

    b = open_source(before, crs=before_crs, workdir=vrt_dir)
    a = open_source(after, crs=after_crs, workdir=vrt_dir)
    return preflight(b, a, contract, aoi=aoi, estimate_misregistration=estimate_misregistration)


# --- driver side -----------------------------------------------------------------------------


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


def _stage_model(model: Any, out_dir: Path) -> Path:
    """Copy the checked model into ``OUT/model/`` (shared storage the workers read)."""
    target = out_dir / MODEL_DIR / f"{model.sha256[:16]}.onnx"
    if not target.is_file() or sha256_file(target) != model.sha256:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(model.data)
        os.replace(tmp, target)
    card = getattr(model, "card", None)
    if card is not None and not card_paths(target)[1].is_file():
        write_card(card, *card_paths(target))  # summary.html links it
    return target


def _resolve_model(name: str) -> Any:
    from idou.inference.model_source import resolve_model

    return resolve_model(name)


@dataclass
class _Prepared:
    config: FlightConfig
    report: Any
    model: Any
    model_sha: str
    model_path: Path
    blocks: list[Block]
    spec: RunSpec
    parcels: Any = None
    buildings: Any = None


def _prepare(config: FlightConfig, out_dir: Path, vrt_dir: Path,
             estimate_misregistration: bool = True) -> _Prepared:
    """Resolve the model, open and align the flights, plan the blocks."""
    _check_outputs_are_not_inputs(config)
    model = _resolve_model(config.model)
    contract = model.contract
    report = open_pair_report(
        config.before.source_spec, config.after.source_spec, config.before.crs,
        config.after.crs, str(config.aoi) if config.aoi else None, contract, vrt_dir,
        estimate_misregistration=estimate_misregistration)
    grid = report.grid
    parcels, buildings = _read_vectors(config.parcels, config.buildings, grid.crs, grid=grid,
                                       say=_log_say, encoding=config.encoding,
                                       chiban_column=config.chiban_column)
    stride = contract.tile_size - contract.tile_overlap
    blocks = plan_blocks(grid.width, grid.height, config.block_size, halo=contract.tile_overlap,
                         stride=stride)
    model_sha = str(model.sha256)
    key = hashlib.sha256(
        f"{config.fingerprint()}|{model_sha}|{grid.width}x{grid.height}|{grid.transform}".encode()
    ).hexdigest()[:16]
    spec = RunSpec(key=key, report=report, blocks_dir=str(out_dir / BLOCKS_DIR),
                   model_path=str(model.path), model_sha256=model_sha, threads=config.threads,
                   device=config.device)
    return _Prepared(config=config, report=report, model=model, model_sha=model_sha,
                     model_path=Path(model.path), blocks=blocks, spec=spec, parcels=parcels,
                     buildings=buildings)


def _read_vectors(parcels: Path | None, buildings: Path | None, crs: Any, **options: Any
                  ) -> tuple[Any, Any]:
    """Parcels and buildings read by `idou detect`'s loaders, before any block runs (so a wrong
    ``chiban_column`` or ``encoding`` stops `--check` and the run alike, not the last step)."""
    from idou.inference.detect import _read_vectors as read

    return read(parcels, buildings, crs, **options)


@dataclass
class CheckReport:
    """What `idou batch --check` found (everything passed when it returns)."""

    grid_width: int
    grid_height: int
    gsd_m: float
    km2: float
    blocks: int
    block_size: int
    sheets_before: int
    sheets_after: int
    model: str
    model_sha256: str
    resumable_blocks_done: int
    notes: list[str] = field(default_factory=list)
    requested_block_size: int | None = None  # FLIGHT.toml's block_size, before snapping
    stride: int | None = None  # the model's tile size minus its overlap

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        out = [
            f"before: {self.sheets_before} sheet(s); after: {self.sheets_after} sheet(s) — "
            "all open",
            f"grid: {self.grid_width} x {self.grid_height} px at {self.gsd_m:g} m "
            f"= {self.km2:.3f} km²",
            f"blocks: {self.blocks} of {self.block_size} px",
            f"model: {self.model} (sha256 {self.model_sha256[:16]}…)",
        ]
        if self.requested_block_size not in (None, self.block_size):
            out.insert(3, f"note: block_size = {self.requested_block_size} became "
                          f"{self.block_size} px, the nearest multiple of the model's tile "
                          f"stride ({self.stride} px: tile size minus overlap), so blocks "
                          "share the tile lattice")
        if self.resumable_blocks_done:
            out.append(f"output folder holds {self.resumable_blocks_done} done block(s); "
                       "a run resumes there")
        out.extend(self.notes)
        return out


def check_flight(config: FlightConfig) -> CheckReport:
    """Validate a flight without running any block and without writing to its output folder.

    Opens every sheet of both dates (mosaics go to a temporary folder), checks CRS, overlap and
    band layout through preflight, loads the model (hash against its card, metadata), reads the
    parcel, building and AOI files with the run's own loaders, and checks a journal already in
    the output folder was made by the same inputs.

    Raises:
        UserInputError: the first problem found, as one sentence.
    """
    with allow_network_sources(config.allow_network):
        return _check_flight(config)


def _check_flight(config: FlightConfig) -> CheckReport:
    with tempfile.TemporaryDirectory(prefix="idou-check-") as tmp:
        prepared = _prepare(config, Path(tmp), Path(tmp) / VRT_DIR,
                            estimate_misregistration=False)
    _check_output_writable(config.output)
    grid = prepared.report.grid
    done = 0
    journal_path = config.output / JOURNAL_NAME
    notes: list[str] = []
    for w in getattr(prepared.report, "warnings", []) or []:
        notes.append(f"preflight: {w}")
    if journal_path.is_file():
        with Journal(journal_path) as journal:
            known = journal.meta().get("fingerprint")
            if known is not None and known != prepared.spec.key:
                raise OutputConflict(
                    f"{config.output} holds a run with other inputs, model or block size; "
                    "choose a new output folder or delete that one.")
            done = journal.counts()["done"]
    pixel_area = abs(grid.transform.a * grid.transform.e - grid.transform.b * grid.transform.d)
    card = getattr(prepared.model, "card", None)
    name = getattr(card, "name", None) or prepared.model.contract.model_name
    version = prepared.model.contract.model_version
    stride = prepared.model.contract.tile_size - prepared.model.contract.tile_overlap
    return CheckReport(
        grid_width=grid.width, grid_height=grid.height, gsd_m=grid.gsd,
        km2=grid.width * grid.height * pixel_area / 1e6, blocks=len(prepared.blocks),
        block_size=snap_block_size(config.block_size, stride),
        sheets_before=len(config.before.sheets), sheets_after=len(config.after.sheets),
        model=f"{name} {version}", model_sha256=prepared.model_sha,
        resumable_blocks_done=done, notes=notes, requested_block_size=config.block_size,
        stride=stride)


def _log_say(level: str, message: str) -> None:
    """Warnings and notes about the parcel and building files, into the batch log."""
    (log.warning if level == "warning" else log.info)("%s", message)


def _check_outputs_are_not_inputs(config: FlightConfig) -> None:
    """No file or folder the batch writes in its output folder is one of its inputs."""
    from idou.geo.files.owned_outputs import same_file
    from idou.geo.vector.vector_files import split_layer

    out = config.output
    written = [out / name for name in (GPKG_NAME, Path(GPKG_NAME).with_suffix(".qgz").name,
                                       JOURNAL_NAME, STATUS_NAME, SUMMARY_NAME, LOG_NAME,
                                       MOSAIC_NAME, PRESENCE_NAME)]
    inputs = [*config.before.sheets, *config.after.sheets]
    inputs += [split_layer(p)[0] for p in (config.parcels, config.buildings, config.aoi) if p]
    if config.model != "default" and not config.model.startswith("models:/"):
        inputs.append(Path(config.model))
    for source in inputs:
        inside = any(Path(source).resolve().is_relative_to((out / d).resolve())
                     for d in (BLOCKS_DIR, VRT_DIR))
        if inside or any(same_file(target, source) for target in written):
            raise OutputConflict(
                f"{source} is an input of {config.source.name} but lies where the batch writes "
                f"its own files in {out}; idou never overwrites its inputs, so move it or "
                "choose another output folder.")


def _check_output_writable(out: Path) -> None:
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise OutputConflict(f"output folder {out} cannot be written here; choose another one.")


def run_batch(config: FlightConfig, workers: int | None = None, scheduler: str | None = None,
              progress: bool = True, on_block: Callable[[dict[str, Any]], None] | None = None
              ) -> BatchResult:
    """Run (or resume) a whole-flight batch.

    Args:
        config: the validated FLIGHT.toml.
        workers: local worker processes (default: the config's ``workers``); ignored with
            ``scheduler``.
        scheduler: address of an existing Dask scheduler (``tcp://HOST:PORT``).
        progress: show a progress bar on the terminal.
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
            _record_sitting(journal, status)


def _sittings(journal: Journal) -> list[dict[str, Any]]:
    """The run's sittings so far (oldest first)."""
    found = json.loads(journal.meta().get(SITTINGS_KEY, "[]"))
    return found if isinstance(found, list) else []


def _record_sitting(journal: Journal, status: dict[str, Any]) -> list[dict[str, Any]]:
    """Save this sitting as ``status`` shows it; returns all sittings."""
    sittings = merge_sitting(_sittings(journal), sitting(status))
    journal.set_meta(SITTINGS_KEY, json.dumps(sittings))
    return sittings


def _run_locked(config: FlightConfig, out_dir: Path, workers: int, scheduler: str | None,
                progress: bool, on_block: Callable[[dict[str, Any]], None] | None
                ) -> BatchResult:
    log.info("batch %s → %s (workers=%s, scheduler=%s)", config.source, out_dir, workers,
             scheduler)
    prepared = _prepare(config, out_dir, out_dir / VRT_DIR)
    _refuse_other_run(out_dir, prepared.spec.key)
    staged = _stage_model(prepared.model, out_dir)
    threads = config.threads
    if threads is None and scheduler is None:  # local: share this machine's cores
        from idou.inference.session import available_cores

        threads = max(1, available_cores() // workers)
    spec = RunSpec(**{**prepared.spec.__dict__, "model_path": str(staged), "threads": threads})
    grid = prepared.report.grid
    blocks_dir = out_dir / BLOCKS_DIR
    blocks_dir.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out_dir)
    pixel_area = abs(grid.transform.a * grid.transform.e - grid.transform.b * grid.transform.d)
    status = StatusFile(out_dir, grid.width * grid.height, pixel_area, static={
        "flight": str(config.source), "output": str(out_dir),
        "grid": {"width": grid.width, "height": grid.height, "crs": str(grid.crs),
                 "gsd_m": grid.gsd},
        "model": {"name": prepared.model.contract.model_name,
                  "version": prepared.model.contract.model_version,
                  "sha256": prepared.model_sha},
        "workers": None if scheduler else workers, "scheduler": scheduler,
    }, input_scale=(grid.gsd / prepared.report.after.grid.gsd) ** 2)
    status.update("planning", {}, 0)
    with Journal(out_dir / JOURNAL_NAME) as journal:
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
            changed = sheet_changes.changed_files(journal.meta().get(sheet_changes.META_KEY),
                                                  sheets)
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
                       if not _block_complete(block_path(blocks_dir, r.block), channels)]
            journal.mark_pending(missing)
            log.info("resuming: %d interrupted and %d missing block(s) back to pending",
                     reset, len(missing))
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
        _record_sitting(journal, status.update("running", journal.counts(),
                                               journal.done_seconds()[0]))
        log.info("%d block(s) planned, %d to compute", len(prepared.blocks), len(todo))
        failed = _compute_blocks(spec, todo, journal, status, workers, scheduler,
                                 config.max_attempts, progress, on_block, config.dashboard)
        counts = journal.counts()
        done_px = journal.done_seconds()[0]
        failures = [(r.block.id, r.error or "") for r in journal.records(["failed"])]
    card = card_paths(staged)[1]
    card_href = f"{MODEL_DIR}/{card.name}" if card.is_file() else None
    if failed:
        data = status.update("failed", counts, done_px)
        with Journal(out_dir / JOURNAL_NAME) as journal:
            sittings = _record_sitting(journal, data)
        write_summary_html(out_dir / SUMMARY_NAME, data, {},
                           _run_info(config, prepared, status, hashes=False), failures,
                           sittings=sittings, card_href=card_href)
        log.error("%d block(s) failed; re-run the same command to retry them", failed)
        return BatchResult(EXIT_FAILED_BLOCKS, out_dir, counts["total"], counts["done"],
                           counts["failed"], None, data)
    gpkg = out_dir / GPKG_NAME
    mosaic = out_dir / MOSAIC_NAME
    with_presence = keeps_presence(prepared.model.contract)
    if todo or not finished_before or not gpkg.is_file() or not mosaic.is_file() or \
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
    data = status.update("done", counts, done_px, gpkg=str(gpkg), mosaic=str(mosaic))
    with Journal(out_dir / JOURNAL_NAME) as journal:
        sittings = _record_sitting(journal, data)
    write_summary_html(out_dir / SUMMARY_NAME, data, changes_by_class(gpkg),
                       _run_info(config, prepared, status, hashes=False),
                       sittings=sittings, card_href=card_href)
    log.info("done: %d block(s), %s", counts["done"], gpkg)
    return BatchResult(EXIT_OK, out_dir, counts["total"], counts["done"], 0, gpkg, data)


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


def _run_info(config: FlightConfig, prepared: _Prepared, status: StatusFile,
              hashes: bool = True) -> dict[str, Any]:
    """Provenance for the GeoPackage's ``run_info`` (as `idou detect` records it) and batch's."""
    report = prepared.report
    info = run_info(prepared.model, report, report.before, report.after, hashes=hashes)
    info.update({
        "warnings": list(report.warnings),
        "batch": {"flight": str(config.source), "blocks": len(prepared.blocks),
                  "block_size": prepared.blocks[0].width if prepared.blocks else 0,
                  "workers": status.static.get("workers"),
                  "scheduler": status.static.get("scheduler"),
                  "started_at": status.last.get("started_at")},
    })
    return info


@contextlib.contextmanager
def _client(workers: int, scheduler: str | None, dashboard: str | None = None
            ) -> Iterator[Any]:
    """A Dask client: the given scheduler, or a local cluster of ``workers`` processes.

    The local cluster listens on 127.0.0.1 only and serves no dashboard unless ``dashboard``
    (an address, from FLIGHT.toml) asks for one: nothing is reachable from the LAN.
    """
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as exc:
            raise UserInputError(
                f"no Dask scheduler answers at {scheduler}; start it or fix --scheduler.") from exc
        try:
            yield client
        finally:
            client.close()
        return
    # One worker runs in-process (threads): no process start-up, dies with the driver.
    # tcp on 127.0.0.1 also for the in-process worker: its default (inproc) leaves the HTTP
    # servers of scheduler and worker on every interface
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=workers > 1,
                           protocol="tcp://", host="127.0.0.1", dashboard_address=dashboard,
                           silence_logs=logging.ERROR)
    try:
        with Client(cluster) as client:
            log.info("local Dask cluster: %d worker(s) on 127.0.0.1, dashboard %s", workers,
                     client.dashboard_link if dashboard else "off")
            yield client
    finally:
        cluster.close()


def _compute_blocks(spec: RunSpec, todo: list[Block], journal: Journal, status: StatusFile,
                    workers: int, scheduler: str | None, max_attempts: int, progress: bool,
                    on_block: Callable[[dict[str, Any]], None] | None,
                    dashboard: str | None = None) -> int:
    """Run ``todo`` on Dask, recording each result; returns how many blocks failed.

    At most two blocks per worker thread are handed out at a time, so the journal's
    ``running`` rows are the blocks actually on the workers. A block that raises is retried
    up to ``max_attempts`` times in this run (a user error, such as a corrupt sheet, is not
    retried); then it is ``failed`` and the others go on.
    """
    if not todo:
        return 0
    from distributed import as_completed

    tries: dict[str, int] = {}
    failed = 0
    bar = _Progress(len(todo), enabled=progress)
    with _client(workers, scheduler, dashboard) as client, bar:
        shared = client.scatter(spec, broadcast=True, hash=False)  # the preflight, sent once
        slots = max(2, 2 * sum(client.nthreads().values()))
        waiting = iter(todo)
        by_key: dict[str, Block] = {}

        def submit(block: Block) -> Any:
            tries[block.id] = tries.get(block.id, 0) + 1
            journal.mark_running(block.id)
            future = client.submit(compute_block, shared, block, pure=False,
                                   key=f"idou-{spec.key}-{block.id}-{tries[block.id]}")
            by_key[future.key] = block
            return future

        queue = as_completed([submit(b) for _, b in zip(range(slots), waiting, strict=False)])
        for future in queue:
            block = by_key.pop(future.key)
            try:
                outcome: BlockOutcome = future.result()
            except Exception as exc:  # noqa: BLE001 - recorded, retried, reported
                message = (str(exc) if isinstance(exc, UserInputError)
                           else f"{type(exc).__name__}: {exc}").splitlines()[0]
                if tries[block.id] < max_attempts and not isinstance(exc, UserInputError):
                    log.warning("block %s failed (%s); retrying", block.id, message)
                    queue.add(submit(block))
                    continue
                log.error("block %s failed after %d attempt(s): %s", block.id,
                          tries[block.id], message)
                journal.mark_failed(block.id, message)
                failed += 1
                bar.advance()
            else:
                journal.mark_done(block.id, outcome.seconds, outcome.worker, outcome.timings)
                status.add_pixels(outcome.pixels)
                data = status.update("running", journal.counts(), journal.done_seconds()[0])
                _record_sitting(journal, data)  # a sitting killed outright still counts
                log.info("block %s done in %.2f s on %s", block.id, outcome.seconds,
                         outcome.worker)
                bar.advance(data)
                if on_block is not None:
                    on_block(data)
            following = next(waiting, None)
            if following is not None:
                queue.add(submit(following))
    return failed


class _Progress:
    """A rich progress bar over blocks (silent when disabled)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.enabled = enabled
        self.total = total
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("blocks"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), transient=False)
            self._progress.start()
            self._task = self._progress.add_task("blocks", total=self.total, rate="")
        return self

    def advance(self, status: dict[str, Any] | None = None) -> None:
        if self._progress is not None:
            rate = f"{status['mpx_per_s']:.2f} Mpx/s" if status else ""
            self._progress.update(self._task, advance=1, rate=rate)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


# --- the end: one mosaic, one detect stage ---------------------------------------------------


def write_block_mosaic(out_dir: Path, blocks: list[Block], grid: Any,
                       bands: tuple[tuple[int, str], ...] = PROBABILITY_BANDS,
                       name: str = MOSAIC_NAME) -> Path:
    """``OUT/probabilities.vrt``: every block file as one 2-band uint8 raster of the grid
    (``bands`` of the block files, e.g. ``PRESENCE_BANDS`` as ``OUT/presence.vrt``)."""
    gt = ", ".join(repr(float(v)) for v in grid.transform.to_gdal())
    lines = [f'<VRTDataset rasterXSize="{grid.width}" rasterYSize="{grid.height}">',
             f"  <SRS>{escape(grid.crs.to_wkt())}</SRS>", f"  <GeoTransform>{gt}</GeoTransform>"]
    for band, (source_band, description) in enumerate(bands, start=1):
        lines.append(f'  <VRTRasterBand dataType="Byte" band="{band}">')
        lines.append(f"    <Description>{description}</Description>")
        for b in blocks:
            rel = f"{BLOCKS_DIR}/{b.id}.tif"
            lines.append(
                f'    <SimpleSource><SourceFilename relativeToVRT="1">{rel}</SourceFilename>'
                f"<SourceBand>{source_band}</SourceBand>"
                f'<SrcRect xOff="0" yOff="0" xSize="{b.width}" ySize="{b.height}"/>'
                f'<DstRect xOff="{b.col_off}" yOff="{b.row_off}" xSize="{b.width}" '
                f'ySize="{b.height}"/></SimpleSource>')
        lines.append("  </VRTRasterBand>")
    lines.append("</VRTDataset>")
    path = out_dir / name
    tmp = out_dir / f".{name}.{uuid.uuid4().hex}.tmp"
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


class MosaicReader:
    """Windowed uint8 ``(2, h, w)`` reads of the block mosaic (the ProbabilityStore interface)."""

    def __init__(self, path: Path) -> None:
        self._ds = rasterio.open(path)
        self.height = self._ds.height
        self.width = self._ds.width

    def read(self, window: Any) -> np.ndarray:
        """uint8 ``(2, h, w)`` probabilities at ``window``."""
        return np.asarray(self._ds.read(window=window))

    def close(self) -> None:
        """Close the mosaic."""
        self._ds.close()

    def __enter__(self) -> MosaicReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def coverage_from_blocks(out_dir: Path, blocks: list[Block], grid: Any) -> Any:
    """The ``coverage`` layer (processed / nodata) from the blocks' masks."""
    from idou.inference.coverage import CoverageSink

    sink = CoverageSink(grid)
    for block in blocks:
        with rasterio.open(block_path(out_dir / BLOCKS_DIR, block)) as ds:
            sink.write(block.window, None, ds.read_masks(1) > 0)  # type: ignore[arg-type]
    return sink.frame()


def finish_from_blocks(prepared: _Prepared, mosaic: Path, gpkg: Path, config: FlightConfig,
                       run_info: dict[str, Any]) -> dict[str, Any]:
    """Polygons, classes, parcel join and GeoPackage from the mosaic, by `idou detect`'s code.

    ``idou.inference.detect.finish_from_probabilities`` is the stage `idou detect` runs after
    its probabilities, so a batch run and a detect run give the same output from the same
    probabilities (and building presence, read from ``OUT/presence.vrt`` beside ``mosaic``
    when the model declares it). Re-running into an existing GeoPackage keeps the staff's
    edits.
    """
    from idou.inference.detect import finish_from_probabilities

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
            say=_log_say, presence=presence)
