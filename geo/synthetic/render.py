"""Render one flight's scene to an RGB radiance canvas (float32, about 0..255).

Ground materials are rasterised for the whole canvas and textured with shared noise; buildings,
trees and cars are drawn in small windows around each object with anti-aliased edges, roofs
shaded facet by facet under the flight's sun, shadows cast away from the sun.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine
from rasterio import features
from scipy import ndimage
from shapely.geometry import LineString, Point
from shapely.geometry.base import BaseGeometry

from idou.geo.synthetic import scene as sc
from idou.geo.synthetic.buildings import Building, RoofPart
from idou.geo.synthetic.layout import Layout, Rect
from idou.geo.synthetic.scene import Camera, Car, Epoch, Sun, Tree
from idou.geo.synthetic.textures import NoiseBank

AMBIENT = 0.36
DIFFUSE = 0.78
SKY_TINT = np.array([0.88, 0.96, 1.18], dtype=np.float32)  # shadows are lit by blue sky
PITCH = {"gable": math.radians(27), "hip": math.radians(25), "shed": math.radians(12),
         "flat": 0.0}

GROUND_ALBEDO = np.array([
    (104, 112, 80),   # BACKGROUND
    (92, 94, 98),     # ROAD
    (150, 146, 136),  # GRAVEL
    (88, 116, 60),    # LAWN
    (98, 116, 64),    # WEEDS
    (84, 86, 90),     # PARKING
    (72, 108, 50),    # CROP
    (126, 106, 84),   # SOIL_ROWS
    (92, 112, 68),    # PADDY
    (150, 128, 102),  # BARE
    (170, 168, 160),  # CONCRETE
    (38, 88, 172),    # TARP
    (46, 62, 38),     # FOREST
    (146, 134, 98),   # DRY_GRASS
    (158, 156, 150),  # SIDEWALK
    (62, 90, 46),     # HEDGE
], dtype=np.float32)
# texture amplitudes (fine, mid, coarse) per material
GROUND_TEXTURE = np.array([
    (0.10, 0.10, 0.06), (0.06, 0.04, 0.04), (0.07, 0.06, 0.04), (0.10, 0.10, 0.05),
    (0.14, 0.14, 0.06), (0.05, 0.04, 0.03), (0.08, 0.06, 0.04), (0.07, 0.06, 0.05),
    (0.04, 0.05, 0.05), (0.10, 0.08, 0.06), (0.05, 0.04, 0.03), (0.05, 0.05, 0.0),
    (0.16, 0.12, 0.05), (0.12, 0.10, 0.06), (0.05, 0.05, 0.04),
    (0.30, 0.15, 0.05),
], dtype=np.float32)
GRASSY = (sc.BACKGROUND, sc.LAWN, sc.WEEDS, sc.DRY_GRASS)
PAINT_WHITE, PAINT_WALL, PAINT_LEVEE, PAINT_TRACK, PAINT_GUTTER, PAINT_MANHOLE = 1, 2, 3, 4, 5, 6


@dataclass(frozen=True)
class Canvas:
    """The pixel grid everything is drawn on (north up, square pixels)."""

    x0: float
    y0: float
    gsd: float
    width: int
    height: int

    @property
    def transform(self) -> Affine:
        """The canvas geotransform."""
        return Affine(self.gsd, 0.0, self.x0, 0.0, -self.gsd, self.y0)

    def to_px(self, x: float, y: float) -> tuple[float, float]:
        """Continuous (column, row) of a world point; pixel centres are at +0.5."""
        return ((x - self.x0) / self.gsd, (self.y0 - y) / self.gsd)


@dataclass
class StaticLayers:
    """Rasters that both flights share: parcel ids, paint, per-parcel tone and row patterns."""

    parcel_id: np.ndarray  # int32, 0 = none, else parcel index + 1
    paint: np.ndarray  # uint8 paint code
    tone: np.ndarray  # (n_parcels + 1) × 3 colour jitter
    rows: np.ndarray  # float32 0..1: crop-row stripes of farm parcels
    noise: NoiseBank


def _local_coords(canvas: Canvas, rect: Rect, pad: float = 1.5
                  ) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
    """Pixel window around a rectangle and the local (a, b) pixel coordinates in it."""
    cx, cy = canvas.to_px(rect.cx, rect.cy)
    ext = (rect.hl + rect.hw) / canvas.gsd + pad
    c0, c1 = max(0, int(cx - ext)), min(canvas.width, int(cx + ext) + 2)
    r0, r1 = max(0, int(cy - ext)), min(canvas.height, int(cy + ext) + 2)
    if c0 >= c1 or r0 >= r1:
        return None
    dx = (np.arange(c0, c1, dtype=np.float32) + 0.5 - cx)[None, :]
    dy = (np.arange(r0, r1, dtype=np.float32) + 0.5 - cy)[:, None]
    ax, ay = rect.axis
    px, py = rect.perp
    a = dx * ax - dy * ay
    b = dx * px - dy * py
    return (slice(r0, r1), slice(c0, c1)), a, b


def _coverage(a: np.ndarray, b: np.ndarray, hl: float, hw: float) -> np.ndarray:
    """Anti-aliased coverage of a rectangle with half sizes in pixels."""
    return (np.clip(hl - np.abs(a) + 0.5, 0, 1) * np.clip(hw - np.abs(b) + 0.5, 0, 1)
            ).astype(np.float32)


def _composite(img: np.ndarray, win: tuple[slice, slice], colour: np.ndarray,
               cov: np.ndarray) -> None:
    region = img[win]
    region += (colour - region) * cov[..., None]


def flat_light(sun: Sun) -> float:
    """Irradiance factor of flat ground in the sun."""
    return AMBIENT + DIFFUSE * math.sin(math.radians(sun.elevation))


def static_layers(rng: np.random.Generator, canvas: Canvas, layout: Layout,
                  uses: dict[int, str]) -> StaticLayers:
    """Rasters shared by both flights (computed once)."""
    shape = (canvas.height, canvas.width)
    tr = canvas.transform
    parcel_id = features.rasterize(
        ((p.rect.polygon(), p.index + 1) for p in layout.parcels), out_shape=shape,
        transform=tr, fill=0, dtype="int32")
    n = len(layout.parcels) + 1
    tone = (1.0 + rng.normal(0, 0.05, (n, 1)) + rng.normal(0, 0.015, (n, 3))).astype(np.float32)
    tone[0] = 1.0
    row_angle = np.zeros(n, dtype=np.float32)
    row_period = np.ones(n, dtype=np.float32) * 5
    for p in layout.parcels:
        # rows run from the road into the field; pixel frame has y down
        ang = p.rect.angle + (math.pi / 2 if rng.random() < 0.8 else 0.0)
        row_angle[p.index + 1] = -ang
        row_period[p.index + 1] = float(rng.uniform(0.7, 1.3)) / canvas.gsd
    noise = NoiseBank(rng, shape)
    lines: list[tuple[BaseGeometry, int]] = []
    lines += road_wear(rng, layout)
    lines += [(g, PAINT_WHITE) for g in road_markings(layout)]
    lines += [(g, PAINT_WHITE) for g in layout.crosswalks]
    for index, use in uses.items():
        r = layout.parcels[index].rect
        if use == "house" and rng.random() < 0.8:
            wall = LineString([r.point(-r.hl, -r.hw + 0.8), r.point(-r.hl, r.hw),
                               r.point(r.hl, r.hw), r.point(r.hl, -r.hw + 0.8)])
            lines.append((wall, PAINT_WALL))
        elif use == "farm":
            lines.append((r.polygon().exterior, PAINT_LEVEE))
        elif use == "parking":
            lines += [(g, PAINT_WHITE) for g in parking_lines(layout.parcels[index].rect)]
    paint = features.rasterize(lines, out_shape=shape, transform=tr, fill=0, dtype="uint8") \
        if lines else np.zeros(shape, np.uint8)
    rows = np.zeros(shape, np.float32)
    farm = np.isin(parcel_id, [i + 1 for i, u in uses.items() if u == "farm"])
    rr, cc = np.nonzero(farm)
    pid = parcel_id[rr, cc]
    ang = row_angle[pid]
    proj = (cc * np.cos(ang) + rr * np.sin(ang)) / row_period[pid]
    rows[rr, cc] = 0.5 + 0.5 * np.sin(2 * np.pi * proj)
    return StaticLayers(parcel_id, paint, tone, rows, noise)


def road_markings(layout: Layout) -> list[BaseGeometry]:
    """Centre dashes and edge lines, interrupted at junctions."""
    polys = [r.rect.polygon() for r in layout.roads]
    tree = shapely.STRtree(polys)
    out: list[BaseGeometry] = []
    for k, road in enumerate(layout.roads):
        r = road.rect
        lines: list[BaseGeometry] = []
        if road.main:
            n = int(2 * r.hl // 10)
            for i in range(n):
                a = -r.hl + 10 * i
                lines.append(LineString([r.point(a, 0), r.point(a + 5, 0)]))
        if road.edge_lines:
            off = r.hw - (0.6 if road.main else 0.35)
            lines += [LineString([r.point(-r.hl, s * off), r.point(r.hl, s * off)])
                      for s in (-1, 1)]
        if not lines:
            continue
        geom = shapely.union_all(lines)
        crossing = [polys[int(j)] for j in tree.query(polys[k].buffer(0.1)) if int(j) != k]
        if crossing:
            geom = geom.difference(shapely.union_all(crossing).buffer(1.0))
        if not geom.is_empty:
            out.append(geom)
    return out


def road_wear(rng: np.random.Generator, layout: Layout) -> list[tuple[BaseGeometry, int]]:
    """Darker wheel tracks, concrete gutters (側溝) along local roads, and manhole covers."""
    polys = [r.rect.polygon() for r in layout.roads]
    tree = shapely.STRtree(polys)
    out: list[tuple[BaseGeometry, int]] = []
    for k, road in enumerate(layout.roads):
        r = road.rect
        lanes = (-r.hw * 0.45, r.hw * 0.45) if road.main else (0.0,)
        tracks = [r.sub(-r.hl, r.hl, c + s * 0.8 - 0.3, c + s * 0.8 + 0.3).polygon()
                  for c in lanes for s in (-1, 1)]
        out += [(t, PAINT_TRACK) for t in tracks]
        if not road.main:
            gutters = shapely.union_all(
                [LineString([r.point(-r.hl, s * (r.hw - 0.25)), r.point(r.hl, s * (r.hw - 0.25))])
                 for s in (-1, 1)])
            crossing = [polys[int(j)] for j in tree.query(polys[k].buffer(0.1)) if int(j) != k]
            if crossing:
                gutters = gutters.difference(shapely.union_all(crossing).buffer(0.3))
            if not gutters.is_empty:
                out.append((gutters, PAINT_GUTTER))
        spacing = float(rng.uniform(25, 45))
        for a in np.arange(-r.hl + float(rng.uniform(0, spacing)), r.hl, spacing):
            x, y = r.point(float(a), float(rng.uniform(-0.3, 0.3)))
            out.append((Point(x, y).buffer(0.3, quad_segs=4), PAINT_MANHOLE))
    return out


def parking_lines(lot: Rect) -> list[BaseGeometry]:
    """White stall lines of a parking parcel."""
    out: list[BaseGeometry] = []
    n = int((2 * lot.hl - 1.0) // 2.5)
    if n < 1:
        return out
    start = -n * 2.5 / 2
    rows = [(-lot.hw + 0.5, -lot.hw + 5.5)]
    if 2 * lot.hw >= 16.5:
        rows.append((lot.hw - 5.5, lot.hw - 0.5))
    for b0, b1 in rows:
        for k in range(n + 1):
            a = start + 2.5 * k
            out.append(LineString([lot.point(a, b0), lot.point(a, b1)]))
    return out


def render_epoch(canvas: Canvas, layout: Layout, epoch: Epoch, static: StaticLayers
                 ) -> np.ndarray:
    """Render a flight's scene to an H×W×3 float32 radiance canvas."""
    img = _ground(canvas, layout, epoch, static)
    sun = epoch.sun
    light = flat_light(sun)
    shade = (AMBIENT / light) * SKY_TINT
    # car shadows, then cars
    car_shadows = [_car_shadow(c, sun) for c in epoch.cars]
    _apply_shadow(img, canvas, car_shadows, shade, blur=0.7)
    for car in epoch.cars:
        _draw_car(img, canvas, car, sun)
    # carports: a translucent roof over the driveway, its light shadow
    cp_shadows = [c.translated(*sun.shadow_offset(2.4)).polygon() for c in epoch.carports]
    _apply_shadow(img, canvas, cp_shadows, 1 - 0.45 * (1 - shade), blur=0.7)
    for c in epoch.carports:
        _draw_carport(img, canvas, c, sun)
    # building and tree shadows fall on the ground and the cars
    shadows: list[BaseGeometry] = []
    for b in epoch.buildings:
        shadows += [_part_shadow(p, sun) for p in b.parts]
    shadows += [_tree_shadow(t, sun) for t in epoch.trees]
    shadows += [_hedge_shadow(r, sun) for r, m in epoch.ground if m == sc.HEDGE]
    dx, dy = sun.shadow_offset(9.0)
    shadows += [LineString([(x, y), (x + dx, y + dy)]).buffer(0.1, cap_style="flat")
                for x, y in layout.poles]
    _apply_shadow(img, canvas, shadows, shade, blur=0.8)
    # ambient occlusion: the ground right next to walls gets less sky light
    walls = [b.footprint().buffer(0.4) for b in epoch.buildings]
    _apply_shadow(img, canvas, walls, np.full(3, 0.8, np.float32), blur=2.0)
    for b in sorted(epoch.buildings, key=lambda b: max(p.height for p in b.parts)):
        _draw_building(img, canvas, b, sun, static.noise, epoch.camera)
    for t in epoch.trees:
        if epoch.camera is not None:
            dx, dy = epoch.camera.lean(t.x, t.y, t.height * 0.8)
            t = Tree(t.x + dx, t.y + dy, t.radius, t.height, t.albedo)
        _draw_tree(img, canvas, t, sun, static.noise)
    return img


