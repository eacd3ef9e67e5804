"""LEVIR-CD chip folders become change items: untyped change is new, demolished is ignored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from idou.geo.errors import UserInputError
from idou.training.datasets.levir import LevirCDDataset, label_to_target


def _write(root: Path, stem: str, size: int, change: tuple[slice, slice] | None,
           suffix: str = ".png", label: np.ndarray | None = None) -> None:
    rng = np.random.default_rng(len(stem))
    for folder, value in (("A", 40), ("B", 220)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        img = rng.integers(0, 30, (size, size, 3), dtype=np.uint8) + value
        Image.fromarray(img.astype(np.uint8)).save(root / folder / f"{stem}{suffix}")
    (root / "label").mkdir(parents=True, exist_ok=True)
    if label is None:
        label = np.zeros((size, size), np.uint8)
        if change is not None:
            label[change] = 255
    Image.fromarray(label).save(root / "label" / f"{stem}.png")


def test_untyped_change_is_new_and_demolished_is_ignored(tmp_path: Path) -> None:
    _write(tmp_path, "train_1", 64, (slice(10, 20), slice(30, 40)))
    _write(tmp_path, "train_2", 64, None, suffix=".jpg")
    ds = LevirCDDataset(tmp_path)
    assert len(ds) == 2
    assert ds.has_change == [True, False]
    item = ds[0]
    assert item["before"].shape == (64, 64, 3) and item["before"].dtype == np.uint8
    assert item["after"].shape == (64, 64, 3) and item["after"].dtype == np.uint8
    assert item["before"].mean() < 100 < item["after"].mean()  # A is before, B is after
    target = item["target"]
    assert target.shape == (2, 64, 64) and target.dtype == np.uint8
    expected = np.zeros((64, 64), np.uint8)
    expected[10:20, 30:40] = 1
    assert np.array_equal(target[0], expected)
    assert (target[1] == 255).all()
    assert not (ds[1]["target"][0] == 1).any()


def test_chips_cut_large_images_and_flag_change_per_chip(tmp_path: Path) -> None:
    _write(tmp_path, "big", 100, (slice(70, 80), slice(5, 15)))
    ds = LevirCDDataset(tmp_path, chip_size=64)
    # rows/cols start at 0 and 36 (the last window is shifted inward): four 64x64 chips.
    assert len(ds) == 4
    assert all(ds[i]["before"].shape == (64, 64, 3) for i in range(4))
    assert ds.has_change == [False, False, True, False]
    assert ds.describe(2) == "big@36,0"
    assert ds[2]["target"][0, 70 - 36:80 - 36, 5:15].all()


def test_typed_labels_fill_both_channels() -> None:
    label = np.array([[0, 1], [2, 255]], np.uint8)
    target = label_to_target(label, typed=True)
    assert target[:, 0, 0].tolist() == [0, 0]
    assert target[:, 0, 1].tolist() == [1, 0]
    assert target[:, 1, 0].tolist() == [0, 1]
    assert target[:, 1, 1].tolist() == [255, 255]


def test_folder_errors_name_the_fix(tmp_path: Path) -> None:
    (tmp_path / "A").mkdir()
    with pytest.raises(UserInputError, match="B/"):
        LevirCDDataset(tmp_path)
    (tmp_path / "B").mkdir()
    (tmp_path / "label").mkdir()
    with pytest.raises(UserInputError, match="same"):
        LevirCDDataset(tmp_path)
