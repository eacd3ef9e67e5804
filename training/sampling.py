"""Sampling that balances chips with and without change, also across DDP ranks.

Most chips of a real flight show no change; drawn uniformly, the network sees change too rarely.
:class:`BalancedSampler` draws (with replacement) so that ``change_fraction`` of each epoch's
chips hold change, is reproducible for a seed and epoch, and gives each DDP rank its own share.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


def balanced_weights(has_change: Sequence[bool], change_fraction: float = 0.5) -> np.ndarray:
    """Per-chip draw probabilities giving ``change_fraction`` of draws to chips with change.

    When one group is empty the other gets all draws.
    """
    flags = np.asarray(has_change, dtype=bool)
    n_change, n_static = int(flags.sum()), int((~flags).sum())
    if n_change == 0 or n_static == 0:
        return np.full(len(flags), 1.0 / max(1, len(flags)))
    return np.where(flags, change_fraction / n_change, (1.0 - change_fraction) / n_static)


class BalancedSampler(Sampler[int]):
    """Weighted draws with replacement, seeded per epoch, sharded by rank.

    Args:
        has_change: per-chip flag.
        num_samples: chips per epoch (all ranks together); default the dataset size.
        change_fraction: share of draws that hold change.
        seed: base seed; the epoch (``set_epoch``) is added to it.
        rank: this process's rank (0 without DDP).
        world_size: number of processes (1 without DDP).
    """

    def __init__(self, has_change: Sequence[bool], num_samples: int | None = None,
                 change_fraction: float = 0.5, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        self.weights = balanced_weights(has_change, change_fraction)
        total = num_samples or len(self.weights)
        self.per_rank = max(1, total // world_size)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose draws ``__iter__`` yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng((self.seed, self.epoch))
        draws = rng.choice(len(self.weights), size=self.per_rank * self.world_size, replace=True,
                           p=self.weights)
        return iter(int(i) for i in draws[self.rank::self.world_size])
