"""Estimate how far the two flights are shifted against each other (phase correlation).

The shift is measured, not corrected: the model tolerates about 2 px. Windows are read through
an :class:`~idou.geo.raster.align.AlignedPair`, so the estimate is in pixels of the common grid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from rasterio.windows import Window

from idou.geo.raster.grid import Grid

if TYPE_CHECKING:
    from idou.geo.raster.align import AlignedPair

WARN_PX = 3.0


def phase_correlation(reference: np.ndarray, moved: np.ndarray, upsample: int = 20
                      ) -> tuple[float, float, float]:
    """Shift of ``moved`` against ``reference`` by phase correlation, to 1/upsample px.

    Args:
        reference: 2-D grayscale image.
        moved: Same shape; ``moved(y, x) ≈ reference(y - dy, x - dx)``.
        upsample: Sub-pixel refinement factor (matrix-multiply DFT around the peak).

    Returns:
        ``(dx, dy, peak)``: the shift in pixels (x to the right, y down) and the normalised
        correlation peak height (about 1 for a clean match, near 0 for no match).
    """
    a = _prepare(reference)
    b = _prepare(moved)
    fa, fb = np.fft.fft2(a), np.fft.fft2(b)
    cross = fb * np.conj(fa)
    cross /= np.maximum(np.abs(cross), 1e-12)
    corr = np.fft.ifft2(cross)
    mag = np.abs(corr)
    peak_idx = np.unravel_index(int(np.argmax(mag)), mag.shape)
    peak = float(mag[peak_idx])
    shifts = np.array(peak_idx, dtype=float)
    dims = np.array(mag.shape)
    shifts[shifts > dims // 2] -= dims[shifts > dims // 2]
    if upsample > 1:
        region = int(np.ceil(upsample * 1.5))
        offset = region // 2 - np.round(shifts * upsample)
        local = np.abs(_upsampled_dft(np.conj(cross), region, upsample, offset)).conj()
        loc = np.array(np.unravel_index(int(np.argmax(local)), local.shape), dtype=float)
        shifts = np.round(shifts * upsample) / upsample + (loc - region // 2) / upsample
    dy, dx = float(shifts[0]), float(shifts[1])
    return dx, dy, peak


def _prepare(img: np.ndarray) -> np.ndarray:
    """Zero-mean, Hann-windowed float image (suppresses edge effects)."""
    x = np.asarray(img, dtype=np.float64)
    x = x - x.mean()
    wy = np.hanning(x.shape[0])
    wx = np.hanning(x.shape[1])
    return x * np.outer(wy, wx)


def _upsampled_dft(data: np.ndarray, region: int, upsample: int, offset: np.ndarray
                   ) -> np.ndarray:
    """Inverse DFT of ``data`` on a ``region``² patch upsampled by ``upsample`` at ``offset``.

    The matrix-multiply DFT of Guizar-Sicairos et al. (2008): only the patch is computed.
    """
    ny, nx = data.shape
    fy = np.fft.ifftshift(np.arange(ny)) - ny // 2
    fx = np.fft.ifftshift(np.arange(nx)) - nx // 2
    ry = np.arange(region) - offset[0]
    rx = np.arange(region) - offset[1]
    ky = np.exp((-2j * np.pi / (ny * upsample)) * np.outer(ry, fy))
    kx = np.exp((-2j * np.pi / (nx * upsample)) * np.outer(fx, rx))
    return ky @ data @ kx


def sample_windows(grid: Grid, count: int = 5, size: int = 512) -> list[Window]:
    """Candidate windows for the estimate, spread over the grid, centre first.

    Windows are ``size`` px (less on a small grid, at least 64), taken from a 5 x 5 lattice
    inside the grid, ordered by distance from the centre and disjoint; callers keep the first
    ``count`` with data.
    """
    side = min(size, grid.width, grid.height)
    if side < 64:
        return []
    n = 5
    cols = np.linspace(0, grid.width - side, n).round().astype(int)
    rows = np.linspace(0, grid.height - side, n).round().astype(int)
    cands = {(int(r), int(c)) for r in rows for c in cols}
    cy, cx = (grid.height - side) / 2, (grid.width - side) / 2
    ordered = sorted(cands, key=lambda rc: ((rc[0] - cy) ** 2 + (rc[1] - cx) ** 2, rc))
    chosen: list[tuple[int, int]] = []
    for r, c in ordered:  # disjoint windows: overlapping ones would agree on spurious peaks
        if all(abs(r - r2) >= side or abs(c - c2) >= side for r2, c2 in chosen):
            chosen.append((r, c))
    return [Window(c, r, side, side) for r, c in chosen]


def estimate_misregistration(pair: AlignedPair, count: int = 5, size: int = 512,
                             min_valid: float = 0.9, min_peak: float = 0.03,
                             agree_px: float = 1.0) -> tuple[float, float] | None:
    """Median shift (dx, dy) in grid pixels of the after flight against the before flight.

    Reads up to ``count`` windows of ``size`` px where both flights hold data, correlates their
    grayscale images and returns the median shift. The estimate is trusted only when most
    windows agree within ``agree_px`` of the median (or, with a single usable window, its peak is
    clearly high): unrelated images give scattered shifts. None when nothing is trustworthy (too
    little overlap, no texture, or scenes that do not match).
    """
    estimates: list[tuple[float, float, float]] = []
    for window in sample_windows(pair.grid, count * 5, size):
        if len(estimates) >= count:
            break
        if pair.valid_fraction(window) < min_valid:
            continue
        before, after, valid = pair.read(window)
        if valid.mean() < min_valid:
            continue
        gb = _gray(before, valid)
        ga = _gray(after, valid)
        if gb.std() < 1.0 or ga.std() < 1.0:
            continue
        dx, dy, peak = phase_correlation(gb, ga)
        if peak >= min_peak:
            estimates.append((dx, dy, peak))
    if not estimates:
        return None
    arr = np.array(estimates)
    median = np.median(arr[:, :2], axis=0)
    if len(arr) == 1:
        return (float(median[0]), float(median[1])) if arr[0, 2] >= 3 * min_peak else None
    close = np.hypot(*(arr[:, :2] - median).T) <= agree_px
    if close.sum() < max(2, (len(arr) + 1) // 2):
        return None
    return (float(median[0]), float(median[1]))


def _gray(bands: np.ndarray, valid: np.ndarray) -> np.ndarray:
    g = bands.astype(np.float64).mean(axis=0)
    if not valid.all():
        g[~valid] = g[valid].mean() if valid.any() else 0.0
    return g
