"""The training loop behind ``idou train``: seeded, resumable, tracked in mlflow, DDP-ready.

- Device: CUDA with mixed precision (``torch.autocast`` + ``GradScaler``) when a GPU is present,
  the CPU otherwise; channels-last on both (oneDNN's CPU convolutions run a training step of
  the default network about a quarter faster in that layout).
- Checkpoint ``<run_dir>/last.ckpt`` after every epoch (and on Ctrl-C): plain state dicts of the
  model, optimiser, scheduler and scaler, the epoch/step reached and the RNG states, written
  with ``torch.save`` and read back with ``torch.load(weights_only=True)``. ``best.ckpt`` keeps
  the weights of the best validation epoch. A run restarted with ``resume=True`` continues at
  the same epoch and step (batches an interrupted epoch already used are skipped).
- Early stopping on validation object recall (mean of new and demolished at
  ``train.val_threshold``, ``idou.geo.scoring.metrics``' object rules): ``train.monitor =
  "object_recall"`` ranks epochs by recall (object F1 breaks ties); ``"object_recall+f1"`` by
  recall + F1, so a run whose recall has saturated keeps improving its precision.
- mlflow: parameters, the config file, per-epoch losses and pixel/object metrics, the PR curve
  PNG, sample predictions, the exported ONNX model. Tracking URI: ``MLFLOW_TRACKING_URI`` or
  ``sqlite:///mlflow.db`` in the working directory.
- DDP: when ``torch.distributed`` is initialised (``torchrun``), the model is wrapped in
  ``DistributedDataParallel``, each rank draws its own share of chips, and only rank 0 logs,
  validates and writes checkpoints.
"""

from __future__ import annotations

import os
import random
import time
import typing
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from idou.errors import InputNotFound, InvalidOption, ModelContractError, UserInputError
from idou.inference.registry import ensure_experiment, tracking_uri
from idou.models.siamese import NetworkConfig, SiameseChangeNet
from idou.training.augment import PairedAugment
from idou.training.collate import Collate
from idou.training.config import DataSpec, TrainConfig, check_types
from idou.training.losses import ChangeLoss
from idou.training.sampling import BalancedSampler

CHANNELS = ("new", "demolished")
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


# ------------------------------------------------------------------------------------ datasets


def build_dataset(spec: DataSpec, contract_gsd: float) -> Any:
    """The dataset a ``[[train_data]]``/``[[val_data]]`` table names."""
    params = dict(spec.params)
    cls = _dataset_class(spec.kind)
    check_types(params, _hints(cls.__init__), f"the [[{spec.kind}]] data table")
    if spec.kind in ("synthetic", "footprints", "reviewed"):
        params.setdefault("gsd_m", contract_gsd)
    try:
        return cls(**params)
    except TypeError as exc:
        raise UserInputError(f"the [[{spec.kind}]] data table has a wrong key ({exc}); see "
                             "the dataset's documentation.") from exc


def _hints(function: Any) -> dict[str, Any]:
    """The resolved type hints of ``function`` ({} when a name only exists for type checkers)."""
    try:
        return typing.get_type_hints(function)
    except Exception:  # noqa: BLE001 - NameError and friends: then nothing is checked
        return {}


def _dataset_class(kind: str) -> Any:
    """The dataset class of a ``kind`` (imported only when used)."""
    if kind == "synthetic":
        from idou.training.datasets.synthetic import SyntheticChipDataset

        return SyntheticChipDataset
    if kind == "footprints":
        from idou.training.datasets.footprints import FootprintChipDataset

        return FootprintChipDataset
    if kind == "levir":
        from idou.training.datasets.levir import LevirCDDataset

        return LevirCDDataset
    if kind == "single_date":
        from idou.training.datasets.single_date import SingleDateChangeDataset

        return SingleDateChangeDataset
    if kind == "reviewed":
        from idou.training.datasets.reviewed import ReviewedDataset

        return ReviewedDataset
    raise InvalidOption(f"unknown dataset kind {kind!r}.")


