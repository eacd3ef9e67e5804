"""The training loop behind ``idou train``: seeded, resumable, tracked in mlflow, DDP-ready.

:func:`train` runs in named steps: set up (:func:`_place`, :func:`_loaders`,
:func:`_build_trainee`), resume from ``last.ckpt``, then per epoch :func:`_train_epoch` and
:func:`_validate_and_select`, and :func:`_finish` (export, close the mlflow run). Around it:

- Device: CUDA with mixed precision (``torch.autocast`` + ``GradScaler``) when a GPU is present,
  the CPU otherwise; channels-last on both (oneDNN's CPU convolutions run a training step of
  the default network about a quarter faster in that layout).
- Checkpoints (:mod:`idou.training.checkpoints`): ``last.ckpt`` after every epoch (and on
  Ctrl-C), ``best.ckpt`` with the weights of the best validation epoch. A run restarted with
  ``resume=True`` continues at the same epoch and step (batches an interrupted epoch already
  used are skipped).
- Early stopping on validation object recall (:mod:`idou.training.validation`): ``train.monitor
  = "object_recall"`` ranks epochs by recall (object F1 breaks ties); ``"object_recall+f1"`` by
  recall + F1, so a run whose recall has saturated keeps improving its precision.
- mlflow (:mod:`idou.training.tracking`): parameters, the config file, per-epoch losses and
  pixel/object metrics, the PR curve PNG, sample predictions, the exported ONNX model.
- Data (:mod:`idou.training.loaders`): the config's datasets, augmented and balanced.
- DDP: when ``torch.distributed`` is initialised (``torchrun``), the model is wrapped in
  ``DistributedDataParallel``, each rank draws its own share of chips, and only rank 0 logs,
  validates and writes checkpoints.
"""

from __future__ import annotations

import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from idou.errors import InvalidOption, UserInputError
from idou.models.siamese import NetworkConfig, SiameseChangeNet
from idou.training.checkpoints import (
    RunState,
    TrainResult,
    finished_run,
    load_checkpoint,
    set_rng_state,
    write_best,
    write_last,
)
from idou.training.config import TrainConfig
from idou.training.ddp import agree, rank_and_world, training_device
from idou.training.loaders import Loaders, build_datasets, build_loaders
from idou.training.losses import ChangeLoss
from idou.training.tracking import (
    end_tracking,
    log_epoch_artifacts,
    log_epoch_record,
    start_mlflow,
)
from idou.training.validation import MONITORS, evaluate, metric_text, score

__all__ = ["TrainResult", "seed_everything", "train"]


@dataclass
class _Place:
    """Where this process trains: the run folder, the epochs to reach, its rank and device."""

    run_path: Path
    epochs: int
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Rank 0: the process that validates, logs and writes checkpoints."""
        return self.rank == 0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


@dataclass
class _Trainee:
    """The network and what trains it."""

    net_config: NetworkConfig
    net: SiameseChangeNet
    model: nn.Module  # the network, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    loss_fn: ChangeLoss

    def states(self) -> dict[str, Any]:
        """The state dicts ``last.ckpt`` keeps."""
        return {"model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict()}

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Load what :meth:`states` wrote."""
        self.net.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def train(config: TrainConfig, resume: bool = True, max_epochs: int | None = None,
          run_dir: Path | None = None, log_mlflow: bool = True,
          progress: bool = True) -> TrainResult:
    """Train a change network as ``config`` says.

    Args:
        config: the run's configuration.
        resume: continue from ``<run_dir>/last.ckpt`` when it exists.
        max_epochs: stop after this many epochs in all (default ``config.train.epochs``); the
            learning-rate schedule still spans ``config.train.epochs`` (or more, if larger).
        run_dir: override ``config.run_dir``.
        log_mlflow: track the run in mlflow.
        progress: show a progress bar.

    Returns:
        The run's outcome (rank 0 holds the full history).
    """
    state = RunState(started=time.monotonic())
    place = _place(config, max_epochs, run_dir)
    if resume:
        finished = finished_run(place.run_path, place.epochs, config.train.min_epochs,
                                config.train.patience, bool(config.val_data))
        if finished is not None:
            return finished
    if place.main:
        place.run_path.mkdir(parents=True, exist_ok=True)
    loaders = _loaders(config, place)
    trainee = _build_trainee(config, place, loaders.steps_per_epoch)
    last = place.run_path / "last.ckpt"
    if resume and last.exists():
        ckpt = load_checkpoint(last)
        trainee.restore(ckpt)
        state.resume_from(ckpt)
        set_rng_state(ckpt["rng"])
    mlflow = start_mlflow(config, state.mlflow_run_id) if (log_mlflow and place.main) else None
    state.mlflow_run_id = mlflow.active_run().info.run_id if mlflow else state.mlflow_run_id
    stopped = _run_epochs(config, place, loaders, trainee, state, mlflow, progress)
    return _finish(config, place, state, stopped, mlflow)


