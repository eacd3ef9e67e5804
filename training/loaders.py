"""The data a training run reads: datasets from the config's tables, batched for the loop.

The ``[[train_data]]`` tables are concatenated, augmented (reseeded per epoch so runs are
reproducible) and drawn by :class:`~idou.training.sampling.BalancedSampler`, each DDP rank its own
share; a resumed run skips the batches its interrupted epoch already used. Validation data is
read in order, on rank 0 only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler

from idou.errors import UserInputError
from idou.training.augment import PairedAugment
from idou.training.collate import Collate
from idou.training.config import DataSpec, TrainConfig, check_types
from idou.training.datasets import change_flags, constructor_hints, dataset_kind
from idou.training.sampling import BalancedSampler


def build_dataset(spec: DataSpec, contract_gsd: float) -> Any:
    """The dataset a ``[[train_data]]``/``[[val_data]]`` table names."""
    params = dict(spec.params)
    entry = dataset_kind(spec.kind)
    check_types(params, constructor_hints(spec.kind), f"the [[{spec.kind}]] data table")
    if entry.takes_gsd:
        params.setdefault("gsd_m", contract_gsd)
    try:
        return entry.load()(**params)
    except TypeError as exc:
        raise UserInputError(f"the [[{spec.kind}]] data table has a wrong key ({exc}); see "
                             "the dataset's documentation.") from exc


class Concat(Dataset):
    """Datasets one after another, with their ``has_change`` flags."""

    def __init__(self, parts: Sequence[Any]) -> None:
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self.has_change = [f for p in self.parts for f in change_flags(p)]

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        k = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return self.parts[k][index - int(self.offsets[k])]


class Augmented(Dataset):
    """Applies :class:`PairedAugment`, reseeded per epoch so runs are reproducible."""

    def __init__(self, base: Any, make: Any, seed: int) -> None:
        self.base, self.make, self.seed = base, make, seed
        self.augment = make(seed)

    def set_epoch(self, epoch: int) -> None:
        self.augment = self.make(self.seed * 1000 + epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return self.augment(self.base[index])


class SkipSampler(Sampler[int]):
    """The first ``skip`` indices of an epoch left out (resuming inside an epoch)."""

    def __init__(self, inner: BalancedSampler) -> None:
        self.inner, self.skip = inner, 0

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.skip)

    def __iter__(self) -> Iterator[int]:
        it = iter(self.inner)
        for _ in range(self.skip):
            next(it, None)
        return it


@dataclass
class Loaders:
    """A run's batches and what the loop turns per epoch."""

    data: Any  # the training dataset as the loader reads it (Augmented when augmenting)
    sampler: BalancedSampler
    skipper: SkipSampler
    loader: DataLoader
    val_loader: DataLoader | None
    steps_per_epoch: int

    def start_epoch(self, epoch: int, skip_batches: int, batch_size: int) -> None:
        """Draw epoch ``epoch``'s chips and augmentations, skipping batches already used."""
        self.sampler.set_epoch(epoch)
        if isinstance(self.data, Augmented):
            self.data.set_epoch(epoch)
        self.skipper.skip = skip_batches * batch_size


def build_datasets(config: TrainConfig, main: bool) -> tuple[Concat, Concat | None]:
    """The training data and, on rank 0 with ``[[val_data]]``, the validation data."""
    gsd = config.contract.gsd_m
    train_set = Concat([build_dataset(s, gsd) for s in config.train_data])
    val_set = (Concat([build_dataset(s, gsd) for s in config.val_data])
               if config.val_data and main else None)
    return train_set, val_set


def build_loaders(config: TrainConfig, train_set: Concat, val_set: Concat | None, rank: int,
                  world: int, cuda: bool) -> Loaders:
    """Batches of ``train_set`` (augmented, balanced, this rank's share) and of ``val_set``."""
    tc, aug, contract = config.train, config.augment, config.contract
    if len(train_set) == 0:
        raise UserInputError("the training data yields no chips; check [[train_data]].")
    data: Any = train_set
    if aug.enabled:
        def make(seed: int) -> PairedAugment:
            return PairedAugment(aug.max_shift_px, aug.shift_p, aug.photometric,
                                 aug.scale_rotate, seed, aug.realism, aug.swap_p)
        data = Augmented(train_set, make, config.seed + 7919 * rank)
    sampler = BalancedSampler(train_set.has_change, tc.chips_per_epoch, tc.change_fraction,
                              config.seed, rank, world)
    skipper = SkipSampler(sampler)
    collate = Collate(contract.mean, contract.std)
    loader = DataLoader(data, batch_size=tc.batch_size, sampler=skipper, collate_fn=collate,
                        num_workers=tc.num_workers, drop_last=True,
                        persistent_workers=False, pin_memory=cuda)
    val_loader = (DataLoader(val_set, batch_size=tc.batch_size, shuffle=False,
                             collate_fn=collate, num_workers=0) if val_set is not None else None)
    return Loaders(data, sampler, skipper, loader, val_loader,
                   max(1, len(sampler) // tc.batch_size))