def _ground(canvas: Canvas, layout: Layout, epoch: Epoch, static: StaticLayers) -> np.ndarray:
    shapes: list[tuple[BaseGeometry, int]] = [
        (layout.parcels[i].rect.polygon(), m) for i, m in epoch.parcel_material.items()]
    shapes += [(r.polygon(), m) for r, m in epoch.ground]
    shapes += [(r.rect.polygon(), sc.ROAD) for r in layout.roads]
    shapes += [(g, sc.SIDEWALK) for g in layout.sidewalks]
    shape = (canvas.height, canvas.width)
    mat = features.rasterize(shapes, out_shape=shape, transform=canvas.transform,
                             fill=sc.BACKGROUND, dtype="uint8")
    nb = static.noise
    amp = GROUND_TEXTURE[mat]
    fac = 1.0 + amp[..., 0] * nb.fine + amp[..., 1] * nb.mid + amp[..., 2] * nb.coarse
    alb = (GROUND_ALBEDO if epoch.ground_albedo is None else epoch.ground_albedo)[mat]
    alb *= static.tone[static.parcel_id] * fac[..., None]

    # grass: green where lush, brown-yellow where dry, patchy
    lut_grassy = np.isin(np.arange(len(GROUND_ALBEDO)), GRASSY)
    w = lut_grassy[mat] * (0.55 / (1 + np.exp(-(1.4 * nb.patch - 0.8 * epoch.lawn_tone - 0.3))))
    # crop rows: plants over soil
    crop = mat == sc.CROP
    cover = np.clip(0.55 + 0.25 * nb.mid, 0.2, 0.95)
    w_soil = crop * (1 - np.clip(static.rows * 1.6 - 0.3, 0, 1) * cover)
    alb += (w * (np.array([150, 136, 100], np.float32)[:, None, None] - alb.transpose(2, 0, 1))
            + w_soil * (np.array([122, 102, 80], np.float32)[:, None, None]
                        - alb.transpose(2, 0, 1))).transpose(1, 2, 0)
    # ploughed rows (ridges) and repaired patches of asphalt
    mult = np.where(mat == sc.SOIL_ROWS, 0.86 + 0.24 * static.rows, 1.0)
    mult = np.where(((mat == sc.ROAD) | (mat == sc.PARKING)) & (nb.patch > 1.3), 0.88, mult)
    alb *= mult[..., None].astype(np.float32)
    # paint
    # paint, walls, levees, wheel tracks, gutters, manholes: only the few painted pixels
    idx = np.flatnonzero(static.paint)
    codes = static.paint.ravel()[idx]
    on_paved = np.isin(mat.ravel()[idx], (sc.ROAD, sc.PARKING))
    flat = alb.reshape(-1, 3)
    mid = nb.mid.ravel()[idx]
    for code, colour, w in ((PAINT_WHITE, (228, 228, 222), 0.8),
                            (PAINT_WALL, (168, 166, 160), 0.75),
                            (PAINT_LEVEE, (112, 124, 78), 0.55),
                            (PAINT_TRACK, (70, 72, 76), 0.25),
                            (PAINT_GUTTER, (150, 148, 140), 0.6),
                            (PAINT_MANHOLE, (58, 58, 60), 0.7)):
        sel = codes == code
        if code in (PAINT_WHITE, PAINT_TRACK, PAINT_GUTTER, PAINT_MANHOLE):
            sel &= on_paved
        if sel.any():
            k = idx[sel]
            ww = (w * np.clip(1 - 0.25 * mid[sel], 0.4, 1))[:, None]
            flat[k] = flat[k] * (1 - ww) + np.array(colour, np.float32) * ww
    return alb * np.float32(flat_light(epoch.sun))


