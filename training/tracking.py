"""mlflow for a training run: start (or continue) the run, log each epoch, close it.

The tracking store is :func:`idou.inference.registry.tracking_uri`'s (``MLFLOW_TRACKING_URI``
or ``sqlite:///mlflow.db`` in the working directory), the one the registry uses; artifacts go
beside a sqlite store's file, not in ``./mlruns`` of the working directory. Only rank 0 tracks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from idou.inference.registry import ensure_experiment, tracking_uri
from idou.training.config import TrainConfig
from idou.training.validation import pr_curve_png, samples_png


def start_mlflow(config: TrainConfig, run_id: str | None) -> Any:
    """The mlflow module with a run started: ``run_id`` continued when it still exists, else a
    fresh run with the config's parameters and file logged."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    # artifacts beside a sqlite store's file, not in ./mlruns of the working directory
    ensure_experiment(mlflow.MlflowClient(), config.experiment)
    mlflow.set_experiment(config.experiment)
    if run_id:
        try:
            mlflow.start_run(run_id=run_id)
            return mlflow
        except Exception:  # noqa: BLE001 - the old run is gone: start a fresh one
            pass
    mlflow.start_run(run_name=config.name)
    params = {k: str(v)[:500] for k, v in config.flat_params().items()}
    mlflow.log_params(params)
    if config.source and Path(config.source).is_file():
        mlflow.log_artifact(config.source, artifact_path="config")
    return mlflow


def log_epoch_artifacts(mlflow: Any, extras: dict[str, Any], contract: Any, run_path: Path,
                        epoch: int) -> None:
    """The epoch's validation PR curve and sample predictions, under ``epochs/NNN``."""
    pr_png = run_path / "pr_curve.png"
    pr_curve_png(extras["pr"], pr_png)
    mlflow.log_artifact(str(pr_png), artifact_path=f"epochs/{epoch:03d}")
    if extras["samples"]:
        png = run_path / "samples.png"
        samples_png(extras["samples"], contract.mean, contract.std, png)
        mlflow.log_artifact(str(png), artifact_path=f"epochs/{epoch:03d}")


def log_epoch_record(mlflow: Any, record: dict[str, float], epoch: int) -> None:
    """The epoch's losses and validation metrics, at step ``epoch``."""
    mlflow.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=epoch)


def end_tracking(mlflow: Any, best_epoch: int, wall_s: float, onnx_path: Path | None) -> None:
    """Log the exported model (when there is one), the best epoch and the wall time; end."""
    if onnx_path is not None:
        mlflow.log_artifact(str(onnx_path), artifact_path="model")
    mlflow.log_metrics({"best_epoch": float(best_epoch), "wall_s": wall_s})
    mlflow.end_run()
