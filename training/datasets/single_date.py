"""Change pairs made from single-date building masks (slippy-map tiles ``{images,labels}/Z/X/Y``).

A city with one flight and its building map, or a public single-date set such as
``shared/data/real_buildings/robosat/training``, becomes change training data in five ways
(``PAIR_KINDS``):

- ``unchanged``: the same tile as both dates (the training core's independent photometric
  augmentation per date makes the two differ); target all 0.
- ``new_by_removal`` / ``demolished_by_removal``: some labelled buildings are removed from one date
  (their pixels, grown by ``margin_px``, are filled with a patch of real open ground from the same
  or another tile, colour-matched to the surroundings; inpainted where no patch fits); the date
  that still has them shows them new / demolished.
- ``new_by_paste`` / ``demolished_by_paste``: buildings cut from another tile (with a small
  margin) are pasted onto open ground of one date.
- ``star_pair`` (after STAR, Zheng et al. 2021): two different tiles as before and after, labelled
  by *objects*, never by pixels: new = a building of after with no building of before at that
  place, demolished = the reverse (:func:`object_change_target`). Buildings that overlap one of
  the other date, and buildings under ``min_building_px``, are ignored (255); the rest of the
  scene, different as it is, is "no change". Swapping the two tiles swaps the channels.

Around every changed building the changed channel holds an ignore band (255) ``margin_px`` wide,
where the synthetic edit blends into the scene. Labels are read as building where > 0.
Each item is planned at construction (kind, tile, partner) so ``has_change`` is exact; the random
details of an edit (which buildings, where) are seeded by (seed, index, epoch), see ``set_epoch``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image
from scipy import ndimage

from idou.errors import InvalidOption, UserInputError

IGNORE = 255
IMAGE_SUFFIXES = (".webp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")
PAIR_KINDS = ("unchanged", "new_by_removal", "demolished_by_removal", "new_by_paste",
              "demolished_by_paste", "star_pair")
DEFAULT_WEIGHTS: dict[str, float] = {
    "unchanged": 0.25, "new_by_removal": 0.2, "demolished_by_removal": 0.2,
    "new_by_paste": 0.125, "demolished_by_paste": 0.125, "star_pair": 0.1,
}


@dataclass(frozen=True)
class SlippyTile:
    """One slippy-map tile: its image and its building mask."""

    key: str
    image: Path
    label: Path


@dataclass(frozen=True)
class _Plan:
    kind: str
    tile: int
    partner: int  # donor (paste, texture) or the other date (star_pair); -1 when unused
    has_change: bool


def find_tiles(root: str | Path) -> list[SlippyTile]:
    """Tiles under ``root/images/Z/X/Y.*`` that have a mask at ``root/labels/Z/X/Y.*``.

    Raises:
        UserInputError: ``root`` has no ``images/`` and ``labels/`` or no matching tiles.
    """
    root = Path(root)
    images_dir, labels_dir = root / "images", root / "labels"
    if not images_dir.is_dir() or not labels_dir.is_dir():
        raise UserInputError(
            f"{root} has no images/ and labels/ folders; pass a slippy-map folder such as "
            "robosat/training that holds images/Z/X/Y.webp and labels/Z/X/Y.png.")
    labels = {p.relative_to(labels_dir).with_suffix("").as_posix(): p
              for p in labels_dir.glob("*/*/*") if p.suffix.lower() in IMAGE_SUFFIXES}
    tiles = []
    for image in sorted(images_dir.glob("*/*/*")):
        key = image.relative_to(images_dir).with_suffix("").as_posix()
        if image.suffix.lower() in IMAGE_SUFFIXES and key in labels:
            tiles.append(SlippyTile(key, image, labels[key]))
    if not tiles:
        raise UserInputError(
            f"{root} has no tile with both images/Z/X/Y and labels/Z/X/Y; check the layout.")
    return tiles


def read_image(path: Path) -> np.ndarray:
    """A tile image as uint8 H×W×3."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def read_mask(path: Path) -> np.ndarray:
    """A building mask as bool H×W (building where the stored value is > 0)."""
    with Image.open(path) as im:
        return np.asarray(im) > 0