def _place(config: TrainConfig, max_epochs: int | None, run_dir: Path | None) -> _Place:
    """This process's place in the run; torch's CPU threads set and every RNG seeded."""
    tc = config.train
    rank, world = rank_and_world()
    place = _Place(Path(run_dir or config.run_dir),
                   max_epochs if max_epochs is not None else tc.epochs, rank, world,
                   training_device())
    if tc.threads > 0 and not place.cuda:
        torch.set_num_threads(tc.threads)
    seed_everything(config.seed + rank)
    return place


def _loaders(config: TrainConfig, place: _Place) -> Loaders:
    """The config's datasets as batches (validation on rank 0 only); the monitor checked."""
    train_set, val_set = build_datasets(config, place.main)
    if config.train.monitor not in MONITORS:
        raise InvalidOption(f"train.monitor must be one of {', '.join(MONITORS)}, not "
                            f"{config.train.monitor!r}.")
    return build_loaders(config, train_set, val_set, place.rank, place.world, place.cuda)


def _build_trainee(config: TrainConfig, place: _Place, steps_per_epoch: int) -> _Trainee:
    """The network (from ``[model]``, its init weights or checkpoint), optimiser and loss."""
    tc, device = config.train, place.device
    net_config = NetworkConfig(config.model.backbone, tuple(config.model.decoder_channels),
                               config.model.aux_buildings,
                               presence_head=config.model.presence_head,
                               presence_gate=config.model.presence_gate,
                               flip_average=config.model.flip_average)
    init = Path(config.model.init_weights) if config.model.init_weights else None
    net = SiameseChangeNet(net_config, init_weights=init,
                           pretrained=config.model.pretrained).to(device)
    net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if config.model.init_checkpoint:
        start = load_checkpoint(Path(config.model.init_checkpoint))
        if replace(NetworkConfig.from_dict(start["network"]),
                   presence_gate=net_config.presence_gate,
                   flip_average=net_config.flip_average) != net_config:
            raise UserInputError(f"{config.model.init_checkpoint} holds another architecture "
                                 "than [model]; use the same backbone and decoder_channels.")
        net.load_state_dict(start["model"])
    model: nn.Module = net
    if place.world > 1:
        model = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if place.cuda else None, find_unused_parameters=False)
    optimizer = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    # the schedule spans the config's epochs, so a run capped by max_epochs and resumed later
    # follows the same learning rates as an uninterrupted one
    total_steps = max(1, max(tc.epochs, place.epochs) * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=tc.lr,
                                                    total_steps=total_steps, pct_start=0.1)
    scaler = torch.amp.GradScaler("cuda", enabled=place.cuda)
    loss_fn = ChangeLoss(tc.pos_weight, tc.dice_weight, tc.aux_weight if net.aux else 0.0,
                         small_object_px=tc.small_object_m2 / config.contract.gsd_m ** 2,
                         small_object_boost=tc.small_object_boost,
                         exclusive_weight=tc.exclusive_weight)
    return _Trainee(net_config, net, model, optimizer, scheduler, scaler, loss_fn)