def _apply_shadow(img: np.ndarray, canvas: Canvas, polys: list[BaseGeometry],
                  shade: np.ndarray, blur: float) -> None:
    polys = [p for p in polys if p is not None and not p.is_empty]
    if not polys:
        return
    mask = features.rasterize(((p, 1) for p in polys), out_shape=img.shape[:2],
                              transform=canvas.transform, fill=0, dtype="uint8")
    rows = np.nonzero(mask.any(axis=1))[0]
    if rows.size == 0:
        return
    m = ndimage.gaussian_filter(mask.astype(np.float32), blur)
    img *= (1 - m[..., None] * (1 - shade))


def _part_shadow(part: RoofPart, sun: Sun) -> BaseGeometry:
    rise = part.rect.hw * math.tan(PITCH[part.kind]) * 0.6
    dx, dy = sun.shadow_offset(part.height + rise)
    c = part.rect.corners()
    return shapely.MultiPoint(np.vstack([c, c + (dx, dy)])).convex_hull


def _tree_shadow(tree: Tree, sun: Sun) -> BaseGeometry:
    lo = sun.shadow_offset(max(tree.height - 1.6 * tree.radius, 0.5))
    hi = sun.shadow_offset(tree.height - 0.5 * tree.radius)
    pts = [Point(tree.x + lo[0], tree.y + lo[1]).buffer(tree.radius * 0.9, quad_segs=4),
           Point(tree.x + hi[0], tree.y + hi[1]).buffer(tree.radius * 0.9, quad_segs=4)]
    return shapely.union_all(pts).convex_hull


