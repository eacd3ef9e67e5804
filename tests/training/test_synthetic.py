"""Chips of generated scenes: labels agree with the generator's truth, the cache round-trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from idou.training.datasets.footprints import rasterize_footprints
from idou.training.datasets.synthetic import SyntheticChipDataset, load_scene, make_scene

SEED, SIZE = 950001, 512


def test_scene_labels_cover_the_generators_truth() -> None:
    from idou.geo.synthetic.flight import make_flight_pair

    scene = make_scene(SEED, SIZE, factor=2)
    truth = make_flight_pair(SEED, SIZE).truth
    for channel, index in (("new", 0), ("demolished", 1)):
        rows = truth[truth["channel"] == channel]
        assert len(rows), f"the generator made no {channel} change"
        for geom in rows.geometry:
            inside = rasterize_footprints([geom], scene.transform, scene.valid.shape)
            if inside.sum() < 20 or not scene.valid[inside].all():
                continue
            labels = scene.target[index][inside]
            assert np.isin(labels, (1, 255)).all()
            assert (labels == 1).mean() > 0.3
    # nothing is labelled change outside the truth
    everywhere = rasterize_footprints(list(truth.geometry), scene.transform, scene.valid.shape)
    assert not ((scene.target == 1).any(axis=0) & ~everywhere).any()


def test_chips_follow_the_item_contract_and_the_cache_round_trips(tmp_path: Path) -> None:
    ds = SyntheticChipDataset([SEED], SIZE, gsd_m=0.4, chip_size=64, cache_dir=tmp_path)
    assert len(ds) > 0 and any(ds.has_change)
    item = ds[int(np.flatnonzero(ds.has_change)[0])]
    assert item["before"].shape == item["after"].shape == (64, 64, 3)
    assert item["before"].dtype == np.uint8 and item["target"].shape == (2, 64, 64)
    assert set(np.unique(item["target"])) <= {0, 1, 255} and (item["target"] == 1).any()
    assert item["buildings_before"].shape == (64, 64)
    cached = list(tmp_path.glob("scene-*.npz"))
    assert len(cached) == 1
    again = load_scene(SEED, SIZE, 2, 1, 4.0, tmp_path)
    assert np.array_equal(again.before, ds.scenes[0].before)
    assert np.array_equal(again.target, ds.scenes[0].target)
    assert again.transform == ds.scenes[0].transform


def test_gsd_must_be_a_multiple_of_the_generators() -> None:
    with pytest.raises(ValueError, match="multiple of 0.2"):
        SyntheticChipDataset([SEED], SIZE, gsd_m=0.3)


def test_hard_change_mask_marks_extensions_and_rebuilt_houses() -> None:
    from idou.geo.synthetic.flight import make_flight_pair
    from idou.training.datasets.synthetic import hard_change_mask

    scene = make_scene(SEED, SIZE, factor=2)
    truth = make_flight_pair(SEED, SIZE).truth
    hard = hard_change_mask(scene)
    checked = 0
    for kind, geom in zip(truth["change_type"], truth.geometry, strict=True):
        inside = rasterize_footprints([geom], scene.transform, scene.valid.shape)
        if inside.sum() < 20 or not scene.valid[inside].all():
            continue
        if kind in ("extension", "rebuilt"):
            assert hard[inside].any(), kind
            checked += 1
        elif kind == "new":
            assert not hard[inside].any()
    assert checked > 0
