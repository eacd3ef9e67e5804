"""Write a flight pair as municipal deliveries look: tiled JPEG GeoTIFFs and GeoPackages."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling

from idou.geo.files.owned_outputs import check_replaceable, marker_tags
from idou.geo.synthetic.flight import FlightPair

OVERVIEWS = (2, 4, 8)
BLOCK = 256


def write_orthophoto(path: Path, rgb: np.ndarray, valid: np.ndarray, transform: Affine,
                     crs: str, quality: int = 88, tags: dict[str, str] | None = None) -> None:
    """Write an RGB uint8 orthophoto: tiled, JPEG in YCbCr, internal mask, overviews 2/4/8.

    The nodata margin is an internal dataset mask (JPEG blurs a nodata value of 0), and the
    pixels there are 0 as well.
    """
    h, w, _ = rgb.shape
    profile = {
        "driver": "GTiff", "width": w, "height": h, "count": 3, "dtype": "uint8",
        "crs": crs, "transform": transform, "tiled": True, "blockxsize": BLOCK,
        "blockysize": BLOCK, "compress": "JPEG", "photometric": "YCBCR",
        "jpeg_quality": quality, "interleave": "pixel",
    }
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(np.moveaxis(rgb, -1, 0))
        dst.write_mask(valid.astype(np.uint8) * 255)
        dst.build_overviews(list(OVERVIEWS), Resampling.average)
        dst.update_tags(ns="rio_overview", resampling="average")
        if tags:
            dst.update_tags(**tags)
        dst.colorinterp = [rasterio.enums.ColorInterp.red, rasterio.enums.ColorInterp.green,
                           rasterio.enums.ColorInterp.blue]


def _write_gpkg(gdf: gpd.GeoDataFrame, path: Path, layer: str) -> None:
    if path.exists():
        path.unlink()
    gdf.to_file(path, layer=layer, driver="GPKG", engine="pyogrio", metadata=marker_tags())


def sample_paths(out_dir: Path) -> dict[str, Path]:
    """The files a flight pair is written to, by name."""
    return {name: Path(out_dir) / f"{name}{suffix}" for name, suffix in (
        ("flight_2024", ".tif"), ("flight_2025", ".tif"), ("parcels", ".gpkg"),
        ("buildings_2024", ".gpkg"), ("buildings_2025", ".gpkg"), ("truth", ".gpkg"))}


def check_sample_targets(out_dir: Path, force: bool) -> dict[str, Path]:
    """Refuse (UserInputError) files of the samples' names unless ``force`` and idou's own."""
    paths = sample_paths(out_dir)
    for path in paths.values():
        check_replaceable(path, force=force, what="OUT_DIR")
    return paths


def write_flight_pair(pair: FlightPair, out_dir: Path, force: bool = False) -> dict[str, Path]:
    """Write the pair's rasters and vectors into ``out_dir`` (created if missing).

    Args:
        pair: the generated flight pair.
        out_dir: the folder to write into.
        force: replace files of the same names that idou wrote (others are never replaced).

    Returns:
        Paths by name: flight_2024, flight_2025, parcels, buildings_2024, buildings_2025, truth.

    Raises:
        UserInputError: a file of the same name exists (without ``force``, or not idou's).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = check_sample_targets(out_dir, force)
    tags = {"IDOU_SYNTHETIC": "yes: made by idou.geo.synthetic, not a real photo",
            **marker_tags()}
    tags.update({f"IDOU_{k.upper()}": str(v) for k, v in pair.info.items()})
    write_orthophoto(paths["flight_2024"], pair.before, pair.before_valid, pair.before_transform,
                     pair.crs, tags={**tags, "IDOU_FLIGHT": "2024"})
    write_orthophoto(paths["flight_2025"], pair.after, pair.after_valid, pair.after_transform,
                     pair.crs, tags={**tags, "IDOU_FLIGHT": "2025"})
    _write_gpkg(pair.parcels, paths["parcels"], "parcels")
    _write_gpkg(pair.buildings_before, paths["buildings_2024"], "buildings")
    _write_gpkg(pair.buildings_after, paths["buildings_2025"], "buildings")
    _write_gpkg(pair.truth, paths["truth"], "truth")
    return paths