def _hedge_shadow(rect: Rect, sun: Sun) -> BaseGeometry:
    dx, dy = sun.shadow_offset(1.4)
    c = rect.corners()
    return shapely.MultiPoint(np.vstack([c, c + (dx, dy)])).convex_hull


def _draw_carport(img: np.ndarray, canvas: Canvas, rect: Rect, sun: Sun) -> None:
    loc = _local_coords(canvas, rect)
    if loc is None:
        return
    win, a, b = loc
    g = canvas.gsd
    hl, hw = rect.hl / g, rect.hw / g
    cov = _coverage(a, b, hl, hw)
    edge = (np.abs(a) > hl - 1.2) | (np.abs(b) > hw - 1.2) | (np.abs(b) < 0.6)
    alpha = np.where(edge, 0.85, 0.5).astype(np.float32)
    colour = np.where(edge[..., None], np.array([120, 118, 112], np.float32),
                      np.array([206, 214, 218], np.float32)) * flat_light(sun)
    _composite(img, win, colour, cov * alpha)


def _car_shadow(car: Car, sun: Sun) -> BaseGeometry:
    dx, dy = sun.shadow_offset(0.9)
    r = car.rect
    return Rect(r.cx + dx, r.cy + dy, r.hl + 0.1, r.hw + 0.1, r.angle).polygon()


