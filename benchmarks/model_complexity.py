"""Parameters, GFLOPs and CPU speed of the change network for each backbone.

GFLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` for one forward pass on one
512×512 pair (both dates; 2 FLOPs per multiply-add). CPU speed is torch eager inference on this
machine's threads (ONNX Runtime is usually faster; see the inference benchmarks).

    .venv/bin/python benchmarks/model_complexity.py --out models/COMPLEXITY.md
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from idou.models.backbones import BACKBONES
from idou.models.complexity import count_parameters, gflops_per_pair
from idou.models.siamese import NetworkConfig, SiameseChangeNet


def measure(backbone: str, size: int, speed_size: int, repeats: int) -> dict[str, float]:
    """Params (M), GFLOPs per ``size``² pair and eager CPU Mpx/s on ``speed_size``² pairs."""
    net = SiameseChangeNet(NetworkConfig(backbone=backbone)).eval()
    x = torch.rand(1, 3, speed_size, speed_size)
    with torch.no_grad():
        net(x, x)
        start = time.perf_counter()
        for _ in range(repeats):
            net(x, x)
        seconds = (time.perf_counter() - start) / repeats
    return {"params_m": count_parameters(net) / 1e6,
            "gflops": gflops_per_pair(net, size),
            "mpx_s": speed_size * speed_size / seconds / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="pair side for GFLOPs")
    parser.add_argument("--speed-size", type=int, default=256, help="pair side for speed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backbones", nargs="*", default=list(BACKBONES))
    parser.add_argument("--out", type=Path, help="write the table as Markdown here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lines = [f"| backbone | params (M) | GFLOPs per {args.size}×{args.size} pair | "
             f"torch CPU Mpx/s ({args.threads} threads, {args.speed_size}² tiles) |",
             "|---|---:|---:|---:|"]
    for name in args.backbones:
        m = measure(name, args.size, args.speed_size, args.repeats)
        lines.append(f"| {name} | {m['params_m']:.2f} | {m['gflops']:.1f} | "
                     f"{m['mpx_s']:.2f} |")
        print(lines[-1], flush=True)
    if args.out:
        cpu = platform.processor() or platform.machine()
        header = ["# Change network complexity", "",
                  "Siamese network, shared encoder, fusion concat(b, a, |a-b|) at strides "
                  "2-32, U-Net decoder (96, 64, 48, 32, 16), head at stride 2, "
                  "auxiliary building head excluded from the export (it adds one 1×1 conv).",
                  "", f"Measured with `{Path(__file__).name}` on {cpu}, torch "
                  f"{torch.__version__}. Mpx/s counts model pixels; at 0.4 m model GSD each "
                  "model pixel is 4 input pixels of a 0.2 m orthophoto.", ""]
        args.out.write_text("\n".join(header + lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
