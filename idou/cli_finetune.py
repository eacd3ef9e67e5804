"""`idou finetune prepare`: a city's own flights and building maps as a fine-tuning run.

Thin: options are parsed here; the work is done in ``idou.training.city`` (imported inside the
command, so importing the CLI never pulls in torch).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

_out = Console()
finetune_app = typer.Typer(help="Fine-tune a model on a city's own flights and building maps.",
                           no_args_is_help=True)


@finetune_app.command("prepare")
def prepare(
    out_dir: Path = typer.Argument(..., help="New folder for the tiles, held-back strip and "
                                   "config."),
    before: Path = typer.Option(..., "--before", help="The city's latest flight that has a "
                                "building map (GeoTIFF / COG / VRT)."),
    before_map: Path = typer.Option(..., "--before-map", help="That flight's building map "
                                    "(家屋現況図: GeoPackage, Shapefile or CityGML)."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="idou train checkpoint to start "
                                    "from (best.ckpt / last.ckpt)."),
    past_before: Path | None = typer.Option(None, "--past-before", help="An earlier flight "
                                            "with its own map: the past pair's first date."),
    past_before_map: Path | None = typer.Option(None, "--past-before-map",
                                                help="The earlier flight's building map."),
    holdout: float = typer.Option(0.3, "--holdout", help="Share of the flights held back "
                                  "(never trained on) to report and tune on."),
    side: str = typer.Option("east", "--side", help="Where the held-back strip lies: east, "
                             "west, north or south."),
    epochs: int = typer.Option(6, "--epochs", min=1, help="Training epochs."),
    chips_per_epoch: int = typer.Option(1024, "--chips-per-epoch", min=16,
                                        help="Chips drawn per epoch."),
    max_minutes: float = typer.Option(15.0, "--max-minutes", min=0.0,
                                      help="Stop after the epoch that passes this wall time."),
    threads: int = typer.Option(0, "--threads", min=0, help="torch CPU threads (0: default)."),
) -> None:
    """Hold back a strip, cut single-date tiles (and the past pair), write the train config."""
    from idou.training.city import prepare_city

    done = prepare_city(out_dir, before=before, before_map=before_map, checkpoint=checkpoint,
                        past_before=past_before, past_before_map=past_before_map,
                        holdout_fraction=holdout, side=side, epochs=epochs,
                        chips_per_epoch=chips_per_epoch, max_minutes=max_minutes,
                        threads=threads)
    _out.print(f"{done.tiles} single-date tiles from {before.name} and {before_map.name}: "
               f"{done.out_dir / 'train' / 'tiles'}", highlight=False)
    if done.holdout is not None:
        truth = ", ".join(f"{k} {v}" for k, v in sorted(done.truth_counts.items())) or "none"
        _out.print(f"held back ({holdout:.0%}, {side}): {done.holdout} (truth: {truth})",
                   highlight=False)
    else:
        _out.print("no --past-before: the held-back strip has no change truth; add an earlier "
                   "flight and its map to report and tune on it.", highlight=False)
    _out.print(f"next: idou train {done.config}", highlight=False)


@finetune_app.command("compare")
def compare(
    reports: list[Path] = typer.Argument(..., help="Two or more .tune.json files of idou tune "
                                         "on the same held-back strip (before, after)."),
    recall: list[float] = typer.Option([0.6, 0.7, 0.8, 0.9], "--recall",
                                       help="Recall levels to compare at (repeatable)."),
) -> None:
    """Object precision of each model at equal recall, from idou tune's threshold sweeps."""
    from rich.table import Table

    from idou.training.city import precision_at_recall, read_tune_report

    loaded = [read_tune_report(p) for p in reports]
    table = Table(title="best object precision at object recall >= r (threshold)")
    table.add_column("channel")
    table.add_column("recall >=", justify="right")
    for path in reports:
        table.add_column(path.name.removesuffix(".tune.json"), justify="right")
    for channel in ("new", "demolished"):
        for r in recall:
            cells = []
            for report in loaded:
                point = precision_at_recall(report, channel, r)
                cells.append("not reached" if point is None else
                             f"{point['precision']:.2f} (R {point['recall']:.2f}, "
                             f"t {point['threshold']:.2f})")
            table.add_row(channel, f"{r:.2f}", *cells)
    _out.print(table)


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the `idou` application."""
    app.add_typer(finetune_app, name="finetune")