def _draw_car(img: np.ndarray, canvas: Canvas, car: Car, sun: Sun) -> None:
    loc = _local_coords(canvas, car.rect)
    if loc is None:
        return
    win, a, b = loc
    g = canvas.gsd
    hl, hw = car.rect.hl / g, car.rect.hw / g
    cov = _coverage(a, b, hl, hw)
    light = flat_light(sun)
    body = np.array(car.colour, np.float32) * light
    colour = np.broadcast_to(body, (*a.shape, 3)).copy()
    an = a / hl
    glass = ((an > 0.12) & (an < 0.42)) | ((an < -0.38) & (an > -0.62))
    colour[glass] = np.array([38, 42, 50], np.float32) * light
    edge = (np.abs(b) > hw - 0.8) | (np.abs(a) > hl - 0.8)
    colour[edge] *= 0.82
    _composite(img, win, colour, cov)


WALLS = ((206, 200, 190), (190, 186, 178), (214, 210, 202), (176, 164, 148), (150, 146, 140))


def _lean(camera: Camera | None, rect: Rect, height: float) -> tuple[float, float]:
    return (0.0, 0.0) if camera is None else camera.lean(rect.cx, rect.cy, height)


def _draw_walls(img: np.ndarray, canvas: Canvas, part: RoofPart, lean: tuple[float, float],
                albedo: np.ndarray, sun: Sun) -> None:
    """The walls seen between the footprint and the leaning roof."""
    dx, dy = lean
    g = canvas.gsd
    n_px = math.hypot(dx, dy) / g
    if n_px < 0.3:
        return
    r = part.rect
    span = Rect(r.cx + dx / 2, r.cy + dy / 2, r.hl + abs(dx) + abs(dy),
                r.hw + abs(dx) + abs(dy), r.angle)
    loc = _local_coords(canvas, span)
    if loc is None:
        return
    win, a, b = loc
    ax, ay = r.axis
    px, py = r.perp
    cov = np.zeros(a.shape, np.float32)
    for t in np.linspace(0.0, 1.0, int(math.ceil(n_px / 0.5)) + 1):
        ox, oy = (t - 0.5) * dx, (t - 0.5) * dy
        da, db = (ox * ax + oy * ay) / g, (ox * px + oy * py) / g
        np.maximum(cov, _coverage(a - da, b - db, r.hl / g, r.hw / g), out=cov)
    s = sun.vector()
    norm = math.hypot(dx, dy)
    facing = -(dx * s[0] + dy * s[1]) / norm  # the seen walls face the nadir
    light = AMBIENT + DIFFUSE * max(0.0, facing) * 0.9
    colour = (albedo * np.float32(light * 0.88)) * np.ones((*a.shape, 1), np.float32)
    _composite(img, win, colour, cov)


