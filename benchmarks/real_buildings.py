"""Real-imagery benchmark: how well the training stack learns change from real aerial tiles.

Trains a siamese change network for a bounded time on change pairs made from the real
single-date building masks of ``shared/data/real_buildings/robosat/training`` (buildings removed
or pasted, STAR pairs, unchanged tiles; see :mod:`idou.training.datasets.single_date`), picks
per-channel thresholds on pairs from the ``validation`` split for a recall target, and reports
object recall and precision (the survey's rules of :mod:`idou.geo.scoring.metrics`: found at >= 25%
cover, false alarm under 25% overlap, objects under the minimum area left out) plus pixel scores
on pairs made from the ``evaluation`` split.

The data carries AGPL-3.0 terms: the model trained here is a measurement, never shipped; it is
written only under ``--out`` (default /tmp) and nothing of it belongs in the repository. Its
checkpoint, ``OUT/real_buildings.ckpt``, carries the run's training config, so
``idou export OUT/real_buildings.ckpt -o OUT/real_buildings.onnx`` exports it with a card that
names the robosat paths and their AGPL-3.0 terms.

Example (1 CPU thread, 15 minutes of training)::

    .venv/bin/python benchmarks/real_buildings.py --minutes 15 --threads 1 \
        --out /tmp/idou_real_buildings
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "real_buildings" / "robosat"
GSD_M = 0.54  # zoom 18 at Xiamen's latitude (see shared/data/README.md)
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
CHANNELS = ("new", "demolished")
# Evaluation pairs: realistic edits only (no whole-scene tile pairs), a quarter unchanged.
EVAL_WEIGHTS = {"unchanged": 0.25, "new_by_removal": 0.25, "demolished_by_removal": 0.25,
                "new_by_paste": 0.125, "demolished_by_paste": 0.125}
THRESHOLDS = [round(t, 3) for t in np.arange(0.05, 0.951, 0.05)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="robosat folder with training/, validation/, evaluation/")
    p.add_argument("--out", type=Path, default=Path("/tmp/idou_real_buildings"))
    p.add_argument("--minutes", type=float, default=15.0, help="training wall-time budget")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--backbone", default="mobilenet_v3_large")
    p.add_argument("--decoder-channels", default="64,48,32,24,16",
                   help="decoder widths at strides 32..2")
    p.add_argument("--crop", type=int, default=128,
                   help="train on random crops of this side (0 = whole 256 px tiles)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--pairs-per-tile", type=int, default=4)
    p.add_argument("--eval-pairs-per-tile", type=int, default=2)
    p.add_argument("--recall-target", type=float, default=0.869)
    p.add_argument("--min-area-m2", type=float, default=8.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0 = time)")
    return p.parse_args(argv)


def build_datasets(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    from idou.training.datasets.single_date import SingleDateChangeDataset

    for split in ("training", "validation", "evaluation"):
        if not (args.data / split).is_dir():
            sys.exit(f"{args.data / split} is missing; pass --data PATH/TO/robosat")
    train = SingleDateChangeDataset(args.data / "training", pairs_per_tile=args.pairs_per_tile,
                                    seed=args.seed)
    val = SingleDateChangeDataset(args.data / "validation", weights=EVAL_WEIGHTS,
                                  pairs_per_tile=args.eval_pairs_per_tile, seed=10_000)
    test = SingleDateChangeDataset(args.data / "evaluation", weights=EVAL_WEIGHTS,
                                   pairs_per_tile=args.eval_pairs_per_tile, seed=20_000)
    return train, val, test


def _training_loader(args: argparse.Namespace, dataset: Any) -> tuple[Any, Any]:
    """Batches of augmented random crops, balanced towards change; (loader, sampler)."""
    import torch
    from torch.utils.data import DataLoader

    from idou.training.augment import PairedAugment
    from idou.training.collate import Collate
    from idou.training.sampling import BalancedSampler

    augment = PairedAugment(seed=args.seed)
    rng = np.random.default_rng(args.seed)

    class Augmented(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return len(dataset)

        def __getitem__(self, i: int) -> dict[str, np.ndarray]:
            return augment(random_crop(dataset[i], args.crop, rng))

    sampler = BalancedSampler(dataset.has_change, change_fraction=0.7, seed=args.seed)
    loader = DataLoader(Augmented(), batch_size=args.batch_size, sampler=sampler,
                        collate_fn=Collate(MEAN, STD), drop_last=True)
    return loader, sampler


def train(args: argparse.Namespace, dataset: Any) -> tuple[Any, dict[str, Any]]:
    """Train for ``args.minutes`` (cosine learning rate over the time budget)."""
    import torch

    from idou.models.siamese import NetworkConfig, SiameseChangeNet
    from idou.training.losses import ChangeLoss

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    decoder = tuple(int(c) for c in args.decoder_channels.split(","))
    net = SiameseChangeNet(NetworkConfig(backbone=args.backbone, decoder_channels=decoder,
                                         aux_buildings=True)).to(device)
    optimiser = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    loss_fn = ChangeLoss(pos_weight=3.0, dice_weight=1.0, aux_weight=0.2)
    loader, sampler = _training_loader(args, dataset)
    budget = args.minutes * 60.0
    start = time.monotonic()
    step, epoch, losses = 0, 0, []
    history: list[dict[str, float]] = []
    net.train()
    done = False
    while not done:
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        for batch in loader:
            elapsed = time.monotonic() - start
            if elapsed >= budget or (args.max_steps and step >= args.max_steps):
                done = True
                break
            lr = args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * elapsed / budget)))
            for group in optimiser.param_groups:
                group["lr"] = lr
            b = {k: v.to(device) for k, v in batch.items()}
            logits, aux_b, aux_a = net(b["before"], b["after"], return_aux=True)
            loss, parts = loss_fn(logits, b["target"], (aux_b, aux_a),
                                  (b.get("buildings_before"), b.get("buildings_after")))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(parts["loss"])
            step += 1
            if step % 25 == 0:
                mean = float(np.mean(losses[-25:]))
                history.append({"step": step, "minutes": elapsed / 60, "loss": mean})
                print(f"step {step:5d}  {elapsed / 60:5.1f} min  epoch {epoch}  loss {mean:.4f}"
                      f"  lr {lr:.2e}", flush=True)
        epoch += 1
    info = {"steps": step, "epochs_started": epoch,
            "train_minutes": (time.monotonic() - start) / 60,
            "pairs_seen": step * args.batch_size,
            "loss_first_25": float(np.mean(losses[:25])) if losses else float("nan"),
            "loss_last_25": float(np.mean(losses[-25:])) if losses else float("nan"),
            "history": history}
    return net, info


def random_crop(item: dict[str, np.ndarray], size: int, rng: np.random.Generator
                ) -> dict[str, np.ndarray]:
    """A ``size`` crop of every array of ``item``; on a change pixel 80% of the time."""
    height, width = item["before"].shape[:2]
    if size <= 0 or size >= min(height, width):
        return item
    rows, cols = np.nonzero((item["target"] == 1).any(axis=0))
    if rows.size and rng.random() < 0.8:
        k = int(rng.integers(rows.size))
        r = int(np.clip(rows[k] - rng.integers(size), 0, height - size))
        c = int(np.clip(cols[k] - rng.integers(size), 0, width - size))
    else:
        r, c = int(rng.integers(height - size + 1)), int(rng.integers(width - size + 1))
    out = {}
    for key, value in item.items():
        out[key] = (value[:, r:r + size, c:c + size] if key == "target"
                    else value[r:r + size, c:c + size])
    return out


def predict(net: Any, dataset: Any, device: str, batch_size: int = 8
            ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Probabilities (2×H×W float32) and targets of every item of ``dataset``, no augmentation."""
    import torch

    from idou.training.collate import Collate

    collate = Collate(MEAN, STD)
    net.eval()
    out: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    with torch.inference_mode():
        for s in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(s, min(s + batch_size, len(dataset)))]
            b = collate(items)
            prob = torch.sigmoid(net(b["before"].to(device), b["after"].to(device)))
            out.extend(p.cpu().numpy() for p in prob)
            targets.extend(item["target"] for item in items)
    return out, targets


