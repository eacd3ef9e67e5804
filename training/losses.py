"""Losses suited to recall: weighted BCE plus soft Dice, with 255 = ignore.

Change pixels are rare (a few percent of a chip). Up-weighting positives in the BCE
(``pos_weight``) and adding a Dice term, which scores each channel's overlap regardless of how
little of the chip changed, keeps the network from settling on "no change everywhere".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = 255


def masked_bce_dice(logits: torch.Tensor, target: torch.Tensor, pos_weight: float = 3.0,
                    dice_weight: float = 1.0, eps: float = 1.0) -> torch.Tensor:
    """Weighted BCE + soft Dice over the pixels whose target is not 255.

    Args:
        logits: N×C×H×W raw scores.
        target: N×C×H×W uint8 (0/1, 255 = ignore).
        pos_weight: weight of positive pixels in the BCE.
        dice_weight: weight of the Dice term (0 = BCE only).
        eps: Dice smoothing.

    Returns:
        A scalar loss (0 when every pixel is ignored).
    """
    logits = logits.float()
    valid = (target != IGNORE).float()
    y = (target == 1).float()
    weight = valid * (1.0 + (pos_weight - 1.0) * y)
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
    """

    def __init__(self, pos_weight: float = 3.0, dice_weight: float = 1.0,
                 aux_weight: float = 0.2) -> None:
        super().__init__()
        self.pos_weight = pos_weight
        self.dice_weight = dice_weight
        self.aux_weight = aux_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                aux: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None),
                buildings: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
                ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and its parts (as floats, for logging)."""
        change = masked_bce_dice(logits, target, self.pos_weight, self.dice_weight)
        total = change
        parts = {"loss_change": float(change.detach())}
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