def _draw_building(img: np.ndarray, canvas: Canvas, building: Building, sun: Sun,
                   noise: NoiseBank, camera: Camera | None = None) -> None:
    wall = np.array(WALLS[sum(map(ord, building.building_id)) % len(WALLS)], np.float32)
    roof_lean = (0.0, 0.0)
    for k, part in enumerate(building.parts):
        rise = part.rect.hw * math.tan(PITCH[part.kind])
        lean = _lean(camera, part.rect, part.height + rise / 2)
        _draw_walls(img, canvas, part, lean, wall, sun)
        _draw_roof(img, canvas, RoofPart(part.rect.translated(*lean), part.kind, part.height),
                   building, sun, noise, solar=building.solar and k == 0)
        if k == 0:
            roof_lean = lean
    if building.details:
        light = flat_light(sun)
        shade = (AMBIENT / light) * SKY_TINT
        for d in building.details:
            d = d.translated(*roof_lean)
            h = 2.6 if d.hl > 1.5 else 0.9
            dx, dy = sun.shadow_offset(h)
            # the unit's shadow on the roof: the unit's rectangle moved by the offset
            s_loc = _local_coords(canvas, d.translated(dx, dy))
            if s_loc is not None:
                ws, sa, sb = s_loc
                scov = _coverage(sa, sb, d.hl / canvas.gsd, d.hw / canvas.gsd)
                img[ws] *= 1 - scov[..., None] * (1 - shade)
            loc = _local_coords(canvas, d)
            if loc is None:
                continue
            win, a, b = loc
            cov = _coverage(a, b, d.hl / canvas.gsd, d.hw / canvas.gsd)
            base = np.array(building.albedo, np.float32) * (0.95 if h > 2 else 0.82)
            edge = (np.abs(a) > d.hl / canvas.gsd - 1) | (np.abs(b) > d.hw / canvas.gsd - 1)
            colour = base * light * (np.where(edge, 0.8, 1.0)
                                     + 0.05 * noise.fine[win])[..., None]
            _composite(img, win, colour, cov)