def change_flags(dataset: Any) -> list[bool]:
    """Per-item 'holds change' flags (``dataset.has_change`` or read from the targets)."""
    flags = getattr(dataset, "has_change", None)
    if flags is not None:
        return [bool(f) for f in flags]
    return [bool((dataset[i]["target"] == 1).any()) for i in range(len(dataset))]


class _Concat(Dataset):
    def __init__(self, parts: Sequence[Any]) -> None:
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self.has_change = [f for p in self.parts for f in change_flags(p)]

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        k = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return self.parts[k][index - int(self.offsets[k])]


class _Augmented(Dataset):
    """Applies :class:`PairedAugment`, reseeded per epoch so runs are reproducible."""

    def __init__(self, base: Any, make: Any, seed: int) -> None:
        self.base, self.make, self.seed = base, make, seed
        self.augment = make(seed)

    def set_epoch(self, epoch: int) -> None:
        self.augment = self.make(self.seed * 1000 + epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return self.augment(self.base[index])


class _SkipSampler(Sampler[int]):
    """The first ``skip`` indices of an epoch left out (resuming inside an epoch)."""

    def __init__(self, inner: BalancedSampler) -> None:
        self.inner, self.skip = inner, 0

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.skip)

    def __iter__(self) -> Iterator[int]:
        it = iter(self.inner)
        for _ in range(self.skip):
            next(it, None)
        return it


# ------------------------------------------------------------------------------------ helpers


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    np_state: Any = np.random.get_state()
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                             "numpy": torch.from_numpy(np.asarray(np_state[1], np.int64)),
                             "numpy_pos": int(np_state[2])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
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


def network_from_checkpoint(ckpt: dict[str, Any]) -> SiameseChangeNet:
    """Rebuild the network of a checkpoint with its weights (eval mode)."""
    net = SiameseChangeNet(NetworkConfig.from_dict(ckpt["network"]))
    net.load_state_dict(ckpt["model"])
    return net.eval()


def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _device() -> torch.device:
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


# --------------------------------------------------------------------------------- validation


def evaluate(net: nn.Module, loader: DataLoader, device: torch.device, threshold: float,
             min_area_px: int, amp: bool = False, keep_samples: int = 0
             ) -> tuple[dict[str, float], dict[str, Any]]:
    """Pixel and object metrics of ``net`` over ``loader`` (object rules of geo.scoring.metrics).

    Returns:
        ``(metrics, extras)``; extras hold subsampled (prob, truth) pairs per channel for the PR
        curve and up to ``keep_samples`` sample items with their predictions.
    """
    from idou.geo.scoring.metrics import ObjectScores, object_scores_from_masks, pixel_scores

    net.eval()
    objects = [ObjectScores(0, 0, 0, 0), ObjectScores(0, 0, 0, 0)]
    tp = np.zeros(2)
    fp = np.zeros(2)
    fn = np.zeros(2)
    pr_probs: list[list[np.ndarray]] = [[], []]
    pr_truth: list[list[np.ndarray]] = [[], []]
    samples: list[dict[str, np.ndarray]] = []
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for batch in loader:
            before = batch["before"].to(device)
            after = batch["after"].to(device)
            ctx = torch.autocast("cuda", dtype=torch.float16) if amp else nullcontext()
            with ctx:
                probs = torch.sigmoid(net(before, after).float()).cpu().numpy()
            target = batch["target"].numpy()
            for i in range(probs.shape[0]):
                for ch in range(2):
                    ignore = target[i, ch] == 255
                    truth = target[i, ch] == 1
                    pred = (probs[i, ch] >= threshold) & ~ignore
                    objects[ch] = objects[ch] + object_scores_from_masks(
                        pred, truth, min_area_px=min_area_px, ignore=ignore)
                    px = pixel_scores(pred, truth, ignore)
                    tp[ch] += px.tp
                    fp[ch] += px.fp
                    fn[ch] += px.fn
                    valid = ~ignore
                    pick = rng.random(valid.sum()) < 0.05
                    pr_probs[ch].append(probs[i, ch][valid][pick])
                    pr_truth[ch].append(truth[valid][pick])
                if len(samples) < keep_samples:
                    samples.append({"before": batch["before"][i].numpy(),
                                    "after": batch["after"][i].numpy(),
                                    "target": target[i], "prob": probs[i]})
    metrics: dict[str, float] = {}
    for ch, name in enumerate(CHANNELS):
        s = objects[ch]
        metrics[f"{name}_object_recall"] = s.recall
        metrics[f"{name}_object_precision"] = s.precision
        metrics[f"{name}_object_f1"] = s.f1
        metrics[f"{name}_n_true"] = float(s.n_true)
        p = tp[ch] / max(tp[ch] + fp[ch], 1)
        r = tp[ch] / max(tp[ch] + fn[ch], 1)
        metrics[f"{name}_pixel_precision"] = float(p)
        metrics[f"{name}_pixel_recall"] = float(r)
        metrics[f"{name}_pixel_f1"] = float(0 if p + r == 0 else 2 * p * r / (p + r))
        metrics[f"{name}_pixel_iou"] = float(tp[ch] / max(tp[ch] + fp[ch] + fn[ch], 1))
    metrics["object_recall"] = float(np.mean([metrics[f"{n}_object_recall"] for n in CHANNELS]))
    metrics["object_f1"] = float(np.mean([metrics[f"{n}_object_f1"] for n in CHANNELS]))
    extras = {"pr": [(np.concatenate(pr_probs[c]) if pr_probs[c] else np.zeros(0),
                      np.concatenate(pr_truth[c]) if pr_truth[c] else np.zeros(0, bool))
                     for c in range(2)],
              "samples": samples}
    return metrics, extras