def score(probs: list[np.ndarray], targets: list[np.ndarray], min_area_px: int
          ) -> dict[str, Any]:
    """Pooled object curves and pixel scores per channel (ignore band left out)."""
    from idou.geo.scoring.metrics import ObjectScores, PixelScores, pixel_scores, sweep_thresholds

    result: dict[str, Any] = {}
    for c, name in enumerate(CHANNELS):
        curve = {t: ObjectScores(0, 0, 0, 0) for t in THRESHOLDS}
        pixels = {t: PixelScores(0, 0, 0) for t in (0.5,)}
        for prob, both in zip(probs, targets, strict=True):
            target = both[c]
            valid = target != 255
            truth = target == 1
            for t, s in sweep_thresholds(prob[c], truth, THRESHOLDS, min_area_px=min_area_px,
                                         valid=valid):
                curve[t] = curve[t] + s
            pixels[0.5] = pixels[0.5] + pixel_scores(prob[c] >= 0.5, truth, ignore=~valid)
        result[name] = {"curve": curve, "pixel@0.5": pixels[0.5]}
    return result


def per_kind(probs: list[np.ndarray], targets: list[np.ndarray], kinds: list[str],
             thresholds: dict[str, float], min_area_px: int) -> dict[str, dict[str, float]]:
    """Object scores at the chosen thresholds split by pair kind (where the misses come from)."""
    from idou.geo.scoring.metrics import ObjectScores, object_scores_from_masks

    table: dict[str, dict[str, float]] = {}
    for kind in sorted(set(kinds)):
        for c, name in enumerate(CHANNELS):
            total = ObjectScores(0, 0, 0, 0)
            for i, prob in enumerate(probs):
                if kinds[i] != kind:
                    continue
                target = targets[i][c]
                total = total + object_scores_from_masks(
                    prob[c] >= thresholds[name], target == 1, min_area_px=min_area_px,
                    ignore=target == 255)
            table[f"{kind}/{name}"] = total.as_dict()
    return table


