"""Single-date building masks become change pairs: removal, paste, STAR pairs, no change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from idou.errors import InvalidOption, UserInputError
from idou.training.datasets.single_date import (
    PAIR_KINDS,
    SingleDateChangeDataset,
    object_change_target,
    remove_buildings,
)

SIZE = 64
ROOF = (230, 40, 40)  # buildings are bright red roofs on green-grey ground


def _ground(rng: np.random.Generator) -> np.ndarray:
    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    img[..., 0] = rng.integers(60, 80, (SIZE, SIZE))
    img[..., 1] = rng.integers(110, 130, (SIZE, SIZE))
    img[..., 2] = rng.integers(60, 80, (SIZE, SIZE))
    return img


def _tile(root: Path, x: int, y: int, boxes: list[tuple[int, int, int, int]], seed: int) -> None:
    img = _ground(np.random.default_rng(seed))
    mask = np.zeros((SIZE, SIZE), np.uint8)
    for r0, c0, r1, c1 in boxes:
        img[r0:r1, c0:c1] = ROOF
        mask[r0:r1, c0:c1] = 1
    for sub, name, array in (("images", f"{y}.webp", img), ("labels", f"{y}.png", mask)):
        folder = root / sub / "18" / str(x)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(folder / name, lossless=True) if sub == "images" else \
            Image.fromarray(array).save(folder / name)


@pytest.fixture
def tiles(tmp_path: Path) -> Path:
    _tile(tmp_path, 100, 200, [(8, 8, 20, 22), (40, 36, 54, 52)], seed=1)
    _tile(tmp_path, 100, 201, [], seed=2)
    _tile(tmp_path, 101, 200, [(24, 24, 36, 40)], seed=3)
    return tmp_path


def _roof(image: np.ndarray) -> np.ndarray:
    return (image[..., 0] > 180) & (image[..., 1] < 90)


def test_every_kind_yields_the_item_contract(tiles: Path) -> None:
    ds = SingleDateChangeDataset(tiles, pairs_per_tile=6, seed=3)
    assert len(ds) == 18
    assert {"unchanged", "star_pair"} <= set(ds.kinds) <= set(PAIR_KINDS)
    for i in range(len(ds)):
        item = ds[i]
        assert item["before"].shape == (SIZE, SIZE, 3) and item["before"].dtype == np.uint8
        assert item["after"].shape == (SIZE, SIZE, 3) and item["after"].dtype == np.uint8
        target = item["target"]
        assert target.shape == (2, SIZE, SIZE) and target.dtype == np.uint8
        assert set(np.unique(target)) <= {0, 1, 255}
        for key in ("buildings_before", "buildings_after"):
            assert item[key].shape == (SIZE, SIZE) and item[key].dtype == np.uint8
        assert ds.has_change[i] == bool((target == 1).any()), (i, ds.kinds[i])


def test_removal_erases_the_buildings_from_before_and_marks_them_new(tiles: Path) -> None:
    ds = SingleDateChangeDataset(tiles, pairs_per_tile=4, weights={"new_by_removal": 1}, seed=0)
    # The building-free tile cannot lose buildings: its items are pastes instead.
    checked = 0
    for i in range(len(ds)):
        if ds.kinds[i] != "new_by_removal":
            continue
        item = ds[i]
        new = item["target"][0] == 1
        assert new.any() and not (item["target"][1] == 1).any()
        assert _roof(item["after"])[new].all()          # after: the original tile
        assert not _roof(item["before"])[new].any()     # before: roof pixels painted out
        assert not item["buildings_before"][new].any() and item["buildings_after"][new].all()
        # Buildings that were not removed are untouched in both dates.
        kept = item["buildings_before"].astype(bool)
        assert np.array_equal(item["before"][kept], item["after"][kept])
        checked += 1
    assert checked >= 4
    assert set(ds.kinds) == {"new_by_removal", "new_by_paste"}


def test_demolition_by_removal_and_paste_puts_change_in_channel_1(tiles: Path) -> None:
    weights = {"demolished_by_removal": 1, "demolished_by_paste": 1}
    ds = SingleDateChangeDataset(tiles, pairs_per_tile=4, weights=weights, seed=5)
    assert set(ds.kinds) == {"demolished_by_removal", "demolished_by_paste"}
    for i in range(len(ds)):
        item = ds[i]
        gone = item["target"][1] == 1
        assert gone.any() and not (item["target"][0] == 1).any()
        assert _roof(item["before"])[gone].mean() > 0.9
        assert not _roof(item["after"])[gone].any()
        assert item["buildings_before"][gone].all() and not item["buildings_after"][gone].any()


def test_paste_adds_donor_roofs_on_open_ground(tiles: Path) -> None:
    ds = SingleDateChangeDataset(tiles, pairs_per_tile=3, weights={"new_by_paste": 1}, seed=2)
    for i in range(len(ds)):
        item = ds[i]
        new = item["target"][0] == 1
        assert new.any()
        assert not _roof(item["before"])[new].any()
        assert _roof(item["after"])[new].mean() > 0.9
        assert not item["buildings_before"][new].any()


def test_star_pairs_label_whole_buildings_never_the_scene(tiles: Path) -> None:
    ds = SingleDateChangeDataset(tiles, pairs_per_tile=4, weights={"star_pair": 1}, seed=1)
    assert set(ds.kinds) == {"star_pair"}
    seen_change = False
    for i in range(len(ds)):
        item = ds[i]
        before = item["buildings_before"].astype(bool)
        after = item["buildings_after"].astype(bool)
        new, demolished = item["target"][0] == 1, item["target"][1] == 1
        # two different tiles: the pictures differ nearly everywhere, the labels do not
        assert (item["before"] != item["after"]).any(-1).mean() > 0.9
        assert np.array_equal(new, after & ~before & new) and not (new & before).any()
        assert np.array_equal(demolished, before & ~after & demolished)
        assert not (item["target"] == 1).all(0).any()  # never both channels on one pixel
        assert (item["target"] == 0).mean() > 0.5  # most of the tile is "no change"
        assert ds.has_change[i] == bool(new.any() or demolished.any())
        seen_change |= ds.has_change[i]
    assert seen_change


def test_object_change_target_takes_whole_buildings_and_swaps_with_the_dates() -> None:
    before = np.zeros((20, 20), np.uint8)
    after = np.zeros((20, 20), np.uint8)
    before[2:6, 2:6] = 1  # stands in both dates (partly moved): neither new nor demolished
    after[3:7, 3:8] = 1
    after[10:15, 10:16] = 1  # new
    before[14:18, 1:5] = 1  # demolished
    after[0:2, 18:20] = 1  # new but under min_pixels: ignored
    target = object_change_target(before, after, min_pixels=5, margin_px=1)
    assert target[0][10:15, 10:16].all() and (target[0] == 1).sum() == 30
    assert target[1][14:18, 1:5].all() and (target[1] == 1).sum() == 16
    assert (target[0][3:7, 3:8] == 255).all() and (target[1][2:6, 2:6] == 255).all()
    assert (target[0][0:2, 18:20] == 255).all()
    assert target[0][9, 12] == 255 and target[0][8, 12] == 0  # the margin band
    assert np.array_equal(object_change_target(after, before, 5, 1), target[::-1])


def test_remove_buildings_fills_from_ground_sources() -> None:
    img = _ground(np.random.default_rng(0))
    building = np.zeros((SIZE, SIZE), bool)
    building[20:30, 20:34] = True
    img[building] = ROOF
    ground = ~np.pad(building, 4)[4:-4, 4:-4]
    out = remove_buildings(img, building, margin_px=2, sources=[(img, ground)],
                           rng=np.random.default_rng(0))
    assert not _roof(out)[building].any()
    assert abs(float(out[building][:, 1].mean()) - 120) < 15  # green-grey ground again
    far = np.ones_like(building)
    far[14:36, 14:40] = False
    assert np.array_equal(out[far], img[far])  # nothing outside the hole changes


def test_epochs_change_edits_but_not_the_plan(tiles: Path) -> None:
    ds = SingleDateChangeDataset(tiles, pairs_per_tile=4, weights={"new_by_paste": 1}, seed=0)
    first = [ds[i]["target"] for i in range(len(ds))]
    assert all(np.array_equal(ds[i]["target"], first[i]) for i in range(len(ds)))  # seeded
    flags = list(ds.has_change)
    ds.set_epoch(1)
    second = [ds[i]["target"] for i in range(len(ds))]
    assert ds.has_change == flags
    assert all((t == 1).any() for t in second)
    assert any(not np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_bad_folder_and_weights(tmp_path: Path, tiles: Path) -> None:
    with pytest.raises(UserInputError, match="images/"):
        SingleDateChangeDataset(tmp_path / "nothing")
    with pytest.raises(InvalidOption, match="kinds"):
        SingleDateChangeDataset(tiles, weights={"teleport": 1})


def test_real_robosat_tiles_pair_into_changes(shared_data: Path) -> None:
    root = shared_data / "real_buildings" / "robosat" / "evaluation"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    ds = SingleDateChangeDataset(root, pairs_per_tile=1, seed=0)
    assert len(ds) == 73
    seen = set()
    for i in range(len(ds)):
        if ds.kinds[i] in seen:
            continue
        seen.add(ds.kinds[i])
        item = ds[i]
        assert item["before"].shape == (256, 256, 3) and item["target"].shape == (2, 256, 256)
        assert ds.has_change[i] == bool((item["target"] == 1).any())
    assert len(seen) >= 4


def test_held_back_tiles_become_a_chip_folder_that_idou_tune_reads(tiles: Path,
                                                                  tmp_path: Path) -> None:
    """benchmarks/single_date_pairs.py: the pair maker's pairs as A/, B/, label/ (new = 255)."""
    import importlib.util

    from idou.training.chips import find_chips, is_chip_folder, read_change_label

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "single_date_pairs.py"
    spec = importlib.util.spec_from_file_location("single_date_pairs", path)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "pairs"
    assert script.main([str(tiles), str(out), "--pairs-per-tile", "4", "--seed", "5"]) == 0
    assert is_chip_folder(out)
    chips = find_chips(out)
    ds = SingleDateChangeDataset(tiles, pairs_per_tile=4, seed=5)
    assert len(chips) == len(ds) == 12
    for i, chip in enumerate(chips):
        item = ds[i]
        assert np.array_equal(np.asarray(Image.open(chip.before)), item["before"])
        assert np.array_equal(read_change_label(chip.label), item["target"][0] == 1)
    assert any(read_change_label(c.label).any() for c in chips)
    assert script.main([str(tiles), str(out)]) == 2  # never written over
