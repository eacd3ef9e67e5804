"""The inference engine: tiles of an aligned pair through ONNX Runtime, blended, block by block.

``predict_window`` computes the blended probabilities of any window of the grid by running every
lattice tile that touches it; ``predict_grid`` walks the whole grid in blocks of lattice tiles,
runs each tile exactly once, carries the partial sums of the overlap bands to the neighbouring
blocks, and writes each block's finished pixels to the output (a disk store, a COG writer).
Blending sums are fixed-point integers, so both give bit-identical probabilities whichever
windows or blocks were used. Reading and normalising the next batch runs in a background thread
while ONNX Runtime computes the current one.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from rasterio.windows import Window

from idou.inference.blending import (
    BlendWeights,
    accumulate,
    sums_to_uint8,
    to_probabilities,
)
from idou.inference.contract import (
    INPUT_AFTER,
    INPUT_BEFORE,
    OUTPUT_PROBABILITIES,
    ModelContract,
)
from idou.inference.tiling import Tile, TilePlan

DEFAULT_BATCH_SIZE = 4
DEFAULT_BLOCK_SIZE = 2048
ProgressCallback = Callable[[int, int], None]


class PairReader(Protocol):
    """What the engine needs of an aligned pair (``idou.geo.raster.align.AlignedPair``)."""

    grid: Any

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """before, after ``(C, h, w)`` uint8 and valid ``(h, w)`` bool; outside the grid: 0."""
        ...

    def valid_fraction(self, window: Window) -> float:
        """A cheap estimate of the valid share of ``window`` (0 means nothing valid)."""
        ...


class ProbabilitySink(Protocol):
    """Where finished probabilities go: ``write(window, uint8 (2, h, w), valid (h, w))``."""

    def write(self, window: Window, probs: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Store uint8 probabilities of a window inside the grid (``valid``: False = nodata)."""
        ...


@dataclass
class EngineStats:
    """What a run did: tile counts and where the time went."""

    tiles_total: int = 0
    tiles_run: int = 0
    tiles_skipped: int = 0
    blocks: int = 0
    batches: int = 0
    pixels: int = 0
    read_seconds: float = 0.0
    model_seconds: float = 0.0
    seconds: float = 0.0


class Normaliser:
    """uint8 bands to the model's float32 input: ``(pixel / 255 - mean) / std``."""

    def __init__(self, contract: ModelContract) -> None:
        std = np.asarray(contract.std, dtype=np.float64)
        mean = np.asarray(contract.mean, dtype=np.float64)
        self.scale = (1.0 / (255.0 * std)).astype(np.float32)[:, None, None]
        self.bias = (-mean / std).astype(np.float32)[:, None, None]

    def __call__(self, pixels: np.ndarray, out: np.ndarray) -> None:
        """Normalise ``pixels`` ``(C, h, w)`` uint8 into ``out`` float32 of the same shape."""
        np.multiply(pixels, self.scale, out=out)
        np.add(out, self.bias, out=out)


def fixed_batch_size(session: Any) -> int:
    """The model's fixed batch size, or 0 when its batch dimension is dynamic."""
    for node in session.get_inputs():
        dim = node.shape[0] if node.shape else None
        if isinstance(dim, int) and dim > 0:
            return dim
    return 0


def model_batch_size(session: Any, wanted: int) -> int:
    """``wanted``, unless the model's batch dimension is fixed to another number."""
    return fixed_batch_size(session) or max(1, int(wanted))


def run_model(session: Any, before: np.ndarray, after: np.ndarray,
              extra_outputs: Sequence[str] = ()) -> np.ndarray:
    """Run the model on one batch: float32 ``(N, C, T, T)`` twice → ``(N, 2, T, T)`` float32,
    or ``(N, 2 + 2 k, T, T)`` with the ``k`` declared extra outputs after the probabilities."""
    outs = session.run([OUTPUT_PROBABILITIES, *extra_outputs],
                       {INPUT_BEFORE: before, INPUT_AFTER: after})
    if len(outs) == 1:
        return np.asarray(outs[0], dtype=np.float32)
    return np.concatenate([np.asarray(o, dtype=np.float32) for o in outs], axis=1)


def blended_channels(contract: ModelContract) -> int:
    """Blended channels: the two probabilities, then two per declared extra output."""
    return 2 + 2 * len(contract.extra_outputs)