def run_config(args: argparse.Namespace) -> Any:
    """The run as an idou training config (stored in the checkpoint; its card reads it)."""
    from idou.training.config import ContractSection, DataSpec, ModelSection, TrainConfig

    decoder = [int(c) for c in args.decoder_channels.split(",")]
    return TrainConfig(
        name="idou-real-buildings", seed=args.seed, run_dir=str(args.out),
        experiment="idou-real-buildings",
        model=ModelSection(backbone=args.backbone, decoder_channels=decoder, aux_buildings=True),
        contract=ContractSection(mean=list(MEAN), std=list(STD), gsd_m=GSD_M, tile_size=256,
                                 tile_overlap=32, model_name="idou-real-buildings",
                                 model_version="0.0.0+measurement"),
        train_data=[DataSpec("single_date", {"root": str(args.data / "training"),
                                             "pairs_per_tile": args.pairs_per_tile,
                                             "seed": args.seed})],
        val_data=[DataSpec("single_date", {"root": str(args.data / "validation"),
                                           "pairs_per_tile": args.eval_pairs_per_tile,
                                           "weights": dict(EVAL_WEIGHTS), "seed": 10_000})])


def save_checkpoint(net: Any, args: argparse.Namespace, info: dict[str, Any]) -> Path:
    """``OUT/real_buildings.ckpt`` in ``idou train``'s format, so ``idou export`` takes it."""
    import torch

    from idou.training.checkpoints import CHECKPOINT_FORMAT, plain_data

    path = args.out / "real_buildings.ckpt"
    torch.save({"format": CHECKPOINT_FORMAT, "network": net.config.to_dict(),
                "model": {k: v.cpu() for k, v in net.state_dict().items()},
                "epoch": int(info.get("epochs_started", 0)), "metrics": {},
                "mlflow_run_id": None, "config": plain_data(run_config(args).to_dict())}, path)
    return path


def _pick_thresholds(val_scores: dict[str, Any], recall_target: float
                     ) -> tuple[dict[str, float], dict[str, Any]]:
    """Per channel, the validation threshold for the recall target; (thresholds, what it gave)."""
    from idou.geo.scoring.metrics import pick_threshold, reaches

    thresholds: dict[str, float] = {}
    picked: dict[str, Any] = {}
    for name in CHANNELS:
        t, s = pick_threshold(list(val_scores[name]["curve"].items()), recall_target)
        thresholds[name] = t
        picked[name] = {"threshold": t, "reached": reaches(s, recall_target), **s.as_dict()}
    return thresholds, picked


def _evaluation(test_scores: dict[str, Any], thresholds: dict[str, float]) -> dict[str, Any]:
    """Evaluation scores per channel: at the tuned threshold, at 0.5, and the whole curve."""
    evaluation: dict[str, Any] = {}
    for name in CHANNELS:
        curve = test_scores[name]["curve"]
        evaluation[name] = {
            "at_tuned_threshold": {"threshold": thresholds[name],
                                   **curve[thresholds[name]].as_dict()},
            "at_0.5": curve[0.5].as_dict(),
            "pixel_at_0.5": test_scores[name]["pixel@0.5"].as_dict(),
            "pr_curve": [{"threshold": t, "recall": s.recall, "precision": s.precision}
                         for t, s in curve.items()],
        }
    return evaluation


