"""Validation during training: pixel and object scores per epoch, the score that picks the best
epoch, and the PR curve and sample PNGs logged beside them.

Object scores follow :mod:`idou.geo.scoring.metrics`' rules at ``train.val_threshold``; the
best epoch is the highest :func:`score`: object recall (object F1 breaks ties) for ``train.monitor =
"object_recall"``, recall + F1 for ``"object_recall+f1"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

CHANNELS = ("new", "demolished")
MONITORS = ("object_recall", "object_recall+f1")
NO_OBJECTS = "n/a (no objects)"


class _Tally:
    """Object and pixel counts of both channels, and a 5 % pixel subsample for the PR curve."""

    def __init__(self, threshold: float, min_area_px: int) -> None:
        from idou.geo.scoring.metrics import ObjectScores

        self.threshold, self.min_area_px = threshold, min_area_px
        self.objects = [ObjectScores(0, 0, 0, 0), ObjectScores(0, 0, 0, 0)]
        self.tp, self.fp, self.fn = np.zeros(2), np.zeros(2), np.zeros(2)
        self.pr_probs: list[list[np.ndarray]] = [[], []]
        self.pr_truth: list[list[np.ndarray]] = [[], []]
        self.rng = np.random.default_rng(0)

    def add(self, probs: np.ndarray, target: np.ndarray) -> None:
        """Count one item: ``probs`` 2×H×W, ``target`` 2×H×W (1 change, 255 ignore)."""
        from idou.geo.scoring.metrics import object_scores_from_masks, pixel_scores

        for ch in range(2):
            ignore = target[ch] == 255
            truth = target[ch] == 1
            pred = (probs[ch] >= self.threshold) & ~ignore
            self.objects[ch] = self.objects[ch] + object_scores_from_masks(
                pred, truth, min_area_px=self.min_area_px, ignore=ignore)
            px = pixel_scores(pred, truth, ignore)
            self.tp[ch] += px.tp
            self.fp[ch] += px.fp
            self.fn[ch] += px.fn
            valid = ~ignore
            pick = self.rng.random(valid.sum()) < 0.05
            self.pr_probs[ch].append(probs[ch][valid][pick])
            self.pr_truth[ch].append(truth[valid][pick])

    def metrics(self) -> dict[str, float]:
        """Object and pixel scores per channel, and their means over the channels."""
        tp, fp, fn = self.tp, self.fp, self.fn
        metrics: dict[str, float] = {}
        for ch, name in enumerate(CHANNELS):
            s = self.objects[ch]
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
        metrics["object_recall"] = float(np.mean([metrics[f"{n}_object_recall"]
                                                  for n in CHANNELS]))
        metrics["object_f1"] = float(np.mean([metrics[f"{n}_object_f1"] for n in CHANNELS]))
        return metrics

    def pr(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The subsampled (prob, truth) pixels of each channel."""
        return [(np.concatenate(self.pr_probs[c]) if self.pr_probs[c] else np.zeros(0),
                 np.concatenate(self.pr_truth[c]) if self.pr_truth[c] else np.zeros(0, bool))
                for c in range(2)]


def evaluate(net: nn.Module, loader: DataLoader, device: torch.device, threshold: float,
             min_area_px: int, amp: bool = False, keep_samples: int = 0
             ) -> tuple[dict[str, float], dict[str, Any]]:
    """Pixel and object metrics of ``net`` over ``loader`` (idou.geo.scoring.metrics' object rules).

    Returns:
        ``(metrics, extras)``; extras hold subsampled (prob, truth) pairs per channel for the PR
        curve and up to ``keep_samples`` sample items with their predictions.
    """
    net.eval()
    tally = _Tally(threshold, min_area_px)
    samples: list[dict[str, np.ndarray]] = []
    with torch.no_grad():
        for batch in loader:
            before = batch["before"].to(device)
            after = batch["after"].to(device)
            ctx = torch.autocast("cuda", dtype=torch.float16) if amp else nullcontext()
            with ctx:
                probs = torch.sigmoid(net(before, after).float()).cpu().numpy()
            target = batch["target"].numpy()
            for i in range(probs.shape[0]):
                tally.add(probs[i], target[i])
                if len(samples) < keep_samples:
                    samples.append({"before": batch["before"][i].numpy(),
                                    "after": batch["after"][i].numpy(),
                                    "target": target[i], "prob": probs[i]})
    return tally.metrics(), {"pr": tally.pr(), "samples": samples}


def score(metrics: dict[str, float], monitor: str) -> tuple[float, float]:
    """Validation score to maximise: object recall first (F1 breaks ties), or their sum."""
    recall, f1 = metrics.get("object_recall", 0.0), metrics.get("object_f1", 0.0)
    if monitor == "object_recall+f1":
        return (round(recall + f1, 6), f1)
    return (round(recall, 6), f1)


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


def pr_curve_png(pr: list[tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    """Pixel precision against recall of each channel with true pixels, as a PNG."""
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


def samples_png(samples: list[dict[str, np.ndarray]], mean: Sequence[float],
                std: Sequence[float], path: Path) -> None:
    """One row per sample: before, after, truth (new red, demolished green), prediction."""
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
