"""Training datasets: each item is a dict of before/after images and change masks.

:data:`DATASETS` is the one table from a ``[[train_data]]``/``[[val_data]]`` ``kind`` to its
dataset class; every class meets :class:`ChangeDataset`, the little the training loop needs.
Classes are imported only when a kind is used, so reading a config loads no dataset module.
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from idou.errors import InvalidOption


class ChangeDataset(Protocol):
    """What the training loop needs of a dataset.

    Built with the keys of its data table as keyword arguments (plus ``gsd_m``, the contract's
    GSD, when :attr:`DatasetKind.takes_gsd`); items are dicts with ``before``/``after`` images and
    a ``target`` 2×H×W (1 change, 0 none, 255 ignore); ``has_change[i]`` says whether item ``i``
    holds change, the flag balanced sampling reads (:func:`change_flags`).
    """

    has_change: Sequence[bool]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class DatasetKind:
    """Where a kind's class lives and whether it is built at the contract's GSD."""

    module: str
    name: str
    takes_gsd: bool

    def load(self) -> type[ChangeDataset]:
        """The class (importing its module)."""
        cls: type[ChangeDataset] = getattr(importlib.import_module(self.module), self.name)
        return cls


DATASETS: dict[str, DatasetKind] = {
    "synthetic": DatasetKind("idou.training.datasets.synthetic", "SyntheticChipDataset", True),
    "footprints": DatasetKind("idou.training.datasets.footprints", "FootprintChipDataset", True),
    "levir": DatasetKind("idou.training.datasets.levir", "LevirCDDataset", False),
    "single_date": DatasetKind("idou.training.datasets.single_date", "SingleDateChangeDataset",
                               False),
    "reviewed": DatasetKind("idou.training.datasets.reviewed", "ReviewedDataset", True),
}


def dataset_kind(kind: str) -> DatasetKind:
    """The table entry of ``kind``.

    Raises:
        InvalidOption: no dataset has that kind.
    """
    if kind not in DATASETS:
        raise InvalidOption(f"unknown dataset kind {kind!r}.")
    return DATASETS[kind]


def constructor_hints(kind: str) -> dict[str, Any]:
    """The resolved type hints of ``kind``'s constructor ({} when a name only exists for type
    checkers)."""
    cls = dataset_kind(kind).load()
    try:
        return typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 - NameError and friends: then nothing is checked
        return {}


def change_flags(dataset: Any) -> list[bool]:
    """Per-item 'holds change' flags (``dataset.has_change`` or read from the targets)."""
    flags = getattr(dataset, "has_change", None)
    if flags is not None:
        return [bool(f) for f in flags]
    return [bool((dataset[i]["target"] == 1).any()) for i in range(len(dataset))]