def _run_facts(args: argparse.Namespace, argv: list[str] | None, min_area_px: int,
               datasets: tuple[Any, Any, Any]) -> dict[str, Any]:
    """The report's head: command, data, settings and pair counts."""
    train_ds, val_ds, test_ds = datasets
    return {
        "benchmark": "real_buildings",
        "command": "benchmarks/real_buildings.py " + " ".join(argv if argv is not None
                                                              else sys.argv[1:]),
        "data": str(args.data), "gsd_m": GSD_M, "min_area_m2": args.min_area_m2,
        "min_area_px": min_area_px, "recall_target": args.recall_target,
        "model": {"backbone": args.backbone, "decoder_channels": args.decoder_channels,
                  "pretrained": False, "aux_buildings": True, "train_crop": args.crop},
        "threads": args.threads, "device": args.device, "batch_size": args.batch_size,
        "lr": args.lr, "machine": platform.processor() or platform.machine(),
        "pairs": {"train": len(train_ds), "train_with_change": int(sum(train_ds.has_change)),
                  "validation": len(val_ds), "evaluation": len(test_ds),
                  "evaluation_kinds": {k: test_ds.kinds.count(k) for k in set(test_ds.kinds)}},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from idou.geo.scoring.metrics import min_area_pixels

    torch.set_num_threads(max(1, args.threads))
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    train_ds, val_ds, test_ds = build_datasets(args)
    print(f"pairs: train {len(train_ds)} ({sum(train_ds.has_change)} with change), "
          f"validation {len(val_ds)}, evaluation {len(test_ds)}", flush=True)
    net, info = train(args, train_ds)
    checkpoint = save_checkpoint(net, args, info)
    print(f"checkpoint: {checkpoint} (export: idou export {checkpoint} -o "
          f"{args.out / 'real_buildings.onnx'})", flush=True)
    min_area_px = min_area_pixels(args.min_area_m2, GSD_M)

    val_scores = score(*predict(net, val_ds, args.device), min_area_px)
    thresholds, picked = _pick_thresholds(val_scores, args.recall_target)
    test_probs, test_targets = predict(net, test_ds, args.device)
    test_scores = score(test_probs, test_targets, min_area_px)
    report = {
        **_run_facts(args, argv, min_area_px, (train_ds, val_ds, test_ds)),
        "training": info,
        "validation_pick": picked,
        "evaluation": _evaluation(test_scores, thresholds),
        "evaluation_by_kind": per_kind(test_probs, test_targets, test_ds.kinds, thresholds,
                                       min_area_px),
        "total_minutes": (time.monotonic() - t0) / 60,
        "checkpoint": str(checkpoint),
    }
    (args.out / "real_buildings.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    (args.out / "real_buildings.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    return 0


def markdown(r: dict[str, Any]) -> str:
    """The report as a short Markdown table."""
    lines = [
        "# Real-imagery benchmark (robosat, Xiamen, zoom 18)",
        "",
        f"Command: `{r['command']}`",
        "",
        f"Model: {r['model']['backbone']} siamese, no pretrained weights; trained "
        f"{r['training']['train_minutes']:.1f} min on {r['threads']} thread(s) "
        f"({r['training']['steps']} steps of {r['batch_size']} pairs, "
        f"{r['model']['train_crop'] or 256} px crops); loss "
        f"{r['training']['loss_first_25']:.3f} → {r['training']['loss_last_25']:.3f}.",
        f"Pairs: train {r['pairs']['train']}, validation {r['pairs']['validation']}, "
        f"evaluation {r['pairs']['evaluation']} ({r['pairs']['evaluation_kinds']}).",
        f"Object rules: 25% cover, min area {r['min_area_m2']} m² ({r['min_area_px']} px).",
        "",
        f"| channel | threshold (val, recall ≥ {r['recall_target']:.3f}) | object recall | "
        "object precision | true / found / pred / false alarms | recall @0.5 | "
        "precision @0.5 | pixel F1 @0.5 | pixel IoU @0.5 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in CHANNELS:
        e = r["evaluation"][name]
        t = e["at_tuned_threshold"]
        h = e["at_0.5"]
        px = e["pixel_at_0.5"]
        lines.append(
            f"| {name} | {t['threshold']:.2f} | {t['recall']:.3f} | {t['precision']:.3f} | "
            f"{t['n_true']} / {t['n_found']} / {t['n_pred']} / {t['n_false_alarm']} | "
            f"{h['recall']:.3f} | {h['precision']:.3f} | {px['f1']:.3f} | {px['iou']:.3f} |")
    lines += ["", "By pair kind (evaluation, tuned thresholds):", "",
              "| kind/channel | true | found | pred | false alarms | recall | precision |",
              "|---|---|---|---|---|---|---|"]
    for key, s in r["evaluation_by_kind"].items():
        if s["n_true"] or s["n_pred"]:
            lines.append(f"| {key} | {s['n_true']} | {s['n_found']} | {s['n_pred']} | "
                         f"{s['n_false_alarm']} | {s['recall']:.3f} | {s['precision']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
