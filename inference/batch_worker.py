"""The worker side of a batch run: what travels to a Dask worker and what it computes there.

A :class:`RunSpec` (paths and the preflight, no pixel data) is sent once; each worker process
opens the flights on the run's grid and the model once (:class:`_WorkerEngine`, kept between
blocks) and :func:`compute_block` writes one block's file (:mod:`idou.inference.block_mosaic`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from idou.inference.block_mosaic import write_block
from idou.inference.blocks import Block
from idou.inference.engine import blended_channels


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

