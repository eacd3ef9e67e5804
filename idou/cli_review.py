"""`idou` subcommands of the review stage: `harvest` (survey outcomes → labels), `summary`."""

from __future__ import annotations

from pathlib import Path

import typer


def harvest_command(
    reviewed: Path = typer.Argument(..., help="The review GeoPackage after the field survey."),
    out: Path = typer.Option(..., "-o", "--out", help="Folder for labels.gpkg and "
                             "harvest.json."),
) -> None:
    """Turn reviewed outcomes (調査状況) and the `missed` layer into training labels."""
    from idou.geo.review.harvest import harvest, unknown_values_sentences
    from idou.training.review_tracking import log_harvest

    report = harvest(reviewed, out)
    log_harvest(report)
    for sentence in unknown_values_sentences(report, reviewed):
        typer.echo(f"warning: {sentence}", err=True)
    counts = report.counts
    typer.echo(f"labels: {counts['confirmed']} confirmed, {counts['false_alarms']} false "
               f"alarms, {counts['ignored']} to re-check, {counts['missed']} missed → "
               f"{out / 'labels.gpkg'}")
    typer.echo(f"observed precision {_pct(report.precision)}, recall {_pct(report.recall)} "
               f"→ {out / 'harvest.json'}")


def summary_command(
    gpkg: Path = typer.Argument(..., help="A run's review GeoPackage."),
    out: Path = typer.Option(..., "-o", "--out", help="Folder for the CSV, PNG and HTML."),
) -> None:
    """Counts and areas by class per 大字/町丁目: CSV and an HTML report with a map."""
    from idou.geo.review.district_summary import write_district_summary

    files = write_district_summary(gpkg, out)
    typer.echo(f"{len(files.table) - 1} districts → {files.csv}, {files.html}")


def _pct(value: float | None) -> str:
    return "n/a (nothing reviewed)" if value is None else f"{value:.1%}"


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the `idou` application."""
    app.command("harvest")(harvest_command)
    app.command("summary")(summary_command)
