"""Balanced sampling of chips with and without change, sharded across DDP ranks."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from idou.training.sampling import BalancedSampler, balanced_weights  # noqa: E402


def test_weights_give_the_wanted_share_to_change() -> None:
    flags = [True] * 10 + [False] * 90
    w = balanced_weights(flags, change_fraction=0.6)
    assert w.sum() == pytest.approx(1.0)
    assert w[:10].sum() == pytest.approx(0.6)


def test_draws_are_balanced_and_reproducible_per_epoch() -> None:
    flags = [True] * 20 + [False] * 980
    sampler = BalancedSampler(flags, num_samples=4000, change_fraction=0.5, seed=7)
    draws = list(sampler)
    assert 0.45 < np.mean([flags[i] for i in draws]) < 0.55
    assert list(sampler) == draws
    sampler.set_epoch(1)
    assert list(sampler) != draws


def test_ranks_share_one_epoch_without_overlap_of_positions() -> None:
    flags = [True, False] * 50
    whole = list(BalancedSampler(flags, num_samples=64, seed=3))
    parts = [list(BalancedSampler(flags, num_samples=64, seed=3, rank=r, world_size=2))
             for r in range(2)]
    assert len(parts[0]) == len(parts[1]) == 32
    assert parts[0] == whole[0::2] and parts[1] == whole[1::2]
