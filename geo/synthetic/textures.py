"""Noise fields used as textures: smooth random fields at a few scales, cheap to make."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """A zero-mean, unit-std random field whose features are about ``scale`` pixels wide.

    Made at a reduced resolution and interpolated up, so large scales cost little.
    """
    h, w = shape
    step = max(1.0, scale / 2.0)
    sh, sw = int(np.ceil(h / step)) + 3, int(np.ceil(w / step)) + 3
    small = rng.standard_normal((sh, sw)).astype(np.float32)
    if step > 1.0:
        small = ndimage.gaussian_filter(small, 0.8)
        big = ndimage.zoom(small, step, order=1, prefilter=False)[:h, :w]
    else:
        big = ndimage.gaussian_filter(small, scale / 2.5)[:h, :w]
    big = big - big.mean()
    std = float(big.std())
    return (big / (std if std > 0 else 1.0)).astype(np.float32)


class NoiseBank:
    """Static texture fields for a canvas, shared by both flights so unchanged ground matches."""

    def __init__(self, rng: np.random.Generator, shape: tuple[int, int]) -> None:
        self.fine = smooth_noise(rng, shape, 1.2)
        self.mid = smooth_noise(rng, shape, 8.0)
        self.coarse = smooth_noise(rng, shape, 60.0)
        self.patch = smooth_noise(rng, shape, 25.0)
