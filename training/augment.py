"""Paired augmentation of change chips (albumentations).

One *geometric* transform (flips, quarter turns, a small scale-rotate) is drawn per item and
applied identically to both dates and every mask, so labels stay on their buildings. The
*photometric* changes (brightness/contrast, hue/saturation, gamma, blur, JPEG, shadow) are drawn
independently for each date, as two flights never share radiometry. Each date is also shifted
independently by up to ``max_shift_px`` (sub-pixel, misregistration between flights), while the
masks stay put.

``realism`` swaps the photometric set for a stronger date-to-date one made for real photographs
(:func:`realism_transform`: season and colour temperature, tone, sun and shadow, haze, JPEG,
blur or sharpening, sensor noise, and a local warp of up to about a pixel standing in for
building lean). ``swap_p`` swaps the two dates of an item, and with them the channels of the
target (new ↔ demolished) and the building masks: the temporal-symmetry augmentation.

Acts on the dataset item dict described in :mod:`idou.training.datasets.footprints`.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np

IGNORE = 255
_MASK_KEYS = ("buildings_before", "buildings_after")


def geometric_transform(scale_rotate: bool = True, seed: int | None = None) -> A.Compose:
    """Flips, quarter turns and an optional small scale-rotate; masks are padded with 255."""
    steps: list[Any] = [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomRotate90(p=1.0)]
    if scale_rotate:
        steps.append(A.Affine(scale=(0.9, 1.1), rotate=(-12, 12), fill=0, fill_mask=IGNORE,
                              border_mode=cv2.BORDER_CONSTANT, p=0.3))
    return A.Compose(steps, additional_targets={"after": "image"}, seed=seed)


def photometric_transform(seed: int | None = None) -> A.Compose:
    """Radiometric changes for one date; draw it separately for each date."""
    return A.Compose([
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.8),
        A.HueSaturationValue(hue_shift_limit=8, sat_shift_limit=15, val_shift_limit=10, p=0.5),
        A.RandomGamma(gamma_limit=(80, 125), p=0.3),
        A.GaussianBlur(blur_limit=(3, 5), p=0.15),
        A.ImageCompression(quality_range=(50, 95), p=0.3),
        A.RandomShadow(num_shadows_limit=(1, 2), shadow_dimension=5, p=0.15),
    ], seed=seed)


def realism_transform(seed: int | None = None) -> A.Compose:
    """Date-to-date differences of real flights for one date; draw it separately for each date.

    Masks are not passed through it: the warp (lean, up to about 1 px) is the image's own.
    """
    return A.Compose([
        A.PlanckianJitter(mode="blackbody", p=0.3),  # colour temperature: sun, season
        A.RandomBrightnessContrast(brightness_limit=0.25, contrast_limit=0.25, p=0.8),
        A.HueSaturationValue(hue_shift_limit=12, sat_shift_limit=25, val_shift_limit=15,
                             p=0.6),  # season, vegetation
        A.RandomToneCurve(scale=0.15, p=0.3),
        A.RandomGamma(gamma_limit=(75, 135), p=0.3),
        A.RandomShadow(num_shadows_limit=(1, 3), shadow_dimension=5, p=0.25),
        A.RandomFog(fog_coef_range=(0.05, 0.2), alpha_coef=0.08, p=0.1),  # haze
        A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.Sharpen(alpha=(0.1, 0.3)),
                 A.Downscale(scale_range=(0.5, 0.9))], p=0.35),
        A.GaussNoise(std_range=(0.01, 0.04), p=0.2),
        A.GridDistortion(num_steps=4, distort_limit=(-0.03, 0.03), p=0.2),  # lean
        A.ImageCompression(quality_range=(40, 95), p=0.4),
    ], seed=seed)


def swap_dates(item: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same pair with before and after exchanged: new and demolished swap channels."""
    out = dict(item)
    out["before"], out["after"] = item["after"], item["before"]
    out["target"] = np.ascontiguousarray(item["target"][::-1])
    if "buildings_before" in item and "buildings_after" in item:
        out["buildings_before"] = item["buildings_after"]
        out["buildings_after"] = item["buildings_before"]
    return out


def shift_image(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Translate an H×W×C image by (dx, dy) pixels, bilinear, edges reflected."""
    h, w = image.shape[:2]
    matrix = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]], dtype=np.float64)
    out = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT_101)
    return out.reshape(image.shape)


class PairedAugment:
    """Callable that augments one item dict (returns a new dict).

    Args:
        max_shift_px: largest independent shift of each date, in pixels (0 = none).
        shift_p: probability that a date is shifted.
        photometric: apply per-date photometric changes.
        scale_rotate: include the small scale-rotate in the geometric transform.
        seed: seed of all random draws (None = random).
        realism: use :func:`realism_transform` instead of the milder photometric set.
        swap_p: probability of swapping the dates (:func:`swap_dates`).
    """

    def __init__(self, max_shift_px: float = 2.0, shift_p: float = 0.5, photometric: bool = True,
                 scale_rotate: bool = True, seed: int | None = None, realism: bool = False,
                 swap_p: float = 0.0) -> None:
        self.rng = np.random.default_rng(seed)
        self.geometric = geometric_transform(scale_rotate, seed)
        make = realism_transform if realism else photometric_transform
        self.photo = ([make(None if seed is None else seed + 1),
                       make(None if seed is None else seed + 2)]
                      if photometric else None)
        self.max_shift_px = max_shift_px
        self.shift_p = shift_p
        self.swap_p = swap_p

    def __call__(self, item: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.swap_p > 0 and self.rng.random() < self.swap_p:
            item = swap_dates(item)
        target = item["target"]
        layers = [target[0], target[1]] + [item[k] for k in _MASK_KEYS if k in item]
        masks = np.stack(layers, axis=-1)
        out = self.geometric(image=item["before"], after=item["after"], mask=masks)
        before, after, masks = out["image"], out["after"], out["mask"]
        if self.photo is not None:
            before = self.photo[0](image=before)["image"]
            after = self.photo[1](image=after)["image"]
        if self.max_shift_px > 0:
            before = self._maybe_shift(before)
            after = self._maybe_shift(after)
        result = dict(item)
        result["before"] = np.ascontiguousarray(before)
        result["after"] = np.ascontiguousarray(after)
        result["target"] = np.ascontiguousarray(np.moveaxis(masks[..., :2], -1, 0))
        for i, key in enumerate(k for k in _MASK_KEYS if k in item):
            result[key] = np.ascontiguousarray(masks[..., 2 + i])
        return result

    def _maybe_shift(self, image: np.ndarray) -> np.ndarray:
        if self.rng.random() >= self.shift_p:
            return image
        dx, dy = self.rng.uniform(-self.max_shift_px, self.max_shift_px, size=2)
        return shift_image(image, float(dx), float(dy))
