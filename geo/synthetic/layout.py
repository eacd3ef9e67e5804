"""Town layout: a road network, blocks between the roads, and parcels (筆) with 地番 and 所在.

Everything is made in a local frame (u along one road direction, v across) rotated by the
scene angle, and stored in world metres (EPSG:6677) as rotated rectangles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import shapely
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

OAZA = ("上泉町", "下小出町", "荒牧町", "青柳町", "江木町", "小相木町", "天川大島町", "箱田町")
AZA = ("東", "西", "宮前", "北浦", "中島", "天神", "堀之内", "前田", "稲荷", "川端")


@dataclass(frozen=True)
class Rect:
    """A rotated rectangle in world metres.

    Attributes:
        cx: Centre easting.
        cy: Centre northing.
        hl: Half length along the axis.
        hw: Half width across the axis.
        angle: Axis angle in radians, counter-clockwise from east.
    """

    cx: float
    cy: float
    hl: float
    hw: float
    angle: float

    @property
    def axis(self) -> tuple[float, float]:
        """Unit vector along the rectangle's length."""
        return (math.cos(self.angle), math.sin(self.angle))

    @property
    def perp(self) -> tuple[float, float]:
        """Unit vector across the rectangle (the axis turned a quarter left)."""
        return (-math.sin(self.angle), math.cos(self.angle))

    def point(self, a: float, b: float) -> tuple[float, float]:
        """World point of local coordinates (a along the axis, b across)."""
        ax, ay = self.axis
        px, py = self.perp
        return (self.cx + a * ax + b * px, self.cy + a * ay + b * py)

    def corners(self) -> np.ndarray:
        """The four corners, counter-clockwise, as a 4×2 array."""
        return np.array([self.point(-self.hl, -self.hw), self.point(self.hl, -self.hw),
                         self.point(self.hl, self.hw), self.point(-self.hl, self.hw)])

    def polygon(self) -> Polygon:
        """The rectangle as a shapely polygon."""
        return Polygon(self.corners())

    def sub(self, a0: float, a1: float, b0: float, b1: float) -> Rect:
        """The sub-rectangle spanning local [a0, a1] × [b0, b1]."""
        cx, cy = self.point((a0 + a1) / 2, (b0 + b1) / 2)
        return Rect(cx, cy, abs(a1 - a0) / 2, abs(b1 - b0) / 2, self.angle)

    def normalized(self) -> Rect:
        """The same rectangle described with its long side as the axis."""
        if self.hl >= self.hw:
            return self
        return Rect(self.cx, self.cy, self.hw, self.hl, self.angle + math.pi / 2)

    def translated(self, dx: float, dy: float) -> Rect:
        """The rectangle moved by (dx, dy) metres."""
        return Rect(self.cx + dx, self.cy + dy, self.hl, self.hw, self.angle)


@dataclass
class Road:
    """A straight road segment; ``main`` roads are wider and carry lane marks."""

    rect: Rect
    main: bool
    edge_lines: bool


@dataclass
class Parcel:
    """One parcel (筆). Its rect's local b axis points from the road into the parcel.

    Attributes:
        index: Position in ``Layout.parcels``.
        rect: The parcel; the road frontage is the edge at b = -hw.
        zone: residential, farm, large_building, large_parking or grove.
        chiban: 地番 such as ``"123-4"``.
        shozai: 所在 such as ``"大字上泉町字東"``.
    """

    index: int
    rect: Rect
    zone: str
    chiban: str = ""
    shozai: str = ""


@dataclass
class Layout:
    """Roads and parcels of the whole canvas."""

    angle: float
    roads: list[Road] = field(default_factory=list)
    parcels: list[Parcel] = field(default_factory=list)
    sidewalks: list[BaseGeometry] = field(default_factory=list)
    crosswalks: list[BaseGeometry] = field(default_factory=list)
    poles: list[tuple[float, float]] = field(default_factory=list)  # utility poles (電柱)


def _positions(rng: np.random.Generator, start: float, stop: float, lo: float, hi: float
               ) -> list[float]:
    out = [start]
    while out[-1] < stop:
        out.append(out[-1] + float(rng.uniform(lo, hi)))
    return out