def _draw_roof(img: np.ndarray, canvas: Canvas, part: RoofPart, building: Building, sun: Sun,
               noise: NoiseBank, solar: bool = False) -> None:
    loc = _local_coords(canvas, part.rect)
    if loc is None:
        return
    win, a, b = loc
    g = canvas.gsd
    hl, hw = part.rect.hl / g, part.rect.hw / g
    cov = _coverage(a, b, hl, hw)
    da = hl - np.abs(a)  # distance to the short (gable/hip end) edges
    db = hw - np.abs(b)  # distance to the long (eave) edges
    light, facet_along = _roof_light(part, a, b, da, db, sun)
    tex = _roof_texture(part, building.material, a, b, da, db, facet_along, noise.fine[win],
                        noise.mid[win], noise.coarse[win], g)
    colour = np.array(building.albedo, np.float32) * (light * tex)[..., None]
    if solar and part.kind in ("gable", "hip"):
        colour = _solar_panels(part, colour, light, a, b, db, facet_along, noise.fine[win], g)
    _composite(img, win, colour, cov)


def _roof_light(part: RoofPart, a: np.ndarray, b: np.ndarray, da: np.ndarray, db: np.ndarray,
                sun: Sun) -> tuple[np.ndarray, np.ndarray]:
    """Each roof pixel's light from its facet's slope and the sun, and whether the facet is
    one of a hip roof's end facets (sloping along the ridge)."""
    s = sun.vector()
    ax, ay = part.rect.axis
    px, py = part.rect.perp
    pitch = PITCH[part.kind]
    sp, cp = math.sin(pitch), math.cos(pitch)
    if part.kind == "flat":
        return (np.full(a.shape, AMBIENT + DIFFUSE * s[2], np.float32),
                np.zeros(a.shape, bool))
    if part.kind == "shed":
        sign_b = np.ones(a.shape, np.float32)
        facet_along = np.zeros(a.shape, bool)
    else:
        sign_b = np.where(b >= 0, 1.0, -1.0).astype(np.float32)
        facet_along = (da < db) if part.kind == "hip" else np.zeros(a.shape, bool)
    sign_a = np.where(a >= 0, 1.0, -1.0).astype(np.float32)
    # outward horizontal direction of each pixel's facet
    ox = np.where(facet_along, sign_a * ax, sign_b * px)
    oy = np.where(facet_along, sign_a * ay, sign_b * py)
    ndot = ox * sp * s[0] + oy * sp * s[1] + cp * s[2]
    return (AMBIENT + DIFFUSE * np.clip(ndot, 0, None)).astype(np.float32), facet_along