def object_change_target(buildings_before: np.ndarray, buildings_after: np.ndarray,
                         min_pixels: int = 1, margin_px: int = 0) -> np.ndarray:
    """The 2×H×W object-level change target of two building masks (0/1, 255 = ignore).

    A building (8-connected component) of ``after`` that touches no building of ``before`` is
    new (channel 0); one of ``before`` that touches none of ``after`` is demolished (channel 1).
    Buildings that overlap one of the other date (the same house, or a rebuild) and buildings
    under ``min_pixels`` are ignored in their channel, as is a band ``margin_px`` wide around
    each changed building. Swapping the dates swaps the channels.
    """
    before = buildings_before.astype(bool)
    after = buildings_after.astype(bool)
    target = np.zeros((2, *before.shape), np.uint8)
    for channel, (mine, other) in enumerate(((after, before), (before, after))):
        labels, count = ndimage.label(mine, structure=np.ones((3, 3), bool))
        if count == 0:
            continue
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        touched = np.bincount(labels[other], minlength=count + 1) > 0
        changed = (sizes >= min_pixels) & ~touched
        changed[0] = False
        is_changed = changed[labels]
        unsure = mine & ~is_changed
        band = _dilate(is_changed, margin_px) & ~is_changed & ~other
        target[channel][band | unsure] = IGNORE
        target[channel][is_changed] = 1
    return target


def building_components(mask: np.ndarray, min_pixels: int) -> list[np.ndarray]:
    """Boolean masks of the connected buildings in ``mask`` with at least ``min_pixels`` pixels."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return []
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    return [labels == i for i in range(1, count + 1) if sizes[i] >= min_pixels]


def _dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    if pixels <= 0:
        return mask.astype(bool)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def _find_ground(shape: np.ndarray, sources: list[tuple[np.ndarray, np.ndarray]],
                 rng: np.random.Generator, tries: int) -> np.ndarray | None:
    """A patch of real ground the size of ``shape``'s box: pixels under ``shape`` all ground."""
    ph, pw = shape.shape
    for image, ground in sources:
        height, width = ground.shape
        if ph > height or pw > width:
            continue
        for _ in range(tries):
            r = int(rng.integers(0, height - ph + 1))
            c = int(rng.integers(0, width - pw + 1))
            if ground[r:r + ph, c:c + pw][shape].all():
                return image[r:r + ph, c:c + pw].astype(np.float32)
    return None


