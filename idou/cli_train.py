"""`idou` subcommands of the train stage: ``train`` and ``export``.

Thin: options are parsed here; the work is done in ``idou.training.loop`` and
``idou.training.export`` (imported inside the commands, so importing the CLI never pulls in
torch or mlflow).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

_out = Console(markup=False)  # user text (paths, names) is printed literally


def train_command(
    config: Path = typer.Argument(..., help="TOML training config (see configs/)."),
    resume: bool = typer.Option(True, "--resume/--no-resume",
                                help="Continue from RUN_DIR/last.ckpt when it exists."),
    max_epochs: int | None = typer.Option(None, "--max-epochs", min=1,
                                          help="Stop after this many epochs in all (the LR "
                                          "schedule still spans the config's epochs)."),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="Override run_dir."),
    mlflow: bool = typer.Option(True, "--mlflow/--no-mlflow",
                                help="Track the run (MLFLOW_TRACKING_URI or ./mlflow.db)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
) -> None:
    """Train a change model (CUDA + mixed precision when present, else CPU); resumable.

    Under ``torchrun --nproc_per_node=N`` it trains data-parallel (DDP).
    """
    from idou.training.config import load_config
    from idou.training.ddp import cleanup, init_distributed
    from idou.training.loop import train
    from idou.training.validation import metric_text

    cfg = load_config(config)
    info = init_distributed()  # joins the group under torchrun, else touches nothing
    try:
        result = train(cfg, resume=resume, max_epochs=max_epochs, run_dir=run_dir,
                       log_mlflow=mlflow, progress=progress)
    finally:
        cleanup()
    if not info.is_main:
        return
    if result.nothing_to_do:
        _out.print(f"nothing to do: {result.run_dir / 'last.ckpt'} has already finished "
                   f"({result.epochs_done} epoch(s), best epoch {result.best_epoch}"
                   f"{', stopped early' if result.stopped_early else ''}); raise "
                   "train.epochs or --max-epochs to train on, or pass --no-resume to start "
                   "again.", highlight=False)
        return
    best = result.best_metrics
    summary = ", ".join(f"{k} {metric_text(best, k)}" for k in
                        ("new_object_recall", "new_object_precision",
                         "demolished_object_recall", "demolished_object_precision")
                        if k in best)
    _out.print(f"trained {result.epochs_done} epoch(s), {result.global_step} steps in "
               f"{result.wall_s / 60:.1f} min; best epoch {result.best_epoch}"
               + (f" ({summary})" if summary else ""), highlight=False)
    _out.print(f"checkpoints: {result.run_dir / 'best.ckpt'}, {result.run_dir / 'last.ckpt'}",
               highlight=False)
    if result.onnx_path:
        _out.print(f"model: {result.onnx_path}", highlight=False)
    if result.mlflow_run_id:
        _out.print(f"mlflow run: {result.mlflow_run_id}", highlight=False)


def export_command(
    checkpoint: Path = typer.Argument(..., help="best.ckpt or last.ckpt of idou train."),
    output: Path = typer.Option(..., "-o", "--output", help="The .onnx file to write."),
    config: Path | None = typer.Option(None, "--config",
                                       help="Training config (default: the checkpoint's)."),
    card: bool = typer.Option(True, "--card/--no-card",
                              help="Write <stem>.card.json and <stem>.card.md beside it."),
    force: bool = typer.Option(False, "--force", help="Replace a model (and card) idou "
                               "exported before; other files are never replaced."),
) -> None:
    """Export a checkpoint to single-file ONNX with its contract; checks parity with torch."""
    from idou.training.config import load_config
    from idou.training.export import export_checkpoint

    cfg = load_config(config) if config is not None else None
    result = export_checkpoint(checkpoint, output, config=cfg, card=card, force=force)
    checks = ", ".join(f"{k.removeprefix('parity_max_abs_diff_')} {v:.1e}"
                       for k, v in result.parity.items())
    _out.print(f"wrote {result.path} ({result.size_bytes / 1e6:.1f} MB, sha256 "
               f"{result.sha256[:12]}…); torch vs ONNX Runtime max |diff|: {checks}",
               highlight=False)
    if result.card_paths:
        _out.print(f"model card: {result.card_paths[0]}, {result.card_paths[1]}",
                   highlight=False)


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the `idou` application."""
    app.command("train")(train_command)
    app.command("export")(export_command)