def _write_sinks(sinks: Sequence[Any], window: Window, probs: np.ndarray,
                 valid: np.ndarray) -> None:
    """Probabilities to every sink; building presence (channels 2-3) to sinks that take it."""
    for sink in sinks:
        if getattr(sink, "takes_presence", False):
            if probs.shape[0] >= 4:
                sink.write(window, probs[2:4], valid)
        else:
            sink.write(window, probs[:2], valid)


# --- producer side: read blocks and cut them into normalised batches --------------------------

@dataclass
class _BlockStart:
    key: Any
    footprint: Window
    valid: np.ndarray | None  # None: nothing valid, every tile skipped


@dataclass
class _Batch:
    tiles: list[Tile]
    before: np.ndarray
    after: np.ndarray


@dataclass
class _BlockEnd:
    key: Any


_Event = _BlockStart | _Batch | _BlockEnd


@dataclass(frozen=True)
class _BlockSpec:
    key: Any
    tiles: list[Tile]
    footprint: Window


def _events(pair: PairReader, specs: Iterable[_BlockSpec], contract: ModelContract,
            batch_size: int, stats: EngineStats, precheck: bool) -> Iterator[_Event]:
    """Read each block's footprint once and yield its non-empty tiles as normalised batches.

    A tile is skipped when no pixel in it is valid in both dates (from the read's mask); with
    ``precheck`` a block whose ``pair.valid_fraction`` is 0 is not even read.
    """
    normalise = Normaliser(contract)
    channels, size = len(contract.band_order), contract.tile_size
    for spec in specs:
        stats.tiles_total += len(spec.tiles)
        t0 = time.perf_counter()
        if not spec.tiles or (precheck and pair.valid_fraction(spec.footprint) <= 0.0):
            stats.tiles_skipped += len(spec.tiles)
            yield _BlockStart(spec.key, spec.footprint, None)
            yield _BlockEnd(spec.key)
            continue
        before, after, valid = pair.read(spec.footprint)
        stats.read_seconds += time.perf_counter() - t0
        yield _BlockStart(spec.key, spec.footprint, valid)
        r_base, c_base = int(spec.footprint.row_off), int(spec.footprint.col_off)
        pending: list[Tile] = []
        for tile in spec.tiles:
            r, c = tile.row - r_base, tile.col - c_base
            if valid[r:r + size, c:c + size].any():
                pending.append(tile)
            else:
                stats.tiles_skipped += 1
        for start in range(0, len(pending), batch_size):
            t0 = time.perf_counter()
            chunk = pending[start:start + batch_size]
            b = np.empty((len(chunk), channels, size, size), dtype=np.float32)
            a = np.empty_like(b)
            for k, tile in enumerate(chunk):
                r, c = tile.row - r_base, tile.col - c_base
                normalise(before[:, r:r + size, c:c + size], b[k])
                normalise(after[:, r:r + size, c:c + size], a[k])
            stats.read_seconds += time.perf_counter() - t0
            yield _Batch(chunk, b, a)
        yield _BlockEnd(spec.key)


_DONE = object()


