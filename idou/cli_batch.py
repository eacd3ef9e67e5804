"""`idou batch`: a whole flight, resumable, on local workers or a Dask cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

BATCH_HELP = "\n\n".join([
    "Run change detection over a whole flight described by FLIGHT.toml.",
    "The flight is cut into blocks recorded in a journal in the output folder. Re-running the "
    "same command after a crash, kill -9 or failed blocks continues where it stopped; the final "
    "GeoPackage equals an uninterrupted run's. Progress: OUT/status.json (rewritten after each "
    "block); log: OUT/idou-batch.log; summary: OUT/summary.html.",
    "Exit status, for cron, systemd or a job runner:",
    "0 = all blocks done and the GeoPackage written.",
    "1 = internal error (a bug; OUT/idou-batch.log says where).",
    "2 = user error: bad FLIGHT.toml, missing or unreadable sheet, parcel or building file, "
    "CRS, model, a damaged journal.sqlite (move it aside), an output folder idou may not "
    "write, or another run holds the output folder.",
    "3 = finished, but some blocks failed after their retries (see status.json and the "
    "journal); run the same command again to retry only those.",
    "130 = interrupted (Ctrl-C or SIGTERM); run again to resume.",
])


def batch(
    flight: Path = typer.Argument(..., help="The FLIGHT.toml describing inputs and output.",
                                  show_default=False),
    check: bool = typer.Option(False, "--check",
                               help="Validate files, sheets, CRS, overlap and model, run nothing."),
    workers: int | None = typer.Option(None, "--workers", min=1,
                                       help="Local worker processes (default: the file's)."),
    scheduler: str | None = typer.Option(None, "--scheduler",
                                         help="Run on an existing Dask scheduler, "
                                              "tcp://HOST:PORT (shared storage required)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    import signal

    from idou.inference.batch import run_batch
    from idou.inference.batch_check import check_flight
    from idou.inference.batch_config import load_flight_config

    config = load_flight_config(flight)
    if check:
        report = check_flight(config)
        for line in report.lines():
            typer.echo(line)
        typer.echo("check passed: nothing was run")
        return

    def _stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    if quiet:
        result = run_batch(config, workers=workers, scheduler=scheduler)
    else:
        with _BlockBar() as bar:
            result = run_batch(config, workers=workers, scheduler=scheduler, progress=bar)
    if not quiet:
        typer.echo(f"{result.blocks_done}/{result.blocks_total} blocks done, "
                   f"{result.blocks_failed} failed; status: {result.out_dir / 'status.json'}")
        if result.gpkg is not None:
            typer.echo(f"GeoPackage: {result.gpkg}")
    if result.exit_code:
        raise typer.Exit(result.exit_code)


class _BlockBar:
    """A rich progress bar over blocks, fed by the batch's progress callback."""

    def __init__(self) -> None:
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _BlockBar:
        return self

    def __call__(self, stage: str, done: float, total: float, *,
                 rate: float | None = None) -> None:
        if self._progress is None:  # the first call: the blocks start
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
            self._task = self._progress.add_task("blocks", total=total, rate="")
        if done:
            self._progress.update(self._task, advance=1,
                                  rate="" if rate is None else f"{rate:.2f} Mpx/s")

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the `idou` application."""
    app.command("batch", help=BATCH_HELP)(batch)