def remove_buildings(image: np.ndarray, remove: np.ndarray, margin_px: int = 3,
                     keep: np.ndarray | None = None,
                     sources: list[tuple[np.ndarray, np.ndarray]] | None = None,
                     rng: np.random.Generator | None = None, tries: int = 40) -> np.ndarray:
    """Paint the buildings in ``remove`` out of ``image``.

    Each hole (a building grown by ``margin_px``, to take its edges and a little shadow with it)
    is filled with a patch of real ground copied from ``sources`` (pairs of an image and its bool
    "open ground" mask; the first source whose random position fits is used), shifted to the mean
    colour around the hole. Where no ground patch fits, the hole is inpainted from its
    surroundings. The fill is feathered into the scene.

    Args:
        image: uint8 H×W×3.
        remove: bool H×W, the building pixels to remove.
        margin_px: how far around the buildings the fill reaches.
        keep: bool H×W pixels the fill must not touch (neighbouring buildings that stay).
        sources: where to copy ground from; None or empty: inpaint only.
        rng: random positions of the ground patches.
        tries: random positions tried per source and hole.

    Returns:
        A new uint8 H×W×3 image.
    """
    region = _dilate(remove, margin_px)
    if keep is not None:
        region &= ~keep | remove
    if not region.any():
        return image.copy()
    rng = rng if rng is not None else np.random.default_rng(0)
    img = image.astype(np.float32)
    inpainted: np.ndarray | None = None
    fill = img.copy()
    holes, count = ndimage.label(region)
    for i, box in enumerate(ndimage.find_objects(holes), start=1):
        hole = holes[box] == i
        patch = _find_ground(hole, sources or [], rng, tries)
        ring = _dilate(holes == i, 3) & ~region
        if patch is None:
            if inpainted is None:
                inpainted = cv2.GaussianBlur(
                    cv2.inpaint(image, region.astype(np.uint8), max(3, margin_px + 2),
                                cv2.INPAINT_TELEA).astype(np.float32), (0, 0), 1.5)
            patch = inpainted[box]
        elif ring.any():
            patch = patch + (img[ring].mean(0) - patch[hole].mean(0))
        fill[box][hole] = patch[hole]
    alpha = cv2.GaussianBlur(region.astype(np.float32), (0, 0), 1.0)
    alpha = np.maximum(alpha, region.astype(np.float32) * (alpha > 0))[..., None]
    out = img * (1 - alpha) + fill * alpha
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def paste_building(image: np.ndarray, buildings: np.ndarray, donor_image: np.ndarray,
                   donor_building: np.ndarray, rng: np.random.Generator, margin_px: int = 1,
                   tries: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Paste one donor building onto open ground of ``image``.

    The donor building (grown by ``margin_px``), randomly rotated by a multiple of 90°, goes to
    the position among ``tries`` random ones that overlaps the least of the existing buildings
    (grown by ``margin_px + 2``).

    Returns:
        The new image and the bool mask of the pasted building pixels (empty if it cannot fit).
    """
    height, width = buildings.shape
    rows, cols = np.nonzero(donor_building)
    r0, r1 = rows.min(), rows.max() + 1
    c0, c1 = cols.min(), cols.max() + 1
    pad = margin_px
    r0, c0 = max(0, r0 - pad), max(0, c0 - pad)
    r1, c1 = min(donor_building.shape[0], r1 + pad), min(donor_building.shape[1], c1 + pad)
    patch = donor_image[r0:r1, c0:c1]
    shape = donor_building[r0:r1, c0:c1]
    k = int(rng.integers(4))
    patch, shape = np.rot90(patch, k), np.rot90(shape, k)
    ph, pw = shape.shape
    if ph > height or pw > width:
        return image.copy(), np.zeros_like(buildings, dtype=bool)
    blocked = _dilate(buildings, margin_px + 2)
    cut = _dilate(shape, margin_px)
    best: tuple[int, int, int] | None = None
    for _ in range(tries):
        r = int(rng.integers(0, height - ph + 1))
        c = int(rng.integers(0, width - pw + 1))
        overlap = int((blocked[r:r + ph, c:c + pw] & cut).sum())
        if best is None or overlap < best[0]:
            best = (overlap, r, c)
        if overlap == 0:
            break
    assert best is not None
    _, r, c = best
    alpha = cv2.GaussianBlur(cut.astype(np.float32), (0, 0), 0.7)
    alpha = np.maximum(alpha, shape.astype(np.float32))[..., None]
    out = image.astype(np.float32)
    out[r:r + ph, c:c + pw] = out[r:r + ph, c:c + pw] * (1 - alpha) + patch * alpha
    pasted = np.zeros_like(buildings, dtype=bool)
    pasted[r:r + ph, c:c + pw] = shape
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), pasted


def _fit(array: np.ndarray, shape: tuple[int, int], nearest: bool) -> np.ndarray:
    """Resize ``array`` to ``shape`` (H, W) when a partner tile has another size."""
    if array.shape[:2] == shape:
        return array
    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    resized = cv2.resize(array.astype(np.uint8), (shape[1], shape[0]),
                         interpolation=interpolation)
    return resized.astype(bool) if array.dtype == bool else resized


class SingleDateChangeDataset:
    """Change pairs made from single-date building masks (see the module docstring).

    Args:
        root: slippy-map folder with ``images/Z/X/Y.*`` and ``labels/Z/X/Y.*``.
        pairs_per_tile: items per tile (the dataset length is tiles × this).
        weights: relative frequency of each kind in ``PAIR_KINDS`` (missing kinds get 0).
        seed: fixes the plan (kinds, partners) and, with the index and epoch, every edit.
        max_changes: at most this many buildings removed or pasted per pair.
        min_building_px: buildings smaller than this are never removed or pasted.
        margin_px: fill margin around removed buildings and width of the ignore band.

    Items: ``before``/``after`` uint8 H×W×3, ``target`` uint8 2×H×W (0/1, 255 ignore band),
    ``buildings_before``/``buildings_after`` uint8 H×W (0/1). ``has_change[i]`` and
    ``kinds[i]`` describe item i.
    """

    def __init__(self, root: str | Path, pairs_per_tile: int = 4,
                 weights: Mapping[str, float] | None = None, seed: int = 0,
                 max_changes: int = 3, min_building_px: int = 30, margin_px: int = 3) -> None:
        self.root = Path(root)
        self.tiles = find_tiles(self.root)
        weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
        unknown = set(weights) - set(PAIR_KINDS)
        if unknown:
            raise InvalidOption(
                f"unknown single-date pair kinds {sorted(unknown)}; use {', '.join(PAIR_KINDS)}.")
        probs = np.array([max(0.0, float(weights.get(k, 0.0))) for k in PAIR_KINDS])
        if probs.sum() <= 0:
            raise UserInputError("single-date pair weights are all 0; give one kind a weight.")
        self.probs = probs / probs.sum()
        self.seed = seed
        self.epoch = 0
        self.max_changes = max_changes
        self.min_building_px = min_building_px
        self.margin_px = margin_px
        masks = [read_mask(t.label) for t in self.tiles]
        self._fraction = np.array([m.mean() for m in masks])
        self._eligible = np.array([bool(building_components(m, min_building_px))
                                   for m in masks])
        self.plans = self._plan(pairs_per_tile, masks)
        self.has_change: list[bool] = [p.has_change for p in self.plans]
        self.kinds: list[str] = [p.kind for p in self.plans]

    def _plan(self, pairs_per_tile: int, masks: list[np.ndarray]) -> list[_Plan]:
        rng = np.random.default_rng([self.seed, 7919])
        donors = np.flatnonzero(self._eligible)
        n = len(self.tiles)
        plans = []
        for index in range(n * pairs_per_tile):
            tile = index % n
            kind = str(rng.choice(PAIR_KINDS, p=self.probs))
            if kind.endswith("_by_removal") and not self._eligible[tile]:
                kind = kind.replace("_by_removal", "_by_paste")
            if kind.endswith("_by_paste") and (donors.size == 0 or self._fraction[tile] > 0.5):
                kind = kind.replace("_by_paste", "_by_removal")
                if not self._eligible[tile]:
                    kind = "unchanged"
            if kind == "star_pair" and n < 2:
                kind = "unchanged"
            partner = -1
            if kind == "star_pair":
                partner = int((tile + rng.integers(1, n)) % n)
            elif kind != "unchanged" and donors.size:
                partner = int(rng.choice(donors))
            if kind == "star_pair":
                b = masks[tile]
                a = _fit(masks[partner], b.shape, nearest=True)
                change = bool((object_change_target(b, a, self.min_building_px) == 1).any())
            else:
                change = kind != "unchanged"
            plans.append(_Plan(kind, tile, partner, change))
        return plans

    def set_epoch(self, epoch: int) -> None:
        """Draw other buildings and positions for the same plan (has_change stays true)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.plans)

    def __getitem__(self, index: int) -> dict[str, Any]:
        plan = self.plans[index]
        rng = np.random.default_rng([self.seed, index, self.epoch])
        tile = self.tiles[plan.tile]
        image = read_image(tile.image)
        mask = read_mask(tile.label)
        if plan.kind == "unchanged":
            return _item(image, image.copy(), mask, mask, np.zeros((2, *mask.shape), np.uint8))
        partner = self.tiles[plan.partner]
        partner_image = _fit(read_image(partner.image), mask.shape, nearest=False)
        partner_mask = _fit(read_mask(partner.label), mask.shape, nearest=True)
        if plan.kind == "star_pair":
            return _item(image, partner_image, mask, partner_mask,
                         object_change_target(mask, partner_mask, self.min_building_px,
                                              self.margin_px))
        channel = 0 if plan.kind.startswith("new") else 1
        if plan.kind.endswith("_by_removal"):
            edited, edited_mask, changed, unsure = self._remove(image, mask, partner_image,
                                                                 partner_mask, rng)
        else:
            edited, edited_mask, changed, unsure = self._paste(image, mask, partner_image,
                                                                partner_mask, rng)
        target = np.zeros((2, *mask.shape), np.uint8)
        band = (_dilate(changed, self.margin_px) & ~changed) | unsure
        target[channel][band] = IGNORE
        target[channel][changed] = 1
        # Removal: the edited image lacks the buildings; paste: the edited image has them.
        has_them = plan.kind.endswith("_by_paste")
        with_b, with_m = (edited, edited_mask) if has_them else (image, mask)
        without_b, without_m = (image, mask) if has_them else (edited, edited_mask)
        if channel == 0:
            return _item(without_b, with_b, without_m, with_m, target)
        return _item(with_b, without_b, with_m, without_m, target)

    def _remove(self, image: np.ndarray, mask: np.ndarray, donor_image: np.ndarray,
                donor_mask: np.ndarray, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        components = building_components(mask, self.min_building_px)
        count = int(rng.integers(1, min(len(components), self.max_changes) + 1))
        chosen = rng.choice(len(components), size=count, replace=False)
        remove = np.logical_or.reduce([components[i] for i in chosen])
        region = _dilate(remove, self.margin_px)
        sources = [(image, ~_dilate(mask, 3) & ~_dilate(region, 2)),
                   (donor_image, ~_dilate(donor_mask, 3))]
        edited = remove_buildings(image, remove, self.margin_px, keep=mask & ~remove,
                                  sources=sources, rng=rng)
        return edited, mask & ~remove, remove, np.zeros_like(remove)

    def _paste(self, image: np.ndarray, mask: np.ndarray, donor_image: np.ndarray,
               donor_mask: np.ndarray, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        components = building_components(donor_mask, self.min_building_px)
        whole = [c for c in components if not _touches_border(c)]  # no cut-off shapes
        components = whole or components
        count = int(rng.integers(1, min(len(components), self.max_changes) + 1))
        edited, current = image, mask.copy()
        changed = np.zeros_like(mask, dtype=bool)
        covered = np.zeros_like(mask, dtype=bool)  # old buildings pasted over: looks changed
        for i in rng.choice(len(components), size=count, replace=False):
            edited, pasted = paste_building(edited, current, donor_image, components[i], rng)
            covered |= pasted & mask
            changed |= pasted & ~current
            current |= pasted
        if not changed.any() and building_components(mask, self.min_building_px):
            return self._remove(image, mask, donor_image, donor_mask, rng)  # nowhere to paste
        return edited, current, changed, covered


def _touches_border(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def _item(before: np.ndarray, after: np.ndarray, buildings_before: np.ndarray,
          buildings_after: np.ndarray, target: np.ndarray) -> dict[str, Any]:
    return {"before": before, "after": after, "target": target,
            "buildings_before": buildings_before.astype(np.uint8),
            "buildings_after": buildings_after.astype(np.uint8)}
