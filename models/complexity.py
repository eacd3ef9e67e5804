"""Parameter counts and FLOPs of a change network, measured with torch's own flop counter."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def gflops_per_pair(net: nn.Module, size: int = 512, channels: int = 3) -> float:
    """GFLOPs (2 × multiply-adds, as torch counts them) of one forward pass on one pair.

    Args:
        net: a module called as ``net(before, after)``.
        size: side of the square input in pixels.
        channels: bands per date.
    """
    was_training = net.training
    net.eval()
    x = torch.zeros(1, channels, size, size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x, x)
    net.train(was_training)
    return counter.get_total_flops() / 1e9
