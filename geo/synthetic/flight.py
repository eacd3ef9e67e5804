"""The public generator: two flights over one synthetic town, with the truth of what changed."""

from __future__ import annotations

from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
from affine import Affine
from scipy import ndimage
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

from idou.geo.synthetic.changes import TruthRow, make_second_epoch, target_counts
from idou.geo.synthetic.layout import Layout, make_layout
from idou.geo.synthetic.render import GROUND_ALBEDO, Canvas, render_epoch, static_layers
from idou.geo.synthetic.scene import Base, Camera, Epoch, Sun, place_cars, populate
from idou.geo.synthetic.style import apply_style, get_style

CRS = "EPSG:6677"
GENERATOR_VERSION = "1.0"
# near 前橋市 (36.39N, 139.06E) in JGD2011 zone IX: about (-69375, 43549)
ORIGIN = (-69400.0, 43600.0)


@dataclass
class FlightPair:
    """Two synthetic flights (2024, 2025) over one town and what changed between them.

    Attributes:
        before: H×W×3 uint8, flight 2024 on its own grid.
        after: H2×W2×3 uint8, flight 2025 on its own shifted grid; 0 in the nodata margin.
        before_transform: Geotransform of ``before``.
        after_transform: Geotransform of ``after``.
        before_valid: H×W bool, True where ``before`` has data.
        after_valid: H2×W2 bool, False in the nodata margin.
        crs: ``"EPSG:6677"``.
        parcels: 地番, 所在, area_m2, geometry.
        buildings_before: building_id, geometry (true footprints in 2024).
        buildings_after: building_id, geometry (true footprints in 2025; unchanged keep ids).
        truth: change_id, change_type, channel, 地番, geometry.
        info: How the pair was made: generator version, seed, size, gsd, each flight's sun
            (azimuth/elevation in degrees), the 2025 grid shift and its content misregistration
            in pixels (``misregistration_row_px`` / ``_col_px``: content moved by that much
            against the geotransform).
    """

    before: np.ndarray
    after: np.ndarray
    before_transform: Affine
    after_transform: Affine
    before_valid: np.ndarray
    after_valid: np.ndarray
    crs: str
    parcels: gpd.GeoDataFrame
    buildings_before: gpd.GeoDataFrame
    buildings_after: gpd.GeoDataFrame
    truth: gpd.GeoDataFrame
    info: dict[str, float | int | str] = field(default_factory=dict)


def make_flight_pair(seed: int, size: int = 2048, gsd: float = 0.2,
                     style: str | None = None) -> FlightPair:
    """Generate a deterministic flight pair.

    Args:
        seed: Random seed; the same (seed, size, gsd, style) gives the same pair.
        size: Width and height of each flight in pixels.
        gsd: Ground sampling distance in metres per pixel.
        style: None for the default look, or a name of :mod:`idou.geo.synthetic.style` (same
            town, buildings and changes as the default, other roofs, season and vegetation).

    Returns:
        The two images with their grids and masks, parcels, footprints and truth.
    """
    if size < 128:
        raise ValueError(f"size must be at least 128 pixels, got {size}")
    look = get_style(style) if style is not None else None
    rng = np.random.default_rng([seed, size])
    # grids: the 2025 flight is shifted by 5-15 % each way, on the same pixel lattice
    x0 = ORIGIN[0] + float(rng.integers(-400, 400)) * 5.0
    y0 = ORIGIN[1] + float(rng.integers(-400, 400)) * 5.0
    shift = [int(rng.integers(int(0.05 * size), int(0.15 * size) + 1))
             * (1 if rng.random() < 0.5 else -1) for _ in range(2)]
    sx, sy = shift
    before_tr = Affine(gsd, 0.0, x0, 0.0, -gsd, y0)
    after_tr = Affine(gsd, 0.0, x0 + sx * gsd, 0.0, -gsd, y0 - sy * gsd)
    pad = 4
    cx0 = x0 + min(0, sx) * gsd - pad * gsd
    cy0 = y0 - min(0, sy) * gsd + pad * gsd
    cw, ch = size + abs(sx) + 2 * pad, size + abs(sy) + 2 * pad
    canvas = Canvas(cx0, cy0, gsd, cw, ch)

    # nodata margin of the 2025 flight: a slanted strip on its outer x side and y side
    after_valid = _margin_mask(rng, size, sx, sy)
    valid_world = _valid_polygon(after_valid, after_tr)
    overlap = box(*_bounds(before_tr, size)).intersection(valid_world)
    safe = overlap.buffer(-2.0)

    centre = (cx0 + cw * gsd / 2, cy0 - ch * gsd / 2)
    layout, sun1, sun2, eligible, base = _town(rng, centre, max(cw, ch) * gsd / 2, safe, size)
    epoch2, truth_rows = make_second_epoch(rng, layout, base, sun2, eligible, size, safe)
    place_cars(rng, layout, base.epoch, base.uses, base.driveways)
    place_cars(rng, layout, epoch2, base.uses, base.driveways, density=0.9)

    _place_cameras(rng, ((base.epoch, before_tr), (epoch2, after_tr)), size, gsd)
    if look is not None:  # after the default's draws, from its own stream: same scene
        apply_style(look, seed, [base.epoch, epoch2], GROUND_ALBEDO)
        sun1, sun2 = base.epoch.sun, epoch2.sun
    static = static_layers(rng, canvas, layout, base.uses)
    canvas1 = render_epoch(canvas, layout, base.epoch, static)
    canvas2 = render_epoch(canvas, layout, epoch2, static)

    b_off = (pad - min(0, sy), pad - min(0, sx))  # (row, col) of before in the canvas
    before, after, mis = _photographs(rng, canvas1, canvas2, b_off, (sy, sx), size)
    after[~after_valid] = 0

    union = box(*_bounds(before_tr, size)).union(box(*_bounds(after_tr, size)))
    return FlightPair(
        before=before, after=after, before_transform=before_tr, after_transform=after_tr,
        before_valid=np.ones((size, size), bool), after_valid=after_valid, crs=CRS,
        parcels=_parcels(layout, union), buildings_before=_footprints(base.epoch.buildings, union),
        buildings_after=_footprints(epoch2.buildings, union), truth=_truth(layout, truth_rows),
        info={"generator_version": GENERATOR_VERSION, "seed": seed, "size": size, "gsd": gsd,
              "sun_azimuth_2024": round(sun1.azimuth, 3),
              "sun_elevation_2024": round(sun1.elevation, 3),
              "sun_azimuth_2025": round(sun2.azimuth, 3),
              "sun_elevation_2025": round(sun2.elevation, 3),
              "shift_x_px": sx, "shift_y_px": sy,
              "misregistration_row_px": round(float(mis[0]), 4),
              "misregistration_col_px": round(float(mis[1]), 4),
              **({"style": look.name} if look is not None else {})})