def _run_epochs(config: TrainConfig, place: _Place, loaders: Loaders, trainee: _Trainee,
                state: RunState, mlflow: Any, progress: bool) -> bool:
    """Epochs from where ``state`` stands to the last; True when it stopped early or ran out of
    time. Ctrl-C writes ``last.ckpt`` (to resume inside the epoch) and marks the run KILLED."""
    tc = config.train
    try:
        with _progress(progress and place.main) as bar:
            for epoch in range(state.epoch, place.epochs):
                state.epoch = epoch
                record, time_up, task = _train_epoch(config, place, loaders, trainee, state, bar)
                if place.main:
                    _validate_and_select(config, place, loaders, trainee, state, record, mlflow)
                state.history.append(record)
                if mlflow:
                    log_epoch_record(mlflow, record, epoch + 1)
                _save_last(config, place, trainee, state, epoch + 1, 0)
                if bar is not None and task is not None:
                    bar.remove_task(task)
                if place.main:
                    _print_epoch(record)
                # rank 0 alone validates: every rank follows its decision to stop
                if agree(place.world, loaders.val_loader is not None and epoch + 1 >= tc.min_epochs
                         and state.bad_epochs >= tc.patience, source=0):
                    return True
                if time_up:
                    return True
    except KeyboardInterrupt:
        _save_last(config, place, trainee, state, state.epoch, state.batch_in_epoch)
        if mlflow:
            mlflow.end_run(status="KILLED")
        raise
    return False


def _train_epoch(config: TrainConfig, place: _Place, loaders: Loaders, trainee: _Trainee,
                 state: RunState, bar: Any) -> tuple[dict[str, float], bool, Any]:
    """The steps of epoch ``state.epoch`` not done yet: its record (mean losses, learning rate),
    whether ``train.max_minutes`` ran out, and its progress task."""
    tc, epoch, epochs = config.train, state.epoch, place.epochs
    loaders.start_epoch(epoch, state.batch_in_epoch, tc.batch_size)
    trainee.model.train()
    task = bar.add_task(f"epoch {epoch + 1}/{epochs}", total=loaders.steps_per_epoch,
                        completed=state.batch_in_epoch) if bar else None
    sums: dict[str, float] = {}
    count = 0
    time_up = False
    for batch in loaders.loader:
        parts = _step(trainee.model, batch, place.device, place.cuda, trainee.optimizer,
                      trainee.scaler, trainee.loss_fn)
        trainee.scheduler.step()
        state.global_step += 1
        state.batch_in_epoch += 1
        count += 1
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v
        if bar is not None and task is not None:
            bar.update(task, advance=1, description=(
                f"epoch {epoch + 1}/{epochs} loss {parts['loss']:.3f}"))
        if tc.max_minutes > 0 and agree(place.world, state.elapsed() > tc.max_minutes * 60):
            time_up = True
            break
    record = {f"train_{k}": v / max(count, 1) for k, v in sums.items()}
    record["epoch"] = float(epoch + 1)
    record["lr"] = float(trainee.scheduler.get_last_lr()[0])
    state.batch_in_epoch = 0
    return record, time_up, task


