"""The table from a data table's ``kind`` to its dataset class (training/datasets/__init__.py)."""

from __future__ import annotations

import inspect

import pytest

from idou.errors import InvalidOption
from idou.training.datasets import DATASETS, constructor_hints, dataset_kind


@pytest.mark.parametrize("kind", sorted(DATASETS))
def test_each_kind_names_a_class_built_at_the_contract_gsd_exactly_when_it_takes_one(
        kind: str) -> None:
    entry = dataset_kind(kind)
    cls = entry.load()
    params = inspect.signature(cls.__init__).parameters
    assert ("gsd_m" in params) == entry.takes_gsd
    assert callable(getattr(cls, "__getitem__", None)) and callable(getattr(cls, "__len__", None))
    assert set(constructor_hints(kind)) >= {p for p in params if p != "self"}


def test_an_unknown_kind_is_refused_with_its_name() -> None:
    with pytest.raises(InvalidOption, match="unknown dataset kind 'lidar'"):
        dataset_kind("lidar")
