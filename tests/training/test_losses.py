"""The recall-friendly loss ignores 255 and rewards finding change."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from idou.training.losses import (  # noqa: E402
    ChangeLoss,
    masked_bce_dice,
    small_object_weights,
)


def test_ignored_pixels_do_not_count() -> None:
    target = torch.zeros(1, 2, 8, 8, dtype=torch.uint8)
    target[:, :, :4] = 255
    logits = torch.zeros(1, 2, 8, 8)
    base = masked_bce_dice(logits, target)
    logits[:, :, :4] = 50.0  # wildly wrong, but only where ignored
    assert masked_bce_dice(logits, target) == pytest.approx(float(base))


def test_everything_ignored_gives_zero_bce() -> None:
    target = torch.full((1, 2, 4, 4), 255, dtype=torch.uint8)
    loss = masked_bce_dice(torch.randn(1, 2, 4, 4), target, dice_weight=0.0)
    assert float(loss) == 0.0


def test_missing_change_costs_more_than_a_false_alarm() -> None:
    """pos_weight > 1: a missed change pixel costs more than a false one of the same score."""
    missed = torch.zeros(1, 1, 2, 2, dtype=torch.uint8)
    missed[0, 0, 0, 0] = 1
    logits_missed = torch.full((1, 1, 2, 2), -2.0)
    false_alarm = torch.zeros(1, 1, 2, 2, dtype=torch.uint8)
    logits_false = torch.full((1, 1, 2, 2), -2.0)
    logits_false[0, 0, 0, 0] = 2.0
    lm = masked_bce_dice(logits_missed, missed, pos_weight=3.0, dice_weight=0.0)
    lf = masked_bce_dice(logits_false, false_alarm, pos_weight=3.0, dice_weight=0.0)
    assert float(lm) > float(lf)


def test_building_head_adds_its_loss() -> None:
    target = torch.zeros(2, 2, 8, 8, dtype=torch.uint8)
    logits = torch.zeros(2, 2, 8, 8)
    aux = torch.zeros(2, 1, 8, 8)
    buildings = torch.ones(2, 1, 8, 8, dtype=torch.uint8)
    plain, _ = ChangeLoss(aux_weight=0.5)(logits, target)
    total, parts = ChangeLoss(aux_weight=0.5)(logits, target, (aux, aux), (buildings, buildings))
    assert float(total) > float(plain) and "loss_buildings" in parts


def _small_and_large() -> torch.Tensor:
    """One chip, one channel: a 2×2 object, a 6×6 object and an ignored band."""
    target = torch.zeros(1, 1, 12, 12, dtype=torch.uint8)
    target[0, 0, 1:3, 1:3] = 1
    target[0, 0, 5:11, 5:11] = 1
    target[0, 0, :, 11] = 255
    return target


def test_small_objects_weigh_more_up_to_the_cap() -> None:
    target = _small_and_large()
    weights = small_object_weights(target, small_px=16.0, max_boost=3.0)[0, 0]
    assert torch.all(weights[1:3, 1:3] == 3.0)  # 16 / 4 px = 4, capped at 3
    assert torch.all(weights[5:11, 5:11] == 1.0)  # 36 px: not small
    assert float(weights[0, 0]) == 1.0 and torch.all(weights[:, 11] == 1.0)
    weights = small_object_weights(target, small_px=8.0, max_boost=3.0)[0, 0]
    assert torch.all(weights[1:3, 1:3] == 2.0)  # 8 / 4 px


def test_missing_a_small_object_costs_more_with_the_boost() -> None:
    """The boost changes only what a missed small object costs, not a missed large one."""
    target = _small_and_large()
    miss_small = torch.full((1, 1, 12, 12), -3.0)
    miss_small[0, 0, 5:11, 5:11] = 3.0
    miss_large = torch.full((1, 1, 12, 12), -3.0)
    miss_large[0, 0, 1:3, 1:3] = 3.0
    plain, boosted = ChangeLoss(dice_weight=0.0), ChangeLoss(dice_weight=0.0, small_object_px=16)
    assert float(boosted(miss_small, target)[0]) > 1.5 * float(plain(miss_small, target)[0])
    assert float(boosted(miss_large, target)[0]) == pytest.approx(
        float(plain(miss_large, target)[0]), rel=0.02)


def test_new_and_demolished_on_one_house_cost_more_unless_it_was_rebuilt() -> None:
    target = torch.zeros(1, 2, 4, 4, dtype=torch.uint8)
    target[0, 0, :2] = 1  # new only
    target[0, :, 2:] = 1  # rebuilt (建替): both channels are right
    one = torch.full((1, 2, 4, 4), -4.0)
    one[0, 0, :2] = 4.0
    one[0, :, 2:] = 4.0
    both = one.clone()
    both[0, 1, :2] = 4.0  # demolished fires on the new house too
    loss = ChangeLoss(dice_weight=0.0, aux_weight=0.0, exclusive_weight=1.0)
    plain = ChangeLoss(dice_weight=0.0, aux_weight=0.0)
    gap = loss(both, target)[0] - loss(one, target)[0]
    plain_gap = plain(both, target)[0] - plain(one, target)[0]
    assert gap > plain_gap + 0.3  # the product term adds about half of the 8 pixels' worth
    _, parts = loss(one, target)
    assert parts["loss_exclusive"] < 0.02  # rebuilt pixels (product 0.96) are left out