def make_layout(rng: np.random.Generator, centre: tuple[float, float], half_extent: float
                ) -> Layout:
    """Make roads, blocks and parcels covering a square of ``half_extent`` metres around centre.

    Vertical roads run the whole height; each column between them has its own cross roads, so
    junctions are staggered as in Japanese towns grown from field paths. One main road runs each
    way. Blocks far from the main crossing are more often farmland.
    """
    theta = float(rng.uniform(-0.35, 0.35))
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    reach = half_extent * math.sqrt(2) + 40.0

    def to_world(u: float, v: float, hl: float, hw: float, phi: float) -> Rect:
        return Rect(centre[0] + u * cos_t - v * sin_t, centre[1] + u * sin_t + v * cos_t,
                    hl, hw, theta + phi)

    layout = Layout(angle=theta)
    us = _positions(rng, -reach - float(rng.uniform(0, 40)), reach, 45.0, 80.0)
    main_u_idx = int(np.argmin([abs(u - rng.uniform(-0.3, 0.3) * half_extent) for u in us]))
    u_width = [11.0 if i == main_u_idx else float(rng.uniform(4.0, 6.0)) for i in range(len(us))]
    v_main = float(rng.uniform(-0.3, 0.3) * half_extent)
    u_main = us[main_u_idx]
    for u, w in zip(us, u_width, strict=True):
        main = w > 10
        layout.roads.append(Road(to_world(u, 0.0, reach + 60, w / 2, math.pi / 2), main,
                                 main or bool(rng.random() < 0.5)))

    blocks: list[tuple[float, float, float, float, bool]] = []
    for i in range(len(us) - 1):
        vs = [v for v in _positions(rng, -reach - float(rng.uniform(0, 30)), reach, 28.0, 50.0)
              if abs(v - v_main) > 22.0]
        vs = sorted([*vs, v_main])
        v_width = [12.0 if v == v_main else float(rng.uniform(4.0, 5.5)) for v in vs]
        u0, u1 = us[i], us[i + 1]
        for v, w in zip(vs, v_width, strict=True):
            main = w > 10
            layout.roads.append(Road(to_world((u0 + u1) / 2, v, (u1 - u0) / 2, w / 2, 0.0), main,
                                     main or bool(rng.random() < 0.4)))
        for j in range(len(vs) - 1):
            bu0, bu1 = u0 + u_width[i] / 2, u1 - u_width[i + 1] / 2
            bv0, bv1 = vs[j] + v_width[j] / 2, vs[j + 1] - v_width[j + 1] / 2
            if bu1 - bu0 < 10 or bv1 - bv0 < 10:
                continue
            on_main = i == main_u_idx or i + 1 == main_u_idx or v_main in (vs[j], vs[j + 1])
            blocks.append((bu0, bu1, bv0, bv1, on_main))

    for bu0, bu1, bv0, bv1, on_main in blocks:
        cu, cv = (bu0 + bu1) / 2, (bv0 + bv1) / 2
        zone = _zone(rng, math.hypot(cu - u_main, cv - v_main), on_main)
        _subdivide(rng, layout, (bu0, bu1, bv0, bv1), zone, to_world)

    _name_parcels(rng, layout, centre, theta, u_main, v_main)
    _sidewalks_and_crossings(layout)
    _place_poles(rng, layout)
    return layout


def _zone(rng: np.random.Generator, dist: float, on_main: bool) -> str:
    """A block's zone: farmland more often far (``dist`` m) from the main crossing, large
    buildings more often on a main road."""
    p_farm = min(0.6, max(0.04, (dist - 80.0) / 240.0))
    r = rng.random()
    if r < p_farm:
        return "farm"
    if r < p_farm + (0.16 if on_main else 0.04):
        return "large"
    if r < p_farm + (0.16 if on_main else 0.04) + 0.025:
        return "grove"
    return "residential"


def _place_poles(rng: np.random.Generator, layout: Layout) -> None:
    """Utility poles along one side of every road."""
    for road in layout.roads:
        rect = road.rect
        side = 1.0 if rng.random() < 0.5 else -1.0
        spacing = float(rng.uniform(28, 40))
        for a in np.arange(-rect.hl + float(rng.uniform(0, spacing)), rect.hl, spacing):
            layout.poles.append(rect.point(float(a), side * (rect.hw - 0.3)))


SIDEWALK = 2.2  # metres, each side of a main road


def _sidewalks_and_crossings(layout: Layout) -> None:
    """Sidewalk strips along main roads and zebra crossings where other roads meet them."""
    polys = [r.rect.polygon() for r in layout.roads]
    tree = shapely.STRtree(polys)
    for k, road in enumerate(layout.roads):
        if not road.main:
            continue
        r = road.rect
        crossing = [int(j) for j in tree.query(polys[k]) if int(j) != k]
        others = shapely.union_all([polys[j] for j in crossing]) if crossing else None
        for side in (-1, 1):
            strip = r.sub(-r.hl, r.hl, side * r.hw, side * (r.hw - SIDEWALK)).polygon()
            if others is not None:
                strip = strip.difference(others)
            if not strip.is_empty:
                layout.sidewalks.append(strip)
        for j in crossing:
            c = layout.roads[j].rect
            a_c = (c.cx - r.cx) * r.axis[0] + (c.cy - r.cy) * r.axis[1]
            # half the crossing road's width measured along this road
            cos_rel = abs(math.cos(c.angle - r.angle))
            half = c.hw / max(abs(math.sin(c.angle - r.angle)), 0.3) if cos_rel < 0.9 else c.hl
            if abs(a_c) > r.hl - 10:
                continue
            for sign in (-1, 1):
                a0 = a_c + sign * (half + 1.2)
                a1 = a0 + sign * 3.5
                bars = [r.sub(min(a0, a1), max(a0, a1), b, b + 0.45).polygon()
                        for b in np.arange(-r.hw + SIDEWALK + 0.4, r.hw - SIDEWALK - 0.5, 0.9)]
                layout.crosswalks.append(shapely.union_all(bars))


