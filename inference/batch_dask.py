"""Running a batch's blocks on Dask: a local cluster or a scheduler, retries, the journal.

Each finished block is recorded in the journal and ``status.json`` as it comes back; progress
goes to a :class:`~idou.inference.progress.Progress` callback (the CLI draws the bar).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from idou.errors import UserInputError
from idou.inference.batch_report import StatusFile
from idou.inference.batch_sittings import record_sitting
from idou.inference.batch_worker import BlockOutcome, RunSpec, compute_block
from idou.inference.blocks import Block
from idou.inference.journal import Journal
from idou.inference.progress import Progress

log = logging.getLogger("idou.batch")


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


def compute_blocks(spec: RunSpec, todo: list[Block], journal: Journal, status: StatusFile,
                   workers: int, scheduler: str | None, max_attempts: int,
                   progress: Progress | None,
                   on_block: Callable[[dict[str, Any]], None] | None,
                   dashboard: str | None = None) -> int:
    """Run ``todo`` on Dask, recording each result; returns how many blocks failed.

    At most two blocks per worker thread are handed out at a time, so the journal's
    ``running`` rows are the blocks actually on the workers. A block that raises is retried
    up to ``max_attempts`` times in this run (a user error, such as a corrupt sheet, is not
    retried); then it is ``failed`` and the others go on. ``progress`` hears of each finished
    block (stage ``blocks``, with the run's Mpx/s once a block is done).
    """
    if not todo:
        return 0
    from distributed import as_completed

    tries: dict[str, int] = {}
    failed = 0
    finished = 0
    with _client(workers, scheduler, dashboard) as client:
        if progress is not None:
            progress("blocks", 0, len(todo))
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
            data: dict[str, Any] | None = None
            try:
                outcome: BlockOutcome = future.result()
            except Exception as exc:  # noqa: BLE001 - recorded, retried, reported
                if _retry(exc, block, tries[block.id], max_attempts):
                    queue.add(submit(block))
                    continue
                _record_failed(journal, block, tries[block.id], exc)
                failed += 1
            else:
                data = _record_done(journal, status, block, outcome)
            finished += 1
            if progress is not None:
                progress("blocks", finished, len(todo),
                         rate=None if data is None else data["mpx_per_s"])
            if data is not None and on_block is not None:
                on_block(data)
            following = next(waiting, None)
            if following is not None:
                queue.add(submit(following))
    return failed


def _message(exc: Exception) -> str:
    """The first line of what went wrong (a user error's own sentence, else its type too)."""
    return (str(exc) if isinstance(exc, UserInputError)
            else f"{type(exc).__name__}: {exc}").splitlines()[0]


def _retry(exc: Exception, block: Block, tries: int, max_attempts: int) -> bool:
    """Whether to try the block again (never after a user error such as a corrupt sheet)."""
    if tries < max_attempts and not isinstance(exc, UserInputError):
        log.warning("block %s failed (%s); retrying", block.id, _message(exc))
        return True
    return False


def _record_failed(journal: Journal, block: Block, tries: int, exc: Exception) -> None:
    message = _message(exc)
    log.error("block %s failed after %d attempt(s): %s", block.id, tries, message)
    journal.mark_failed(block.id, message)


def _record_done(journal: Journal, status: StatusFile, block: Block, outcome: BlockOutcome
                 ) -> dict[str, Any]:
    """Record a finished block in the journal and status.json; returns the status."""
    journal.mark_done(block.id, outcome.seconds, outcome.worker, outcome.timings)
    status.add_pixels(outcome.pixels)
    data = status.update("running", journal.counts(), journal.done_seconds()[0])
    record_sitting(journal, data)  # a sitting killed outright still counts
    log.info("block %s done in %.2f s on %s", block.id, outcome.seconds, outcome.worker)
    return data
