"""Paired augmentation: one geometry for both dates and every mask, radiometry per date."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("albumentations")

from idou.training.augment import (  # noqa: E402
    PairedAugment,
    realism_transform,
    shift_image,
    swap_dates,
)


def _marked_item(size: int = 32) -> dict[str, np.ndarray]:
    """Uniform grey chips with one marker pixel at the same place in every layer."""
    before = np.full((size, size, 3), 100, np.uint8)
    after = before.copy()
    target = np.zeros((2, size, size), np.uint8)
    bb = np.zeros((size, size), np.uint8)
    ba = bb.copy()
    r, c = 5, 9  # off every symmetry axis, so each flip/turn moves it somewhere else
    before[r, c] = after[r, c] = 250
    target[0, r, c] = target[1, r, c] = bb[r, c] = ba[r, c] = 1
    return {"before": before, "after": after, "target": target, "buildings_before": bb,
            "buildings_after": ba}


def _where(mask: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(mask)
    assert len(rows) == 1
    return int(rows[0]), int(cols[0])


def test_marker_moves_identically_in_both_dates_and_all_masks() -> None:
    aug = PairedAugment(max_shift_px=0, photometric=False, scale_rotate=False, seed=3)
    moved = set()
    for _ in range(12):
        out = aug(_marked_item())
        spot = _where(out["before"][..., 0] == 250)
        assert _where(out["after"][..., 0] == 250) == spot
        assert _where(out["target"][0] == 1) == spot and _where(out["target"][1] == 1) == spot
        assert _where(out["buildings_before"] == 1) == spot
        assert _where(out["buildings_after"] == 1) == spot
        moved.add(spot)
    assert len(moved) > 1  # the geometry really changes between draws


def test_scale_rotate_pads_masks_with_ignore_and_keeps_shapes() -> None:
    aug = PairedAugment(max_shift_px=0, photometric=False, scale_rotate=True, seed=0)
    for _ in range(20):
        out = aug(_marked_item(48))
        assert out["before"].shape == out["after"].shape == (48, 48, 3)
        assert out["target"].shape == (2, 48, 48) and out["target"].dtype == np.uint8
        assert set(np.unique(out["target"])) <= {0, 1, 255}


def test_photometric_changes_are_drawn_per_date() -> None:
    aug = PairedAugment(max_shift_px=0, photometric=True, scale_rotate=False, seed=1)
    differs = 0
    for _ in range(10):
        out = aug(_marked_item())
        differs += int(not np.array_equal(out["before"], out["after"]))
        assert np.array_equal(out["target"][0] == 1, out["buildings_after"] == 1)
    assert differs >= 5


def test_misregistration_shifts_each_date_by_at_most_two_pixels() -> None:
    aug = PairedAugment(max_shift_px=2.0, shift_p=1.0, photometric=False, scale_rotate=False,
                        seed=2)
    for _ in range(10):
        out = aug(_marked_item())
        mask_spot = np.array(_where(out["target"][0] == 1))
        for key in ("before", "after"):
            img = out[key][..., 0].astype(float) - 100
            rows, cols = np.nonzero(img > 5)
            w = img[rows, cols]
            centre = np.array([np.average(rows, weights=w), np.average(cols, weights=w)])
            assert np.abs(centre - mask_spot).max() <= 2.0 + 1e-6


def test_shift_image_moves_content_by_whole_pixels() -> None:
    img = np.zeros((10, 10, 3), np.uint8)
    img[4, 4] = 200
    out = shift_image(img, dx=2.0, dy=-1.0)
    assert out[3, 6, 0] == 200


def test_swapping_the_dates_swaps_new_and_demolished() -> None:
    item = _marked_item()
    item["after"][0, 0] = 30  # tell the dates apart
    item["target"][1] = 0  # the marker is new only
    item["buildings_before"][:] = 0
    swapped = swap_dates(item)
    assert np.array_equal(swapped["before"], item["after"])
    assert np.array_equal(swapped["after"], item["before"])
    assert np.array_equal(swapped["target"][1], item["target"][0])
    assert not swapped["target"][0].any()
    assert np.array_equal(swapped["buildings_before"], item["buildings_after"])
    always = PairedAugment(max_shift_px=0, photometric=False, scale_rotate=False, seed=0,
                           swap_p=1.0)(item)
    spot = _where(always["target"][1] == 1)
    assert always["buildings_before"][spot] == 1 and not always["target"][0].any()


def test_realism_changes_each_date_but_never_the_labels() -> None:
    rng = np.random.default_rng(0)
    item = _marked_item(64)
    item["before"] = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    item["after"] = item["before"].copy()
    aug = PairedAugment(max_shift_px=0, photometric=True, scale_rotate=False, seed=2,
                        realism=True)
    differs = 0
    for _ in range(6):
        out = aug(item)
        assert out["before"].dtype == np.uint8 and out["before"].shape == (64, 64, 3)
        assert (out["target"] == 1).sum() == 2 and out["buildings_before"].sum() == 1
        differs += int(not np.array_equal(out["before"], out["after"]))
    assert differs >= 4
    assert realism_transform(0)(image=item["before"])["image"].shape == (64, 64, 3)
