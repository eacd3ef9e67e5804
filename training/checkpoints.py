"""Checkpoints of a training run: their layout, writing them, reading them back safely.

``<run_dir>/last.ckpt`` is written after every epoch (and on Ctrl-C): plain state dicts of the
model, optimiser, scheduler and scaler, the :class:`RunState` reached and the RNG states, with
``torch.save`` to a temporary file that is then renamed, so it is never half-written.
``best.ckpt`` keeps the weights of the best validation epoch. Both are read back with
``torch.load(weights_only=True)`` (:func:`load_checkpoint`), which never unpickles code.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from idou.errors import InputNotFound, ModelContractError
from idou.models.siamese import NetworkConfig, SiameseChangeNet
from idou.training.config import TrainConfig, config_from_dict

CHECKPOINT_FORMAT = 1


@dataclass
class TrainResult:
    """What a finished (or stopped) run leaves behind."""

    run_dir: Path
    epochs_done: int
    global_step: int
    best_epoch: int
    best_metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
    wall_s: float = 0.0
    mlflow_run_id: str | None = None
    onnx_path: Path | None = None
    nothing_to_do: bool = False  # resumed a run that had already finished: nothing ran


@dataclass
class RunState:
    """Where a run stands: what ``last.ckpt`` records besides the weights and RNG states."""

    started: float  # time.monotonic() when this process started (or resumed) the run
    epoch: int = 0  # the epoch under way (0-based)
    batch_in_epoch: int = 0  # its batches done
    global_step: int = 0
    best_epoch: int = -1
    best_score: tuple[float, ...] = (-1.0, -1.0)
    best_metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    bad_epochs: int = 0  # epochs since the best one
    mlflow_run_id: str | None = None
    elapsed_before: float = 0.0  # seconds the run took before this process resumed it

    def elapsed(self) -> float:
        """Seconds the run has taken in all."""
        return self.elapsed_before + time.monotonic() - self.started

    def resume_from(self, ckpt: dict[str, Any]) -> None:
        """Take the state a ``last.ckpt`` recorded."""
        self.epoch, self.batch_in_epoch = int(ckpt["epoch"]), int(ckpt["batch_in_epoch"])
        self.global_step = int(ckpt["global_step"])
        self.best_epoch, self.best_score = int(ckpt["best_epoch"]), tuple(ckpt["best_score"])
        self.best_metrics = dict(ckpt["best_metrics"])
        self.history = [dict(h) for h in ckpt["history"]]
        self.bad_epochs = int(ckpt["bad_epochs"])
        self.mlflow_run_id = ckpt.get("mlflow_run_id")
        self.elapsed_before = float(ckpt.get("elapsed_s", 0.0))


def write_last(path: Path, network: NetworkConfig, states: dict[str, Any], run: RunState,
               epoch: int, batch: int, config: TrainConfig) -> None:
    """Write ``last.ckpt`` (a temporary file, then renamed): ``states`` holds the state dicts
    of the model, optimizer, scheduler and scaler; ``epoch``/``batch`` where to resume."""
    state = {
        "format": CHECKPOINT_FORMAT, "network": network.to_dict(), **states,
        "epoch": epoch, "batch_in_epoch": batch, "global_step": run.global_step,
        "best_epoch": run.best_epoch, "best_score": list(run.best_score),
        "best_metrics": dict(run.best_metrics),
        "history": run.history, "bad_epochs": run.bad_epochs, "mlflow_run_id": run.mlflow_run_id,
        "elapsed_s": run.elapsed(), "rng": rng_state(), "config": plain_data(config.to_dict()),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def write_best(path: Path, network: NetworkConfig, model: dict[str, Any], epoch: int,
               metrics: dict[str, float], mlflow_run_id: str | None,
               config: TrainConfig) -> None:
    """Write ``best.ckpt``: the weights of epoch ``epoch`` (1-based) and its metrics."""
    torch.save({"format": CHECKPOINT_FORMAT, "network": network.to_dict(), "model": model,
                "epoch": epoch, "metrics": metrics, "mlflow_run_id": mlflow_run_id,
                "config": plain_data(config.to_dict())}, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (never unpickles code).

    Raises:
        UserInputError: the file is missing or is not a plain-data checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFound(f"{path} does not exist; pass a checkpoint written by idou train.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - refuse anything that is not plain data
        raise ModelContractError(f"{path} is not a plain-data idou checkpoint ({type(exc).__name__}"
                                 "); only files written by idou train are loaded.") from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt or "network" not in ckpt:
        raise ModelContractError(f"{path} is not an idou checkpoint (no model/network entries); "
                                 "pass last.ckpt or best.ckpt of a training run.")
    return ckpt


def checkpoint_config(ckpt: dict[str, Any], path: Path) -> TrainConfig | None:
    """The training config a checkpoint stores (None when it stores none)."""
    if "config" not in ckpt:
        return None
    data = dict(ckpt["config"])
    data.pop("source", None)
    for role in ("train_data", "val_data"):
        data[role] = [{"kind": s["kind"], **({"terms": s["terms"]} if s.get("terms") else {}),
                       **s.get("params", {})} for s in data.get(role, [])]
    return config_from_dict(data, path)


def network_from_checkpoint(ckpt: dict[str, Any]) -> SiameseChangeNet:
    """Rebuild the network of a checkpoint with its weights (eval mode)."""
    net = SiameseChangeNet(NetworkConfig.from_dict(ckpt["network"]))
    net.load_state_dict(ckpt["model"])
    return net.eval()


def finished_run(run_path: Path, epochs: int, min_epochs: int, patience: int,
                 validated: bool) -> TrainResult | None:
    """The outcome of a run whose ``last.ckpt`` already reached its end, else None.

    The end is ``epochs`` epochs done, or the early stop the loop would take after the last
    one (no better validation score for ``patience`` epochs, past ``min_epochs``).
    """
    last = run_path / "last.ckpt"
    if not last.exists():
        return None
    ckpt = load_checkpoint(last)
    done = int(ckpt["epoch"])
    if int(ckpt["batch_in_epoch"]) != 0:
        return None
    stopped = validated and done >= min_epochs and int(ckpt["bad_epochs"]) >= patience
    if done < epochs and not stopped:
        return None
    onnx = run_path / "model.onnx"
    return TrainResult(run_path, len(ckpt["history"]), int(ckpt["global_step"]),
                       int(ckpt["best_epoch"]), dict(ckpt["best_metrics"]),
                       [dict(h) for h in ckpt["history"]], stopped,
                       float(ckpt.get("elapsed_s", 0.0)), ckpt.get("mlflow_run_id"),
                       onnx if onnx.exists() else None, nothing_to_do=True)


def rng_state() -> dict[str, Any]:
    """The python, numpy, torch (and CUDA) RNG states as plain tensors and lists."""
    np_state: Any = np.random.get_state()
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                             "numpy": torch.from_numpy(np.asarray(np_state[1], np.int64)),
                             "numpy_pos": int(np_state[2])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` recorded."""
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32),
                         int(state["numpy_pos"]), 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_as_tuple(v) for v in value)
    return value


def plain_data(value: Any) -> Any:
    """Config as plain containers (loadable with weights_only)."""
    if isinstance(value, dict):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_data(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
