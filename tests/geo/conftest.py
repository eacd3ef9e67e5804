"""Tiny rasters for the geo tests, written with rasterio into each test's tmp_path."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning
from scipy import ndimage

CRS_IX = "EPSG:6677"  # JGD2011 plane rectangular zone IX (Tokyo)
ORIGIN = (-5000.0, -30000.0)  # x, y of the upper-left corner used by most tests

WriteRaster = Callable[..., Path]


def texture(height: int, width: int, bands: int = 3, seed: int = 0, sigma: float = 2.0
            ) -> np.ndarray:
    """Smooth random uint8 texture (1..255): correlates well, interpolates well."""
    rng = np.random.default_rng(seed)
    out = np.empty((bands, height, width), dtype=np.uint8)
    for b in range(bands):
        f = ndimage.gaussian_filter(rng.normal(size=(height, width)), sigma, mode="wrap")
        f = f / (f.std() + 1e-12) * 40 + 128
        out[b] = np.clip(np.rint(f), 1, 255).astype(np.uint8)
    return out


def write_raster(path: Path, data: np.ndarray, *, crs: str | None = CRS_IX,
                 transform: Affine | None = None, gsd: float = 0.2,
                 origin: tuple[float, float] = ORIGIN, nodata: float | None = None,
                 colorinterp: Sequence[ColorInterp] | None = None,
                 mask: np.ndarray | None = None, driver: str = "GTiff", georef: bool = True,
                 **extra: Any) -> Path:
    """Write ``data`` (bands, h, w) as a raster; ``transform=None`` → north-up at ``gsd``.

    ``georef=False`` writes no geotransform (and, with ``crs=None``, no georeferencing).
    """
    if transform is None:
        transform = Affine(gsd, 0.0, origin[0], 0.0, -gsd, origin[1])
    profile: dict[str, Any] = {"driver": driver, "width": data.shape[2],
                               "height": data.shape[1], "count": data.shape[0],
                               "dtype": data.dtype.name, **extra}
    if crs is not None:
        profile["crs"] = crs
    if georef:
        profile["transform"] = transform
    if nodata is not None:
        profile["nodata"] = nodata
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w",
                                                                         **profile) as ds:
            ds.write(data)
            if colorinterp is not None:
                ds.colorinterp = list(colorinterp)
            if mask is not None:
                ds.write_mask(mask.astype(np.uint8) * 255)
    return path


@pytest.fixture
def make_raster() -> WriteRaster:
    """The :func:`write_raster` helper as a fixture."""
    return write_raster


@pytest.fixture
def make_texture() -> Callable[..., np.ndarray]:
    """The :func:`texture` helper as a fixture."""
    return texture
