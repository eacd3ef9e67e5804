"""`idou detect`: find new and demolished buildings between two flights, write a GeoPackage."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from idou.inference.detect import DetectJob, DetectSummary


def _flight(positional: str | None, repeated: list[str] | None, name: str) -> Any:
    """One flight from the positional argument and/or repeated ``--before``/``--after``."""
    items = ([positional] if positional else []) + list(repeated or [])
    if not items:
        from idou.errors import UserInputError

        raise UserInputError(f"no {name} flight was given; pass it as an argument (a file, a "
                             f"folder of sheets, a .txt list) or with --{name} (repeatable).")
    return items[0] if len(items) == 1 else items


def detect_command(  # long only by its typer options, one per flag; the body is short
    before: str | None = typer.Argument(None, help="Earlier flight: GeoTIFF/COG/VRT, TIFF+.tfw, "
                                        "a folder of sheets, a .txt list or a glob."),
    after: str | None = typer.Argument(None, help="Later flight (its CRS and grid are kept)."),
    output: Path = typer.Option(..., "-o", "--output", help="The GeoPackage to write."),
    before_sheets: list[str] | None = typer.Option(None, "--before", help="A sheet of the "
                                                   "earlier flight (repeatable)."),
    after_sheets: list[str] | None = typer.Option(None, "--after", help="A sheet of the later "
                                                  "flight (repeatable)."),
    parcels: list[Path] | None = typer.Option(None, "--parcels", help="Parcels: GeoPackage, "
                                              "Shapefile, GeoJSON or 地図XML (repeatable)."),
    buildings: Path | None = typer.Option(None, "--buildings", help="Existing buildings "
                                          "(家屋現況図): GeoPackage, Shapefile, GeoJSON, CityGML."),
    aoi: Path | None = typer.Option(None, "--aoi", help="Vector file limiting the area."),
    model: str = typer.Option("default", "--model", help="default, a path to an .onnx model, "
                              "or models:/NAME@ALIAS."),
    threshold: float | None = typer.Option(None, "--threshold", help="One probability "
                                           "threshold for both channels (default: the model's)."),
    threshold_new: float | None = typer.Option(None, "--threshold-new",
                                               help="Threshold of new buildings."),
    threshold_demolished: float | None = typer.Option(None, "--threshold-demolished",
                                                      help="Threshold of demolished buildings."),
    prob: Path | None = typer.Option(None, "--prob", help="Also write the probabilities as a "
                                     "2-band COG (new, demolished) for QGIS."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads for the "
                                       "model (default: all cores)."),
    crs: str | None = typer.Option(None, "--crs", help="CRS of inputs that record none "
                                   "(world files), e.g. EPSG:6677; also the grid in metres "
                                   "that latitude/longitude or Web Mercator flights are "
                                   "warped onto."),
    encoding: str | None = typer.Option(None, "--encoding", help="Attribute encoding of the "
                                        "parcel and building files, e.g. cp932 (default: "
                                        "from the file)."),
    chiban_column: str | None = typer.Option(None, "--chiban-column", help="The parcels' 地番 "
                                             "column when it has another name."),
    min_area: float = typer.Option(8.0, "--min-area", help="Smallest change kept, in m²."),
    keep_unmatched: bool = typer.Option(False, "--keep-unmatched", help="With --buildings: "
                                        "change the building map does not support "
                                        "(その他の変化) also makes its parcels candidates."),
    threshold_footprint: float | None = typer.Option(
        None, "--threshold-footprint", help="With --buildings: the demolished score a "
        "registered footprint needs to be 滅失 (default: the model's)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or notes."),
    force: bool = typer.Option(False, "--force", help="Re-run into an existing output "
                               "(review edits in it are kept; only files idou wrote are "
                               "replaced)."),
    allow_network: bool = typer.Option(False, "--allow-network", help="Accept inputs read "
                                       "from the network (/vsicurl/, URLs, VRTs and OGR VRTs "
                                       "that lead there); refused by default."),
) -> None:
    """Find new (新築), extended (増築) and demolished (滅失) buildings; write a GeoPackage."""
    from rich.console import Console

    from idou.cli_text import say
    from idou.geo.files.network import allow_network_sources
    from idou.geo.vector.vector_files import check_encoding
    from idou.inference.detect import DetectJob

    check_encoding(encoding)  # also when no parcel or building file would have used it

    err = Console(stderr=True)

    def log(level: str, message: str) -> None:
        if level == "warning":
            say(err, "warning:", "yellow", message)
        elif not quiet:
            say(err, "note:", "dim", message)

    job = DetectJob(
        _flight(before, before_sheets, "before"), _flight(after, after_sheets, "after"), output,
        parcels=(parcels or None), buildings=buildings, aoi=aoi, model=model,
        threshold=threshold, threshold_new=threshold_new,
        threshold_demolished=threshold_demolished, prob=prob, device=device, threads=threads,
        crs=crs, force=force, min_area_m2=min_area, encoding=encoding,
        chiban_column=chiban_column, keep_unmatched=keep_unmatched,
        threshold_footprint=threshold_footprint)
    with allow_network_sources(allow_network):
        summary = _run(job, quiet, err, log)
    if not quiet:
        _print_summary(summary)


def _run(job: DetectJob, quiet: bool, err: Any, log: Any) -> DetectSummary:
    """Run the job, drawing its progress on ``err`` unless ``quiet``."""
    from idou.inference.detect import run_detect

    if quiet:
        return run_detect(job, log=log)
    with _progress_bar(err) as progress:
        return run_detect(job, progress=progress, log=log)


class _progress_bar:  # noqa: N801 - used like a function in a with statement
    """A rich progress bar with ETA and Mpx/s, fed by detect's progress callback."""

    def __init__(self, console: Any) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            ProgressColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class Speed(ProgressColumn):
            def render(self, task: Any) -> Text:
                if task.fields.get("unit") != "Mpx" or not task.speed:
                    return Text("")
                return Text(f"{task.speed:.2f} Mpx/s", style="cyan")

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TaskProgressColumn(), Speed(), TimeElapsedColumn(),
                                 TextColumn("eta"), TimeRemainingColumn(), console=console,
                                 transient=False)
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> _progress_bar:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def __call__(self, stage: str, done: float, total: float, *,
                 rate: float | None = None) -> None:
        labels = {"infer": "detecting", "vectorize": "polygons"}
        scale = 1e6 if stage == "infer" else 1.0
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(
                labels.get(stage, stage), total=total / scale,
                unit="Mpx" if stage == "infer" else "")
        self.progress.update(self.tasks[stage], completed=done / scale, total=total / scale)


def _print_summary(summary: DetectSummary) -> None:
    from rich.console import Console

    from idou.cli_text import labelled, plain

    console = Console()
    counts = ", ".join(f"{k} {v}" for k, v in sorted(summary.changes_by_type.items())) or "none"
    console.print(labelled("changes:", "bold", f"{counts}; candidate parcels: "
                                               f"{summary.candidate_parcels}"))
    other = summary.changes_by_type.get("other", 0)
    if other:
        console.print(f"{other} change(s) the building map does not support (その他の変化, see "
                      "判定理由) are kept in the changes layer but make no candidate parcel; "
                      "pass --keep-unmatched to list their parcels too.", markup=False)
    console.print(f"{summary.input_megapixels:.1f} Mpx in {summary.seconds:.1f} s "
                  f"({summary.megapixels_per_second:.2f} Mpx/s end to end); "
                  f"tiles run {summary.tiles_run}, skipped {summary.tiles_skipped}")
    plain(console, f"wrote {summary.output}" + (f" and {summary.probabilities}"
                                                if summary.probabilities else ""))


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the `idou` application."""
    app.command("detect")(detect_command)
