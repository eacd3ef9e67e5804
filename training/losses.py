"""Losses suited to recall: weighted BCE plus soft Dice, with 255 = ignore.

Change pixels are rare (a few percent of a chip). Up-weighting positives in the BCE
(``pos_weight``) and adding a Dice term, which scores each channel's overlap regardless of how
little of the chip changed, keeps the network from settling on "no change everywhere".

Object recall counts a small extension (増築) as much as a whole new house, but its few pixels
weigh little in a pixel loss. :func:`small_object_weights` raises the weight of the pixels of
small change objects so that each counts closer to its share of the objects.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from idou.geo.scoring.metrics import EIGHT_CONNECTED

IGNORE = 255


def small_object_weights(target: torch.Tensor, small_px: float, max_boost: float
                         ) -> torch.Tensor:
    """Per-pixel weights: ``min(max_boost, small_px / size)`` on change objects under ``small_px``.

    Objects are the 8-connected change pixels (value 1) of one chip and channel; every other
    pixel, and every pixel of an object of ``small_px`` pixels or more, weighs 1.

    Args:
        target: N×C×H×W uint8 (0/1, 255 = ignore).
        small_px: objects smaller than this many pixels are boosted.
        max_boost: the largest weight.

    Returns:
        N×C×H×W float32 weights on ``target``'s device.
    """
    y = (target == 1).cpu().numpy()
    weights = np.ones(y.shape, dtype=np.float32)
    for index in np.ndindex(*y.shape[:2]):
        labels, count = ndimage.label(y[index], structure=EIGHT_CONNECTED)
        if count == 0:
            continue
        sizes = np.bincount(labels.ravel())
        boost = np.minimum(max_boost, small_px / np.maximum(sizes, 1)).astype(np.float32)
        boost = np.maximum(boost, 1.0)
        boost[0] = 1.0
        weights[index] = boost[labels]
    return torch.from_numpy(weights).to(target.device)


def masked_bce_dice(logits: torch.Tensor, target: torch.Tensor, pos_weight: float = 3.0,
                    dice_weight: float = 1.0, eps: float = 1.0,
                    pixel_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted BCE + soft Dice over the pixels whose target is not 255.

    Args:
        logits: N×C×H×W raw scores.
        target: N×C×H×W uint8 (0/1, 255 = ignore).
        pos_weight: weight of positive pixels in the BCE.
        dice_weight: weight of the Dice term (0 = BCE only).
        eps: Dice smoothing.
        pixel_weight: optional N×C×H×W factor on each pixel's BCE weight (e.g.
            :func:`small_object_weights`).

    Returns:
        A scalar loss (0 when every pixel is ignored).
    """
    logits = logits.float()
    valid = (target != IGNORE).float()
    y = (target == 1).float()
    weight = valid * (1.0 + (pos_weight - 1.0) * y)
    if pixel_weight is not None:
        weight = weight * pixel_weight
    bce = F.binary_cross_entropy_with_logits(logits, y, weight=weight, reduction="sum")
    bce = bce / valid.sum().clamp_min(1.0)
    if dice_weight <= 0:
        return bce
    p = torch.sigmoid(logits) * valid
    dims = (0, 2, 3)
    inter = (p * y).sum(dims)
    dice = 1.0 - (2.0 * inter + eps) / (p.sum(dims) + y.sum(dims) + eps)
    return bce + dice_weight * dice.mean()


class ChangeLoss(nn.Module):
    """Loss of the change head plus (optionally) the per-date building head.

    Args:
        pos_weight: BCE weight of change pixels.
        dice_weight: weight of the Dice term.
        aux_weight: weight of the building loss (ignored when no building logits are given).
        small_object_px: change objects under this many pixels get heavier pixels (0 = off;
            see :func:`small_object_weights`).
        small_object_boost: the largest of those weights.
        exclusive_weight: weight of a term that penalises new and demolished firing on the same
            pixel (mean of their probabilities' product) where the target is not both (a
            rebuild, 建替), so one standing house does not light both channels (0 = off).
    """

    def __init__(self, pos_weight: float = 3.0, dice_weight: float = 1.0,
                 aux_weight: float = 0.2, small_object_px: float = 0.0,
                 small_object_boost: float = 4.0, exclusive_weight: float = 0.0) -> None:
        super().__init__()
        self.exclusive_weight = exclusive_weight
        self.pos_weight = pos_weight
        self.dice_weight = dice_weight
        self.aux_weight = aux_weight
        self.small_object_px = small_object_px
        self.small_object_boost = small_object_boost

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                aux: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None),
                buildings: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
                ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and its parts (as floats, for logging)."""
        pixel_weight = (small_object_weights(target, self.small_object_px,
                                             self.small_object_boost)
                        if self.small_object_px > 0 else None)
        change = masked_bce_dice(logits, target, self.pos_weight, self.dice_weight,
                                 pixel_weight=pixel_weight)
        total = change
        parts = {"loss_change": float(change.detach())}
        if self.exclusive_weight > 0 and logits.shape[1] == 2:
            p = torch.sigmoid(logits.float())
            rebuilt = (target[:, 0] == 1) & (target[:, 1] == 1)
            both = (p[:, 0] * p[:, 1])[~rebuilt]
            exclusive = both.mean() if both.numel() else logits.sum() * 0.0
            total = total + self.exclusive_weight * exclusive
            parts["loss_exclusive"] = float(exclusive.detach())
        if self.aux_weight > 0:
            aux_losses = [masked_bce_dice(a, b, 1.0, 0.0) for a, b in zip(aux, buildings,
                                                                          strict=True)
                          if a is not None and b is not None]
            if aux_losses:
                aux_loss = torch.stack(aux_losses).mean()
                total = total + self.aux_weight * aux_loss
                parts["loss_buildings"] = float(aux_loss.detach())
        parts["loss"] = float(total.detach())
        return total, parts