def _pr_curve_png(pr: list[tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for (prob, truth), name in zip(pr, CHANNELS, strict=True):
        if truth.sum() == 0:
            continue
        order = np.argsort(-prob)
        hits = truth[order].astype(np.float64)
        tp = np.cumsum(hits)
        precision = tp / np.arange(1, len(hits) + 1)
        recall = tp / hits.sum()
        ax.plot(recall, precision, label=name)
    ax.set_xlabel("pixel recall")
    ax.set_ylabel("pixel precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend()
    ax.set_title("validation PR curve (pixels)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _samples_png(samples: list[dict[str, np.ndarray]], mean: Sequence[float],
                 std: Sequence[float], path: Path) -> None:
    from PIL import Image

    m = np.asarray(mean, np.float32)[:, None, None]
    s = np.asarray(std, np.float32)[:, None, None]
    rows = []
    for item in samples:
        def img(x: np.ndarray) -> np.ndarray:
            rgb = np.clip((x[:3] * s + m) * 255, 0, 255).astype(np.uint8)
            return np.ascontiguousarray(rgb.transpose(1, 2, 0))

        t = item["target"]
        truth = np.stack([(t[0] == 1) * 255, (t[1] == 1) * 255, (t[0] == 255) * 90], -1)
        p = item["prob"]
        pred = np.stack([p[0] * 255, p[1] * 255, np.zeros_like(p[0])], -1)
        rows.append(np.concatenate([img(item["before"]), img(item["after"]),
                                    truth.astype(np.uint8), pred.astype(np.uint8)], 1))
    if rows:
        Image.fromarray(np.concatenate(rows, 0)).save(path)


# ---------------------------------------------------------------------------------- training


MONITORS = ("object_recall", "object_recall+f1")


def _score(metrics: dict[str, float], monitor: str) -> tuple[float, float]:
    """Validation score to maximise: object recall first (F1 breaks ties), or their sum."""
    recall, f1 = metrics.get("object_recall", 0.0), metrics.get("object_f1", 0.0)
    if monitor == "object_recall+f1":
        return (round(recall + f1, 6), f1)
    return (round(recall, 6), f1)


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
    started = time.monotonic()
    tc = config.train
    epochs = max_epochs if max_epochs is not None else tc.epochs
    run_path = Path(run_dir or config.run_dir)
    rank, world = _distributed()
    main = rank == 0
    device = _device()
    cuda = device.type == "cuda"
    if tc.threads > 0 and not cuda:
        torch.set_num_threads(tc.threads)
    seed_everything(config.seed + rank)
    if resume:
        finished = _finished_run(run_path, epochs, tc.min_epochs, tc.patience,
                                 bool(config.val_data))
        if finished is not None:
            return finished
    if main:
        run_path.mkdir(parents=True, exist_ok=True)

    contract = config.contract
    train_set = _Concat([build_dataset(s, contract.gsd_m) for s in config.train_data])
    val_set = (_Concat([build_dataset(s, contract.gsd_m) for s in config.val_data])
               if config.val_data and main else None)
    if tc.monitor not in MONITORS:
        raise InvalidOption(f"train.monitor must be one of {', '.join(MONITORS)}, not "
                            f"{tc.monitor!r}.")
    if len(train_set) == 0:
        raise UserInputError("the training data yields no chips; check [[train_data]].")
    aug = config.augment
    data: Any = train_set
    if aug.enabled:
        def make(seed: int) -> PairedAugment:
            return PairedAugment(aug.max_shift_px, aug.shift_p, aug.photometric,
                                 aug.scale_rotate, seed, aug.realism, aug.swap_p)
        data = _Augmented(train_set, make, config.seed + 7919 * rank)
    sampler = BalancedSampler(train_set.has_change, tc.chips_per_epoch, tc.change_fraction,
                              config.seed, rank, world)
    skipper = _SkipSampler(sampler)
    collate = Collate(contract.mean, contract.std)
    loader = DataLoader(data, batch_size=tc.batch_size, sampler=skipper, collate_fn=collate,
                        num_workers=tc.num_workers, drop_last=True,
                        persistent_workers=False, pin_memory=cuda)
    val_loader = (DataLoader(val_set, batch_size=tc.batch_size, shuffle=False,
                             collate_fn=collate, num_workers=0) if val_set is not None else None)
    steps_per_epoch = max(1, len(sampler) // tc.batch_size)

    net_config = NetworkConfig(config.model.backbone, tuple(config.model.decoder_channels),
                               config.model.aux_buildings,
                               presence_head=config.model.presence_head,
                               presence_gate=config.model.presence_gate)
    init = Path(config.model.init_weights) if config.model.init_weights else None
    net = SiameseChangeNet(net_config, init_weights=init,
                           pretrained=config.model.pretrained).to(device)
    net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if config.model.init_checkpoint:
        start = load_checkpoint(Path(config.model.init_checkpoint))
        if replace(NetworkConfig.from_dict(start["network"]),
                   presence_gate=net_config.presence_gate) != net_config:
            raise UserInputError(f"{config.model.init_checkpoint} holds another architecture "
                                 "than [model]; use the same backbone and decoder_channels.")
        net.load_state_dict(start["model"])
    model: nn.Module = net
    if world > 1:
        model = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if cuda else None, find_unused_parameters=False)
    optimizer = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    # the schedule spans the config's epochs, so a run capped by max_epochs and resumed later
    # follows the same learning rates as an uninterrupted one
    total_steps = max(1, max(tc.epochs, epochs) * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=tc.lr,
                                                    total_steps=total_steps, pct_start=0.1)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    loss_fn = ChangeLoss(tc.pos_weight, tc.dice_weight, tc.aux_weight if net.aux else 0.0,
                         small_object_px=tc.small_object_m2 / config.contract.gsd_m ** 2,
                         small_object_boost=tc.small_object_boost,
                         exclusive_weight=tc.exclusive_weight)

    start_epoch, batch_in_epoch, global_step = 0, 0, 0
    best = {"epoch": -1, "score": (-1.0, -1.0), "metrics": {}}
    history: list[dict[str, float]] = []
    run_id: str | None = None
    bad_epochs = 0
    elapsed_before = 0.0
    last = run_path / "last.ckpt"
    if resume and last.exists():
        ckpt = load_checkpoint(last)
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, batch_in_epoch = int(ckpt["epoch"]), int(ckpt["batch_in_epoch"])
        global_step = int(ckpt["global_step"])
        best = {"epoch": int(ckpt["best_epoch"]),
                "score": tuple(ckpt["best_score"]), "metrics": dict(ckpt["best_metrics"])}
        history = [dict(h) for h in ckpt["history"]]
        bad_epochs = int(ckpt["bad_epochs"])
        run_id = ckpt.get("mlflow_run_id")
        elapsed_before = float(ckpt.get("elapsed_s", 0.0))
        _set_rng_state(ckpt["rng"])

    mlflow = _start_mlflow(config, run_id) if (log_mlflow and main) else None
    run_id = mlflow.active_run().info.run_id if mlflow else run_id

    def save(epoch: int, batch: int) -> None:
        if not main:
            return
        state = {
            "format": CHECKPOINT_FORMAT, "network": net_config.to_dict(),
            "model": net.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "epoch": epoch, "batch_in_epoch": batch, "global_step": global_step,
            "best_epoch": int(best["epoch"]),  # type: ignore[call-overload]
            "best_score": list(best["score"]),  # type: ignore[call-overload]
            "best_metrics": dict(best["metrics"]),  # type: ignore[call-overload]
            "history": history, "bad_epochs": bad_epochs, "mlflow_run_id": run_id,
            "elapsed_s": elapsed_before + time.monotonic() - started,
            "rng": _rng_state(), "config": _plain(config.to_dict()),
        }
        tmp = last.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(last)

    min_area_px = max(1, int(round(tc.min_area_m2 / contract.gsd_m ** 2)))
    stopped_early = False
    time_up = False
    epoch = start_epoch
    progress_bar = _progress(progress and main)
    try:
        with progress_bar as bar:
            for epoch in range(start_epoch, epochs):
                sampler.set_epoch(epoch)
                if isinstance(data, _Augmented):
                    data.set_epoch(epoch)
                skipper.skip = batch_in_epoch * tc.batch_size
                model.train()
                task = bar.add_task(f"epoch {epoch + 1}/{epochs}", total=steps_per_epoch,
                                    completed=batch_in_epoch) if bar else None
                sums: dict[str, float] = {}
                count = 0
                for batch in loader:
                    parts = _step(model, batch, device, cuda, optimizer, scaler, loss_fn)
                    scheduler.step()
                    global_step += 1
                    batch_in_epoch += 1
                    count += 1
                    for k, v in parts.items():
                        sums[k] = sums.get(k, 0.0) + v
                    if bar is not None and task is not None:
                        bar.update(task, advance=1, description=(
                            f"epoch {epoch + 1}/{epochs} loss {parts['loss']:.3f}"))
                    if tc.max_minutes > 0 and _agree(world, (
                            elapsed_before + time.monotonic() - started) > tc.max_minutes * 60):
                        time_up = True
                        break
                record = {f"train_{k}": v / max(count, 1) for k, v in sums.items()}
                record["epoch"] = float(epoch + 1)
                record["lr"] = float(scheduler.get_last_lr()[0])
                batch_in_epoch = 0
                if main and val_loader is not None:
                    metrics, extras = evaluate(net, val_loader, device, tc.val_threshold,
                                               min_area_px, amp=cuda,
                                               keep_samples=tc.sample_images)
                    record.update({f"val_{k}": v for k, v in metrics.items()})
                    score = _score(metrics, tc.monitor)
                    if score > best["score"]:  # type: ignore[operator]
                        best = {"epoch": epoch + 1, "score": score, "metrics": metrics}
                        bad_epochs = 0
                        torch.save({"format": CHECKPOINT_FORMAT, "network": net_config.to_dict(),
                                    "model": net.state_dict(), "epoch": epoch + 1,
                                    "metrics": metrics, "mlflow_run_id": run_id,
                                    "config": _plain(config.to_dict())}, run_path / "best.ckpt")
                    else:
                        bad_epochs += 1
                    if mlflow:
                        _log_epoch_artifacts(mlflow, extras, contract, run_path, epoch + 1)
                elif main:
                    best = {"epoch": epoch + 1, "score": (0.0, 0.0), "metrics": {}}
                    torch.save({"format": CHECKPOINT_FORMAT, "network": net_config.to_dict(),
                                "model": net.state_dict(), "epoch": epoch + 1, "metrics": {},
                                "mlflow_run_id": run_id, "config": _plain(config.to_dict())},
                               run_path / "best.ckpt")
                history.append(record)
                if mlflow:
                    mlflow.log_metrics({k: v for k, v in record.items() if k != "epoch"},
                                       step=epoch + 1)
                save(epoch + 1, 0)
                if bar is not None and task is not None:
                    bar.remove_task(task)
                if main:
                    _print_epoch(record)
                # rank 0 alone validates: every rank follows its decision to stop
                if _agree(world, val_loader is not None and epoch + 1 >= tc.min_epochs
                          and bad_epochs >= tc.patience, source=0):
                    stopped_early = True
                    break
                if time_up:
                    break
    except KeyboardInterrupt:
        save(epoch, batch_in_epoch)
        if mlflow:
            mlflow.end_run(status="KILLED")
        raise

    wall = elapsed_before + time.monotonic() - started
    result = TrainResult(run_path, len(history), global_step, int(best["epoch"]),  # type: ignore[call-overload]
                         dict(best["metrics"]), history, stopped_early or time_up,  # type: ignore[call-overload]
                         wall, run_id)
    if main and tc.export_onnx and (run_path / "best.ckpt").exists():
        from idou.training.export import export_checkpoint

        onnx_path = run_path / "model.onnx"
        export_checkpoint(run_path / "best.ckpt", onnx_path, config=config,
                          mlflow_run_id=run_id, card=False, force=True)
        result.onnx_path = onnx_path
        if mlflow:
            mlflow.log_artifact(str(onnx_path), artifact_path="model")
    if mlflow:
        mlflow.log_metrics({"best_epoch": float(best["epoch"]), "wall_s": wall})  # type: ignore[arg-type]
        mlflow.end_run()
    return result


def _finished_run(run_path: Path, epochs: int, min_epochs: int, patience: int,
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


def _agree(world: int, flag: bool, source: int | None = None) -> bool:
    """One decision for all DDP ranks: rank ``source``'s flag, or any rank's when None."""
    if world <= 1:
        return flag
    on_gpu = dist.get_backend() == "nccl"
    value = torch.tensor([1.0 if flag else 0.0],
                         device=torch.device("cuda", torch.cuda.current_device()) if on_gpu
                         else torch.device("cpu"))
    if source is None:
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    else:
        dist.broadcast(value, src=source)
    return bool(value.item() > 0)


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


def _plain(value: Any) -> Any:
    """Config as plain containers (loadable with weights_only)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _progress(enabled: bool) -> Any:
    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    return Progress("[progress.description]{task.description}", BarColumn(),
                    MofNCompleteColumn(), TimeRemainingColumn(), transient=True)


NO_OBJECTS = "n/a (no objects)"


def metric_text(metrics: dict[str, float], key: str) -> str:
    """A metric as printed: recall and IoU of a channel with no true objects are n/a.

    Keys are ``[val_]<channel>_<metric>``; with no true objects recall reads 1.000 and IoU
    0.000, which measure nothing.
    """
    for channel in CHANNELS:
        for prefix in ("val_", ""):
            if (key.startswith(f"{prefix}{channel}_") and key.endswith(("_recall", "_iou"))
                    and metrics.get(f"{prefix}{channel}_n_true") == 0):
                return NO_OBJECTS
    return f"{metrics[key]:.3f}"


def _print_epoch(record: dict[str, float]) -> None:
    from rich.console import Console

    keys = ["train_loss", "val_new_object_recall", "val_new_object_precision",
            "val_demolished_object_recall", "val_demolished_object_precision",
            "val_new_pixel_iou", "val_demolished_pixel_iou"]
    text = " ".join(f"{k}={metric_text(record, k)}" for k in keys if k in record)
    Console(stderr=True).print(f"epoch {int(record['epoch'])}: {text}", highlight=False)


def _start_mlflow(config: TrainConfig, run_id: str | None) -> Any:
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


def _log_epoch_artifacts(mlflow: Any, extras: dict[str, Any], contract: Any, run_path: Path,
                         epoch: int) -> None:
    pr_png = run_path / "pr_curve.png"
    _pr_curve_png(extras["pr"], pr_png)
    mlflow.log_artifact(str(pr_png), artifact_path=f"epochs/{epoch:03d}")
    if extras["samples"]:
        png = run_path / "samples.png"
        _samples_png(extras["samples"], contract.mean, contract.std, png)
        mlflow.log_artifact(str(png), artifact_path=f"epochs/{epoch:03d}")

