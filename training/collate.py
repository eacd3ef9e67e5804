"""Turn dataset item dicts into batches of normalised float tensors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class Collate:
    """Batch item dicts: images → float ``(pixel/255 - mean)/std`` N×3×H×W, masks → uint8.

    Args:
        mean: per-band mean (the model contract's).
        std: per-band std (the model contract's).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def images(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Stack H×W×C uint8 images into a normalised N×C×H×W float tensor."""
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
        return (x - self.mean) / self.std

    def __call__(self, items: Sequence[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        batch = {
            "before": self.images([i["before"] for i in items]),
            "after": self.images([i["after"] for i in items]),
            "target": torch.from_numpy(np.stack([i["target"] for i in items])),
        }
        for key in ("buildings_before", "buildings_after"):
            if all(key in i for i in items):
                batch[key] = torch.from_numpy(np.stack([i[key] for i in items]))[:, None]
        return batch