def _roof_texture(part: RoofPart, mat: str, a: np.ndarray, b: np.ndarray, da: np.ndarray,
                  db: np.ndarray, facet_along: np.ndarray, fine: np.ndarray, mid: np.ndarray,
                  coarse: np.ndarray, g: float) -> np.ndarray:
    """The roofing's texture (tiles, seams, parapet), ridges and eaves, as a light factor."""
    dist = np.where(facet_along, da, db)  # distance to the eave of the facet
    along = np.where(facet_along, b, a)  # position along that eave
    tex = 1.0 + 0.05 * mid + 0.04 * fine
    if mat == "kawara":
        tex += 0.07 * np.sin(2 * np.pi * dist / (0.3 / g)) + 0.03 * np.sin(
            2 * np.pi * along / (0.3 / g))
    elif mat == "metal":
        tex += 0.07 * (np.sin(2 * np.pi * along / (0.45 / g)) > 0.55)
    elif mat == "slate":
        tex += 0.04 * fine
    else:  # flat: parapet and a darker band inside it, stains
        edge = np.minimum(da, db)
        tex += np.where(edge < 0.4 / g, 0.12, np.where(edge < 0.8 / g, -0.08, 0.0))
        tex += 0.05 * coarse
    if part.kind in ("gable", "hip"):
        ridge = (np.abs(b) < 0.18 / g + 0.3) & (da > db - 0.5)
        if part.kind == "hip":
            ridge |= np.abs(da - db) < 0.55
        tex = np.where(ridge, tex * 1.1 + 0.02, tex)
    return np.where(np.minimum(da, db) < 0.9, tex * 0.86, tex)  # eaves and gutters


def _solar_panels(part: RoofPart, colour: np.ndarray, light: np.ndarray, a: np.ndarray,
                  b: np.ndarray, db: np.ndarray, facet_along: np.ndarray, fine: np.ndarray,
                  g: float) -> np.ndarray:
    """Panels on the facet facing south (the facet whose outward direction points most
    south)."""
    hl, hw = part.rect.hl / g, part.rect.hw / g
    _, py = part.rect.perp
    south = -1.0 if py > 0 else 1.0
    reach = (hl - hw + 0.3 / g) if part.kind == "hip" else (hl - 0.8 / g)
    panel = (~facet_along) & (np.sign(b) == south) & (db > 0.5 / g) & (db < hw - 0.6 / g) \
        & (np.abs(a) < reach)
    grid = (np.mod(a * g, 1.0) < 0.08) | (np.mod(db * g, 1.65) < 0.08)
    pv = np.where(grid[..., None], np.array([72, 78, 92], np.float32),
                  np.array([34, 42, 66], np.float32))
    spec = 1.0 + 0.5 * np.clip(light - 0.9, 0, None)
    return np.where(panel[..., None], pv * (spec * (1 + 0.03 * fine))[..., None], colour)


def _draw_tree(img: np.ndarray, canvas: Canvas, tree: Tree, sun: Sun, noise: NoiseBank
               ) -> None:
    cx, cy = canvas.to_px(tree.x, tree.y)
    r = tree.radius / canvas.gsd
    ext = r * 1.25 + 2
    c0, c1 = max(0, int(cx - ext)), min(canvas.width, int(cx + ext) + 2)
    r0, r1 = max(0, int(cy - ext)), min(canvas.height, int(cy + ext) + 2)
    if c0 >= c1 or r0 >= r1:
        return
    win = (slice(r0, r1), slice(c0, c1))
    dx = (np.arange(c0, c1, dtype=np.float32) + 0.5 - cx)[None, :]
    dy = (np.arange(r0, r1, dtype=np.float32) + 0.5 - cy)[:, None]
    d = np.sqrt(dx * dx + dy * dy) / r
    rough = 1.0 + 0.13 * noise.mid[win] + 0.07 * noise.fine[win]
    cov = np.clip((rough - d) * r, 0, 1).astype(np.float32)
    nz = np.sqrt(np.clip(1 - d * d, 0.05, 1))
    s = sun.vector()
    ndot = (dx / r * s[0] - dy / r * s[1] + nz * s[2]) / np.sqrt(d * d + nz * nz)
    light = AMBIENT * 0.85 + DIFFUSE * np.clip(ndot, 0, None)
    clumps = 1.0 + 0.24 * noise.fine[win] + 0.14 * noise.mid[win]
    colour = np.array(tree.albedo, np.float32) * (light * clumps)[..., None]
    _composite(img, win, colour, cov)