def _subdivide(rng: np.random.Generator, layout: Layout,
               block: tuple[float, float, float, float], zone: str, to_world: object) -> None:
    """Split one block into rows facing the roads and rows into parcels."""
    assert callable(to_world)
    bu0, bu1, bv0, bv1 = block
    long_u = (bu1 - bu0) >= (bv1 - bv0)
    length = (bu1 - bu0) if long_u else (bv1 - bv0)
    depth = (bv1 - bv0) if long_u else (bu1 - bu0)
    if zone == "grove":
        rows = [(0.0, depth, -1)]
    elif depth >= (40.0 if zone == "farm" else 24.0):
        rows = [(0.0, depth / 2, -1), (depth / 2, depth, 1)]
    else:
        rows = [(0.0, depth, -1 if rng.random() < 0.5 else 1)]

    for d0, d1, facing in rows:
        # parcel frontages along the row
        if zone == "grove":
            cuts = [(0.0, length, "grove")]
        else:
            cuts = []
            pos = 0.0
            if zone == "large":
                w = min(length * 0.6, float(rng.uniform(26, 44)))
                cuts.append((0.0, w, "large_building"))
                pos = w
                if length - pos > 14:
                    w = min(length - pos, float(rng.uniform(15, 28)))
                    cuts.append((pos, pos + w, "large_parking"))
                    pos += w
            lo, hi, kind = (16.0, 34.0, "farm") if zone == "farm" else (10.0, 15.5, "residential")
            while length - pos > 0.1:
                w = float(rng.uniform(lo, hi))
                if length - pos - w < lo * 0.7:
                    w = length - pos
                if w < 5.0 and cuts:
                    a0, _, k = cuts[-1]
                    cuts[-1] = (a0, length, k)
                    break
                cuts.append((pos, pos + w, kind))
                pos += w
            # a few large blocks that ran out of room keep residential parcels: fine.
        for a0, a1, kind in cuts:
            # local (u, v) bounds of the parcel and the angle that points b away from the road
            if long_u:
                u0, u1 = bu0 + a0, bu0 + a1
                v0, v1 = bv0 + d0, bv0 + d1
                phi = 0.0 if facing < 0 else math.pi
                hl, hw = (u1 - u0) / 2, (v1 - v0) / 2
            else:
                v0, v1 = bv0 + a0, bv0 + a1
                u0, u1 = bu0 + d0, bu0 + d1
                phi = -math.pi / 2 if facing < 0 else math.pi / 2
                hl, hw = (v1 - v0) / 2, (u1 - u0) / 2
            rect = to_world((u0 + u1) / 2, (v0 + v1) / 2, hl, hw, phi)
            layout.parcels.append(Parcel(len(layout.parcels), rect, kind))


def _name_parcels(rng: np.random.Generator, layout: Layout, centre: tuple[float, float],
                  theta: float, u_main: float, v_main: float) -> None:
    """Give each parcel a 所在 (by quadrant of the main crossing) and a unique 地番."""
    oaza = [str(x) for x in rng.choice(OAZA, size=2, replace=False)]
    aza = [str(x) for x in rng.choice(AZA, size=4, replace=False)]
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    next_hon = [100 + 400 * k + int(rng.integers(0, 150)) for k in range(4)]
    last_block: dict[int, tuple[int, int]] = {}
    for parcel in layout.parcels:
        dx, dy = parcel.rect.cx - centre[0], parcel.rect.cy - centre[1]
        u, v = dx * cos_t + dy * sin_t, -dx * sin_t + dy * cos_t
        quad = (1 if u > u_main else 0) + (2 if v > v_main else 0)
        parcel.shozai = f"大字{oaza[quad // 2]}字{aza[quad]}"
        # consecutive parcels of one row share a 本番 until a gap; then a new 本番
        hon, eda = last_block.get(quad, (next_hon[quad], 0))
        if eda >= int(rng.integers(3, 9)) or parcel.zone in ("grove", "large_building"):
            next_hon[quad] += int(rng.integers(1, 4))
            hon, eda = next_hon[quad], 0
        eda += 1
        last_block[quad] = (hon, eda)
        parcel.chiban = f"{hon}-{eda}"