def _town(rng: np.random.Generator, centre: tuple[float, float], radius: float,
          safe: BaseGeometry, size: int) -> tuple[Layout, Sun, Sun, set[int], Base]:
    """The town, the two suns, the parcels where changes may go, and the first flight's scene
    (with enough vacant lots inside the overlap to build the new houses on)."""
    layout = make_layout(rng, centre, radius)
    sun1 = Sun(float(rng.uniform(140, 170)), float(rng.uniform(46, 60)))
    sun2 = Sun(float(rng.uniform(195, 230)), float(rng.uniform(36, 50)))
    eligible = {p.index for p in layout.parcels
                if p.rect.polygon().intersection(safe).area > 0.4 * 4 * p.rect.hl * p.rect.hw}
    residential = sorted(i for i in eligible if layout.parcels[i].zone == "residential")
    n_vacant = min(len(residential) // 3, int(np.ceil(target_counts(size)["new"] * 0.6)) + 1)
    vacant = {int(i) for i in rng.permutation(residential)[:n_vacant]}
    return layout, sun1, sun2, eligible, populate(rng, layout, sun1, vacant)


def _place_cameras(rng: np.random.Generator, epochs: tuple[tuple[Epoch, Affine], ...],
                   size: int, gsd: float) -> None:
    """Not true orthophotos: each flight's photo centre and height make tall things lean."""
    for epoch, tr in epochs:
        mid_x, mid_y = tr.c + tr.a * size / 2, tr.f + tr.e * size / 2
        epoch.camera = Camera(mid_x + float(rng.uniform(-0.25, 0.25)) * size * gsd,
                              mid_y + float(rng.uniform(-0.25, 0.25)) * size * gsd,
                              float(rng.uniform(1800, 2600)))


def _photographs(rng: np.random.Generator, canvas1: np.ndarray, canvas2: np.ndarray,
                 b_off: tuple[int, int], shift: tuple[int, int], size: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop, misregister, radiometry, blur, noise: the two photographs and the
    misregistration (row, col) of the second."""
    a_off = (b_off[0] + shift[0], b_off[1] + shift[1])
    before_f = canvas1[b_off[0]:b_off[0] + size, b_off[1]:b_off[1] + size]
    mis = rng.uniform(-1, 1, 2)
    mis *= float(rng.uniform(0.3, 0.95)) / max(float(np.hypot(*mis)), 1e-6)
    after_f = _shifted_crop(canvas2, a_off, size, (float(mis[0]), float(mis[1])))
    before = _camera(rng, before_f, gain=float(rng.uniform(0.97, 1.03)),
                     cast=rng.uniform(0.98, 1.02, 3), gamma=1.0, blur=0.55)
    after = _camera(rng, after_f, gain=float(rng.uniform(0.86, 1.12)),
                    cast=rng.uniform(0.94, 1.06, 3), gamma=float(rng.uniform(0.88, 1.12)),
                    blur=0.7)
    return before, after, mis


def _parcels(layout: Layout, union: BaseGeometry) -> gpd.GeoDataFrame:
    """The parcels touching either flight, with 地番, 所在 and area."""
    parcels = gpd.GeoDataFrame(
        {"地番": [p.chiban for p in layout.parcels],
         "所在": [p.shozai for p in layout.parcels],
         "area_m2": [round(4 * p.rect.hl * p.rect.hw, 2) for p in layout.parcels]},
        geometry=[p.rect.polygon() for p in layout.parcels], crs=CRS)
    return parcels[parcels.intersects(union)].reset_index(drop=True)


def _footprints(buildings: list, union: BaseGeometry) -> gpd.GeoDataFrame:
    keep = [b for b in buildings if b.footprint().intersects(union)]
    return gpd.GeoDataFrame({"building_id": [b.building_id for b in keep]},
                            geometry=[b.footprint() for b in keep], crs=CRS)


def _truth(layout: Layout, truth_rows: list[TruthRow]) -> gpd.GeoDataFrame:
    chiban = {p.index: p.chiban for p in layout.parcels}
    return gpd.GeoDataFrame(
        {"change_id": [t.change_id for t in truth_rows],
         "change_type": [t.change_type for t in truth_rows],
         "channel": [t.channel for t in truth_rows],
         "地番": [chiban[t.parcel] for t in truth_rows]},
        geometry=[t.geometry for t in truth_rows], crs=CRS)


def _bounds(tr: Affine, size: int) -> tuple[float, float, float, float]:
    return (tr.c, tr.f - size * abs(tr.e), tr.c + size * tr.a, tr.f)


def _margin_mask(rng: np.random.Generator, size: int, sx: int, sy: int) -> np.ndarray:
    """Valid pixels of the 2025 flight: a slanted nodata strip on the sides away from 2024."""
    rows = np.arange(size, dtype=np.float32)[:, None]
    cols = np.arange(size, dtype=np.float32)[None, :]
    valid = np.ones((size, size), bool)
    wx = size * float(rng.uniform(0.025, 0.06))
    slant_x = float(rng.uniform(-0.03, 0.03))
    edge_x = wx + slant_x * (rows - size / 2)
    valid &= (size - 1 - cols >= edge_x) if sx > 0 else (cols >= edge_x)
    wy = size * float(rng.uniform(0.02, 0.05))
    slant_y = float(rng.uniform(-0.03, 0.03))
    edge_y = wy + slant_y * (cols - size / 2)
    valid &= (size - 1 - rows >= edge_y) if sy > 0 else (rows >= edge_y)
    return valid


def _valid_polygon(valid: np.ndarray, tr: Affine) -> Polygon:
    """Polygon of the valid region (the mask is convex: a square cut by two slanted lines)."""
    from rasterio import features
    from shapely.geometry import shape

    geoms = [shape(g) for g, v in features.shapes(valid.astype(np.uint8), transform=tr)
             if v == 1]
    return max(geoms, key=lambda g: g.area).convex_hull


def _shifted_crop(canvas: np.ndarray, off: tuple[int, int], size: int,
                  shift: tuple[float, float]) -> np.ndarray:
    """Crop ``size`` pixels at ``off`` with the content moved by a sub-pixel (row, col) shift."""
    r0, c0 = off
    p = 2
    lo_r, lo_c = max(0, r0 - p), max(0, c0 - p)
    block = canvas[lo_r:r0 + size + p, lo_c:c0 + size + p]
    moved = np.stack([ndimage.shift(block[..., k], shift, order=1, mode="nearest")
                      for k in range(3)], axis=-1)
    return moved[r0 - lo_r:r0 - lo_r + size, c0 - lo_c:c0 - lo_c + size]


def _camera(rng: np.random.Generator, radiance: np.ndarray, gain: float, cast: np.ndarray,
            gamma: float, blur: float) -> np.ndarray:
    """Optics blur, exposure, colour cast, gamma, sensor noise, 8-bit quantisation."""
    img = np.stack([ndimage.gaussian_filter(radiance[..., k], blur) for k in range(3)], axis=-1)
    img *= gain * cast.astype(np.float32)
    img = 255.0 * np.power(np.clip(img / 255.0, 0, 1), gamma)
    img += 1.8 * rng.standard_normal(img.shape[:2], dtype=np.float32)[..., None]
    img += 1.2 * rng.standard_normal(img.shape, dtype=np.float32)
    out = np.clip(np.round(img), 1, 255).astype(np.uint8)
    return out


__all__ = ["CRS", "FlightPair", "GENERATOR_VERSION", "make_flight_pair"]