def prefetch(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Iterate ``items`` in a background thread, up to ``depth`` items ahead of the consumer.

    Exceptions in the producer are raised in the consumer; leaving the loop early stops it.
    """
    buffer: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            buffer.put(exc)

    thread = threading.Thread(target=produce, name="idou-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                buffer.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


# --- consumer side: run the model and accumulate blocks ---------------------------------------

@dataclass
class _BlockResult:
    key: Any
    footprint: Window
    valid: np.ndarray | None
    acc: np.ndarray  # int32 (2, fh, fw) fixed-point sums of this block's own tiles


def _blocks(events: Iterator[_Event], session: Any, weights: BlendWeights, stats: EngineStats,
            fixed_batch: int, extra_outputs: Sequence[str] = ()) -> Iterator[_BlockResult]:
    """Run the batches of each block through the model and yield the block's sums."""
    current: _BlockStart | None = None
    acc: np.ndarray | None = None
    for event in events:
        if isinstance(event, _BlockStart):
            current = event
            fp = event.footprint
            acc = np.zeros((2 + 2 * len(extra_outputs), int(fp.height), int(fp.width)),
                           dtype=np.int32)
        elif isinstance(event, _Batch):
            assert current is not None and acc is not None
            before, after = event.before, event.after
            n = len(event.tiles)
            if n < fixed_batch:
                pad = ((0, fixed_batch - n), (0, 0), (0, 0), (0, 0))
                before, after = np.pad(before, pad), np.pad(after, pad)
            t0 = time.perf_counter()
            probs = run_model(session, before, after, extra_outputs)
            stats.model_seconds += time.perf_counter() - t0
            stats.batches += 1
            stats.tiles_run += n
            r_base, c_base = int(current.footprint.row_off), int(current.footprint.col_off)
            for k, tile in enumerate(event.tiles):
                accumulate(acc, probs[k], weights.fixed_point(tile.row_index, tile.col_index),
                           tile.row - r_base, tile.col - c_base)
        else:
            assert current is not None and acc is not None
            stats.blocks += 1
            yield _BlockResult(current.key, current.footprint, current.valid, acc)
            current, acc = None, None


def _plan(pair: PairReader, contract: ModelContract) -> TilePlan:
    return TilePlan.for_grid(pair.grid.height, pair.grid.width, contract.tile_size,
                             contract.tile_overlap)


def _window_sums(pair: PairReader, session: Any, contract: ModelContract, window: Window, *,
                 batch_size: int, stats: EngineStats, prefetch_depth: int, precheck: bool
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-point sums int32 ``(2, h, w)`` and valid ``(h, w)`` of a window (0 / False outside)."""
    plan = _plan(pair, contract)
    h, w = int(window.height), int(window.width)
    sums = np.zeros((blended_channels(contract), h, w), dtype=np.int32)
    valid = np.zeros((h, w), dtype=bool)
    tiles = plan.tiles_for_window(window)
    if not tiles:
        return sums, valid
    spec = _BlockSpec("window", tiles, plan.footprint(tiles))
    events = _events(pair, [spec], contract, model_batch_size(session, batch_size), stats,
                     precheck)
    if prefetch_depth > 0:
        events = prefetch(events, prefetch_depth)
    weights = BlendWeights(plan)
    for result in _blocks(events, session, weights, stats, fixed_batch_size(session),
                          contract.extra_outputs):
        fp = result.footprint
        r0, c0 = int(window.row_off - fp.row_off), int(window.col_off - fp.col_off)
        # the window may reach past the footprint only where it leaves the grid
        rr0, cc0 = max(r0, 0), max(c0, 0)
        rr1, cc1 = min(r0 + h, int(fp.height)), min(c0 + w, int(fp.width))
        if rr1 > rr0 and cc1 > cc0 and result.valid is not None:
            inner = (slice(rr0 - r0, rr1 - r0), slice(cc0 - c0, cc1 - c0))
            sums[:, inner[0], inner[1]] = result.acc[:, rr0:rr1, cc0:cc1]
            valid[inner] = result.valid[rr0:rr1, cc0:cc1]
    stats.pixels += h * w
    return sums, valid


def predict_window(pair: PairReader, session: Any, contract: ModelContract, window: Window, *,
                   batch_size: int = DEFAULT_BATCH_SIZE, stats: EngineStats | None = None,
                   prefetch_depth: int = 2, precheck: bool = False) -> np.ndarray:
    """Blended probabilities of one window of the grid, as a whole-grid pass would give them.

    Runs every lattice tile that touches ``window`` (skipping tiles with no pixel valid in both
    dates) and blends them. Deterministic: a pixel gets the same value whichever window holds it,
    and ``blending.to_uint8`` of it equals what ``predict_grid`` writes.

    Args:
        pair: the aligned pair (``idou.geo.raster.align.AlignedPair``).
        session: an ONNX Runtime session of a model honouring ``contract``.
        contract: the model's contract (tile size, overlap, normalisation).
        window: any window of the grid; parts outside the grid come back as 0.
        batch_size: tiles per model call.
        stats: counters to update, if given.
        prefetch_depth: batches read ahead in a background thread (0: no thread).
        precheck: ask ``pair.valid_fraction`` before reading (see ``predict_grid``).

    Returns:
        float32 ``(2, h, w)`` probabilities (new, demolished), 0 where either date is nodata.
    """
    probs, _ = _window_probabilities(pair, session, contract, window, to_probabilities,
                                     batch_size=batch_size, stats=stats,
                                     prefetch_depth=prefetch_depth, precheck=precheck)
    return probs[:2]


def predict_window_uint8(pair: PairReader, session: Any, contract: ModelContract,
                         window: Window, *, batch_size: int = DEFAULT_BATCH_SIZE,
                         stats: EngineStats | None = None, prefetch_depth: int = 2,
                         precheck: bool = False, extra_outputs: bool = False
                         ) -> tuple[np.ndarray, np.ndarray]:
    """``predict_window`` as stored: uint8 ``(2, h, w)`` (0..255) and valid ``(h, w)``.

    Bit-identical to ``to_uint8(predict_window(...))`` and to what ``predict_grid`` writes,
    with no float temporaries (for large blocks). With ``extra_outputs``, every blended
    channel: the two probabilities, then two per declared extra output (building presence
    before, after: what ``predict_grid`` writes to a ``PresenceStore``).
    """
    probs, valid = _window_probabilities(pair, session, contract, window, sums_to_uint8,
                                         batch_size=batch_size, stats=stats,
                                         prefetch_depth=prefetch_depth, precheck=precheck)
    return (probs if extra_outputs else probs[:2]), valid


def _window_probabilities(pair: PairReader, session: Any, contract: ModelContract,
                          window: Window, convert: Callable[[np.ndarray], np.ndarray], *,
                          batch_size: int, stats: EngineStats | None, prefetch_depth: int,
                          precheck: bool) -> tuple[np.ndarray, np.ndarray]:
    """A window's blended sums through ``convert``, zero where invalid, and the valid mask."""
    stats = stats if stats is not None else EngineStats()
    t_start = time.perf_counter()
    sums, valid = _window_sums(pair, session, contract, window, batch_size=batch_size,
                               stats=stats, prefetch_depth=prefetch_depth, precheck=precheck)
    probs = convert(sums)
    probs *= valid[None]
    stats.seconds += time.perf_counter() - t_start
    return probs, valid


def _groups(count: int, per_block: int) -> list[tuple[int, int]]:
    return [(s, min(s + per_block, count)) for s in range(0, count, per_block)]


def predict_grid(pair: PairReader, session: Any, contract: ModelContract,
                 out: ProbabilitySink | Sequence[ProbabilitySink], *,
                 windows: Iterable[Window] | None = None,
                 block_size: int = DEFAULT_BLOCK_SIZE, batch_size: int = DEFAULT_BATCH_SIZE,
                 progress: ProgressCallback | None = None, prefetch_depth: int = 2,
                 precheck: bool = False) -> EngineStats:
    """Predict the whole grid (or only ``windows``) and write uint8 probabilities to ``out``.

    The grid is walked in blocks of about ``block_size`` pixels made of whole lattice tiles;
    every tile runs once, and the overlap bands between blocks are carried as partial sums, so
    memory depends on the block size (and one overlap band of the grid's width), never on the
    flight's size. Each output pixel is written exactly once.

    Args:
        pair: the aligned pair.
        session: an ONNX Runtime session.
        contract: the model's contract.
        out: one sink or several (e.g. a ``ProbabilityStore`` and a probability COG writer).
        windows: only these windows (each via ``predict_window``); None: the whole grid.
        block_size: approximate block side in pixels.
        batch_size: tiles per model call.
        progress: called with (pixels done, pixels total) after each block.
        prefetch_depth: batches read ahead in a background thread (0: no thread).
        precheck: skip reading blocks for which ``pair.valid_fraction`` is 0. Off by default:
            tiles with no valid pixel are skipped from the read's mask anyway, and for warped
            sources ``valid_fraction`` costs about as much as the read itself (measured).

    Returns:
        Counters and timings of the run.
    """
    sinks = list(out) if isinstance(out, Sequence) else [out]
    stats = EngineStats()
    t_start = time.perf_counter()
    if windows is not None:
        _predict_windows(pair, session, contract, sinks, list(windows), stats,
                         batch_size=batch_size, progress=progress,
                         prefetch_depth=prefetch_depth, precheck=precheck)
        stats.seconds = time.perf_counter() - t_start
        return stats

    height, width = int(pair.grid.height), int(pair.grid.width)
    plan = _plan(pair, contract)
    bands = _Bands(plan, max(2, round(block_size / plan.stride)), height, width)
    events: Iterator[_Event] = _events(pair, bands.specs(), contract,
                                       model_batch_size(session, batch_size), stats, precheck)
    if prefetch_depth > 0:
        events = prefetch(events, prefetch_depth)
    weights = BlendWeights(plan)
    total, done = height * width, 0
    for result in _blocks(events, session, weights, stats, fixed_batch_size(session),
                          contract.extra_outputs):
        final = bands.final(result)
        if final is not None:
            region, probs, valid = final
            _write_sinks(sinks, region, probs, valid)
            done += int(region.height) * int(region.width)
        if progress:
            progress(done, total)
    stats.pixels = total
    stats.seconds = time.perf_counter() - t_start
    return stats


def _predict_windows(pair: PairReader, session: Any, contract: ModelContract,
                     sinks: list[Any], todo: list[Window], stats: EngineStats, *,
                     batch_size: int, progress: ProgressCallback | None, prefetch_depth: int,
                     precheck: bool) -> None:
    """``predict_grid`` over only some windows, each by ``predict_window``'s way."""
    total = sum(int(w.height) * int(w.width) for w in todo)
    done = 0
    for window in todo:
        probs, valid = _window_probabilities(pair, session, contract, window,
                                             sums_to_uint8, batch_size=batch_size,
                                             stats=stats, prefetch_depth=prefetch_depth,
                                             precheck=precheck)
        _write_sinks(sinks, window, probs, valid)
        done += int(window.height) * int(window.width)
        if progress:
            progress(done, total)


class _Bands:
    """The grid's blocks of lattice tiles, and the partial sums of the overlap bands carried
    between them, so each output pixel is final (and written) once no later block touches it.
    """

    def __init__(self, plan: TilePlan, per_block: int, height: int, width: int) -> None:
        self.plan, self.height, self.width = plan, height, width
        self.row_groups = _groups(plan.shape[0], per_block)
        self.col_groups = _groups(plan.shape[1], per_block)
        col_spans = [plan.span((0, 1), g) for g in self.col_groups]
        self.lattice_width = int(col_spans[-1].col_off + col_spans[-1].width)
        self.prev: np.ndarray | None = None  # sums of earlier block rows on this row's top band
        self.next: np.ndarray | None = None
        self.left: np.ndarray | None = None  # own sums of the left block on this one's left band

    def specs(self) -> Iterator[_BlockSpec]:
        """The blocks in row-major order, each with its tiles and its footprint."""
        for gi, rg in enumerate(self.row_groups):
            for gj, cg in enumerate(self.col_groups):
                tiles = [self.plan.tile(i, j) for i in range(*rg) for j in range(*cg)]
                yield _BlockSpec((gi, gj), tiles, self.plan.span(rg, cg))

    def final(self, result: _BlockResult) -> tuple[Window, np.ndarray, np.ndarray] | None:
        """Carry this block's band sums on and take in the earlier blocks'; returns the region
        no later block touches, with its uint8 probabilities and valid mask (None: empty)."""
        plan, row_groups, col_groups = self.plan, self.row_groups, self.col_groups
        gi, gj = result.key
        fp = result.footprint
        fr0, fc0 = int(fp.row_off), int(fp.col_off)
        fr1, fc1 = fr0 + int(fp.height), fc0 + int(fp.width)
        last_row, last_col = gi == len(row_groups) - 1, gj == len(col_groups) - 1
        next_r0 = fr1 if last_row else int(plan.row_offsets[row_groups[gi + 1][0]])
        next_c0 = fc1 if last_col else int(plan.col_offsets[col_groups[gj + 1][0]])
        own = result.acc
        if gj == 0:
            self.prev, self.next, self.left = self.next, None, None
            if not last_row:
                self.next = np.zeros((own.shape[0], fr1 - next_r0, self.lattice_width),
                                     dtype=np.int32)
        # hand this block's own sums on to the blocks that share its bands
        if self.next is not None:
            self.next[:, :, fc0:fc1] += own[:, next_r0 - fr0:, :]
        left_for_next = None if last_col else own[:, :, next_c0 - fc0:].copy()
        # add what earlier blocks left on this block's top and left bands
        if self.prev is not None:
            own[:, :self.prev.shape[1], :] += self.prev[:, :, fc0:fc1]
        if self.left is not None:
            own[:, :, :self.left.shape[2]] += self.left
        self.left = left_for_next
        # the pixels no later block touches are final
        r1, c1 = min(next_r0, self.height), min(next_c0, self.width)
        if not (r1 > fr0 and c1 > fc0):
            return None
        probs = sums_to_uint8(own[:, :r1 - fr0, :c1 - fc0])  # own is not used again
        valid = (np.zeros(probs.shape[1:], dtype=bool) if result.valid is None
                 else result.valid[:r1 - fr0, :c1 - fc0])
        probs *= valid[None]
        return Window(fc0, fr0, c1 - fc0, r1 - fr0), probs, valid