def _validate_and_select(config: TrainConfig, place: _Place, loaders: Loaders,
                         trainee: _Trainee, state: RunState, record: dict[str, float],
                         mlflow: Any) -> None:
    """Rank 0 after an epoch: validate it into ``record`` and keep its weights in
    ``best.ckpt`` when it scores best (every epoch's, without validation data)."""
    tc, epoch = config.train, state.epoch + 1
    best = place.run_path / "best.ckpt"
    if loaders.val_loader is None:
        state.best_epoch, state.best_score, state.best_metrics = epoch, (0.0, 0.0), {}
        write_best(best, trainee.net_config, trainee.net.state_dict(), epoch, {},
                   state.mlflow_run_id, config)
        return
    min_area_px = max(1, int(round(tc.min_area_m2 / config.contract.gsd_m ** 2)))
    metrics, extras = evaluate(trainee.net, loaders.val_loader, place.device, tc.val_threshold,
                               min_area_px, amp=place.cuda, keep_samples=tc.sample_images)
    record.update({f"val_{k}": v for k, v in metrics.items()})
    epoch_score = score(metrics, tc.monitor)
    if epoch_score > state.best_score:
        state.best_epoch, state.best_score, state.best_metrics = epoch, epoch_score, metrics
        state.bad_epochs = 0
        write_best(best, trainee.net_config, trainee.net.state_dict(), epoch, metrics,
                   state.mlflow_run_id, config)
    else:
        state.bad_epochs += 1
    if mlflow:
        log_epoch_artifacts(mlflow, extras, config.contract, place.run_path, epoch)


def _save_last(config: TrainConfig, place: _Place, trainee: _Trainee, state: RunState,
               epoch: int, batch: int) -> None:
    """Rank 0: ``last.ckpt`` to resume at batch ``batch`` of epoch ``epoch`` (0-based)."""
    if place.main:
        write_last(place.run_path / "last.ckpt", trainee.net_config, trainee.states(), state,
                   epoch, batch, config)


def _finish(config: TrainConfig, place: _Place, state: RunState, stopped: bool,
            mlflow: Any) -> TrainResult:
    """The run's outcome; rank 0 exports ``best.ckpt`` to ONNX when asked, mlflow is closed."""
    wall = state.elapsed()
    result = TrainResult(place.run_path, len(state.history), state.global_step,
                         state.best_epoch, dict(state.best_metrics), state.history, stopped,
                         wall, state.mlflow_run_id)
    if place.main and config.train.export_onnx and (place.run_path / "best.ckpt").exists():
        from idou.training.export import export_checkpoint

        onnx_path = place.run_path / "model.onnx"
        export_checkpoint(place.run_path / "best.ckpt", onnx_path, config=config,
                          mlflow_run_id=state.mlflow_run_id, card=False, force=True)
        result.onnx_path = onnx_path
    if mlflow:
        end_tracking(mlflow, state.best_epoch, wall, result.onnx_path)
    return result


def _step(model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device, cuda: bool,
          optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loss_fn: ChangeLoss
          ) -> dict[str, float]:
    before = batch["before"].to(device, non_blocking=True).contiguous(
        memory_format=torch.channels_last)
    after = batch["after"].to(device, non_blocking=True).contiguous(
        memory_format=torch.channels_last)
    target = batch["target"].to(device, non_blocking=True)
    buildings = (batch["buildings_before"].to(device) if "buildings_before" in batch else None,
                 batch["buildings_after"].to(device) if "buildings_after" in batch else None)
    ctx = torch.autocast("cuda", dtype=torch.float16) if cuda else nullcontext()
    with ctx:
        logits, aux_b, aux_a = model(before, after, return_aux=True)
    loss, parts = loss_fn(logits.float(), target,
                          (None if aux_b is None else aux_b.float(),
                           None if aux_a is None else aux_a.float()), buildings)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return parts


def _progress(enabled: bool) -> Any:
    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    return Progress("[progress.description]{task.description}", BarColumn(),
                    MofNCompleteColumn(), TimeRemainingColumn(), transient=True)


def _print_epoch(record: dict[str, float]) -> None:
    from rich.console import Console

    keys = ["train_loss", "val_new_object_recall", "val_new_object_precision",
            "val_demolished_object_recall", "val_demolished_object_precision",
            "val_new_pixel_iou", "val_demolished_pixel_iou"]
    text = " ".join(f"{k}={metric_text(record, k)}" for k in keys if k in record)
    Console(stderr=True).print(f"epoch {int(record['epoch'])}: {text}", highlight=False)
