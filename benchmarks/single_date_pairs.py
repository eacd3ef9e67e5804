"""Write change pairs drawn from single-date building tiles as a chip folder (A/, B/, label/).

Thresholds of a model trained with the `single_date` dataset are tuned on pairs drawn the same
way from tiles it did not train on (robosat's `validation` tiles, or a city's held-back tiles
of its orthophoto with its 家屋現況図): this writes them in the layout `idou tune` and `idou
evaluate` read as a chip folder. ``label`` holds the new buildings (255); the chip layout has
one change class, so `idou tune` sets the new channel's threshold there.

    python benchmarks/single_date_pairs.py ../shared/data/real_buildings/robosat/validation \
        /tmp/robosat-val-pairs --config configs/real-robosat.toml
    idou tune MODEL /tmp/robosat-val-pairs --gsd 0.54 --min-area 4 --recall 0.80

With ``--config`` the pair kinds are weighted as in the config's first `single_date`
``[[val_data]]``; the pairs are the same for the same tiles, ``--pairs-per-tile`` and ``--seed``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path, help="single-date tiles ({images,labels}/Z/X/Y)")
    p.add_argument("out", type=Path, help="chip folder to write (must not exist)")
    p.add_argument("--config", type=Path, help="training config whose val_data weights to use")
    p.add_argument("--pairs-per-tile", type=int, default=3)
    p.add_argument("--seed", type=int, default=77)
    return p.parse_args(argv)


def pair_weights(config: Path | None) -> dict[str, float] | None:
    """The pair-kind weights of the config's first single_date validation set (or None)."""
    if config is None:
        return None
    from idou.training.config import load_config

    for spec in load_config(config).val_data:
        if spec.kind == "single_date":
            return dict(spec.params.get("weights") or {}) or None
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from idou.training.datasets.single_date import SingleDateChangeDataset

    if args.out.exists():
        print(f"{args.out} exists; give a new folder for the pairs.", file=sys.stderr)
        return 2
    pairs = SingleDateChangeDataset(args.root, pairs_per_tile=args.pairs_per_tile,
                                    seed=args.seed, weights=pair_weights(args.config))
    for name in ("A", "B", "label"):
        (args.out / name).mkdir(parents=True)
    for i in range(len(pairs)):
        item = pairs[i]
        stem = f"p{i:04d}.png"
        Image.fromarray(item["before"]).save(args.out / "A" / stem)
        Image.fromarray(item["after"]).save(args.out / "B" / stem)
        new = (item["target"][0] == 1).astype(np.uint8) * 255
        Image.fromarray(new).save(args.out / "label" / stem)
    print(f"{len(pairs)} pairs ({sum(pairs.has_change)} with change) in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
