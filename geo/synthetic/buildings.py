"""Buildings: footprints made of rectangular parts, roof kinds and roof materials."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from idou.geo.synthetic.layout import Rect

# roof albedo (RGB, 0..255 before lighting) by material
ROOF_PALETTE: dict[str, tuple[tuple[float, float, float], ...]] = {
    "kawara": ((72, 74, 80), (86, 88, 95), (62, 64, 70), (100, 104, 112), (80, 78, 76)),
    "metal": ((52, 78, 118), (66, 92, 128), (112, 72, 52), (96, 66, 52), (138, 58, 48),
              (70, 98, 80), (120, 118, 112)),
    "slate": ((150, 148, 142), (104, 94, 88), (124, 98, 82), (70, 70, 74), (160, 120, 100)),
    "flat": ((176, 176, 170), (156, 158, 154), (190, 188, 180), (140, 142, 140)),
}
MATERIAL_WEIGHTS = {"kawara": 0.38, "metal": 0.32, "slate": 0.30}


@dataclass(frozen=True)
class RoofPart:
    """One rectangular part of a building with its own roof.

    Attributes:
        rect: The part; its axis is its ridge direction (long side) except for sheds.
        kind: gable, hip, shed (lean-to sloping towards +perp) or flat.
        height: Eave height in metres (for the shadow).
    """

    rect: Rect
    kind: str
    height: float


@dataclass
class Building:
    """A building as drawn on the image and as listed in the building map (家屋現況図)."""

    building_id: str
    parcel: int
    parts: list[RoofPart]
    albedo: tuple[float, float, float]
    material: str
    details: list[Rect] = field(default_factory=list)  # rooftop units of flat roofs
    solar: bool = False  # solar panels on the sunniest (south) facet of the first part

    def footprint(self) -> BaseGeometry:
        """The true footprint: the union of the parts (computed once per building)."""
        cached = self.__dict__.get("_footprint")
        if cached is None or cached[0] != len(self.parts):
            cached = (len(self.parts), snap_union([p.rect.polygon() for p in self.parts]))
            self.__dict__["_footprint"] = cached
        return cached[1]


def snap_union(polys: list[BaseGeometry]) -> BaseGeometry:
    """Union of parts on a 1 mm grid; parts that touch merge into one polygon."""
    grown = shapely.union_all([p.buffer(0.002, join_style="mitre") for p in polys])
    return shapely.set_precision(grown.buffer(-0.002, join_style="mitre"), 1e-3)


def pick_roof(rng: np.random.Generator, exclude: str | None = None
              ) -> tuple[str, tuple[float, float, float]]:
    """A roof material and its colour, optionally different from ``exclude``."""
    names = [m for m in MATERIAL_WEIGHTS if m != exclude] or list(MATERIAL_WEIGHTS)
    weights = np.array([MATERIAL_WEIGHTS[m] for m in names])
    material = str(rng.choice(names, p=weights / weights.sum()))
    palette = ROOF_PALETTE[material]
    base = np.array(palette[int(rng.integers(len(palette)))], dtype=float)
    base *= rng.uniform(0.9, 1.1)
    return material, (float(base[0]), float(base[1]), float(base[2]))


def house_in_parcel(rng: np.random.Generator, lot: Rect, building_id: str, parcel: int,
                    ) -> tuple[Building, Rect | None] | None:
    """A detached house (8–12 m) set back from the road, and its driveway if there is room.

    Returns None when the parcel is too small.
    """
    front, depth = 2 * lot.hl, 2 * lot.hw
    w = min(front - 2.2, float(rng.uniform(7.5, 12.0)))
    d = min(depth - 3.5, float(rng.uniform(7.5, 11.5)))
    if w < 5.5 or d < 5.5:
        return None
    room = depth - d - 1.2
    setback = float(rng.uniform(2.0, min(6.5, room))) if room > 2.0 else max(0.5, room / 2)
    slack = (front - w) / 2 - 1.0
    side = float(rng.uniform(-slack, slack)) if slack > 0 else 0.0
    b0 = -lot.hw + setback
    main = lot.sub(side - w / 2, side + w / 2, b0, b0 + d)
    r = rng.random()
    # shed: modern 片流れ; flat: a modern box house with a 陸屋根
    kind = "gable" if r < 0.48 else ("hip" if r < 0.86 else ("shed" if r < 0.95 else "flat"))
    height = 6.2 if rng.random() < 0.75 else 3.4
    if kind == "flat":
        height = 6.8
    parts = [RoofPart(main.normalized(), kind, height)]
    # an L-shaped house: a wing at the back or a side, inside the parcel
    if rng.random() < 0.3:
        ww, wd = float(rng.uniform(3.5, 5.0)), float(rng.uniform(3.0, 4.5))
        left = rng.random() < 0.5
        a0 = side - w / 2 if left else side + w / 2 - ww
        if b0 + d + wd < lot.hw - 0.8:
            wing = lot.sub(a0, a0 + ww, b0 + d, b0 + d + wd)
            if height > 5 and rng.random() < 0.6:  # a one-storey 下屋 with a lean-to roof
                parts.append(RoofPart(wing, "shed", 3.0))
            else:
                parts.append(RoofPart(wing.normalized(), kind, height))
    material, albedo = pick_roof(rng)
    if kind == "flat":
        grey = float(rng.uniform(0.85, 1.0))
        material = "flat"
        fc = ROOF_PALETTE["flat"][int(rng.integers(4))]
        albedo = (fc[0] * grey, fc[1] * grey, fc[2] * grey)
    driveway = None
    if setback >= 4.5:
        dw = min(3.0, front / 3)
        da = side - w / 2 + 0.3 if rng.random() < 0.5 else side + w / 2 - dw - 0.3
        driveway = lot.sub(da, da + dw, -lot.hw, b0)
    return Building(building_id, parcel, parts, albedo, material), driveway


def large_building(rng: np.random.Generator, lot: Rect, building_id: str, parcel: int
                   ) -> Building | None:
    """An apartment block or a shop with a flat roof and rooftop units."""
    front, depth = 2 * lot.hl, 2 * lot.hw
    if rng.random() < 0.6:  # apartment: long and narrow, tall
        w = min(front - 4.0, float(rng.uniform(22, 40)))
        d = min(depth - 8.0, float(rng.uniform(9, 12)))
        height = float(rng.uniform(9, 15))
    else:  # shop or small office
        w = min(front - 4.0, float(rng.uniform(18, 32)))
        d = min(depth - 8.0, float(rng.uniform(14, 22)))
        height = float(rng.uniform(5, 8))
    if w < 8 or d < 7:
        return None
    b0 = lot.hw - 2.0 - d  # to the back: parking or forecourt in front
    main = lot.sub(-w / 2, w / 2, b0, b0 + d).normalized()
    palette = ROOF_PALETTE["flat"]
    grey = float(rng.uniform(0.9, 1.05))
    albedo = tuple(float(c) * grey for c in palette[int(rng.integers(len(palette)))])
    details = []
    # outdoor AC units in a row or two along the roof
    n_units = int(rng.integers(4, 12))
    b_row = float(rng.uniform(-main.hw + 1.5, main.hw - 1.5))
    for k in range(n_units):
        a = -main.hl + 2.0 + k * (2 * main.hl - 4.0) / max(n_units - 1, 1)
        b = b_row + (0.0 if rng.random() < 0.7 else float(rng.uniform(-2.0, 2.0)))
        cx, cy = main.point(a, max(-main.hw + 1.0, min(main.hw - 1.0, b)))
        details.append(Rect(cx, cy, float(rng.uniform(0.45, 0.8)), float(rng.uniform(0.35, 0.5)),
                            main.angle))
    cx, cy = main.point(float(rng.uniform(-main.hl * 0.6, main.hl * 0.6)), 0.0)
    details.append(Rect(cx, cy, 1.8, 1.5, main.angle))  # stair / elevator house
    return Building(building_id, parcel, [RoofPart(main, "flat", height)],
                    (albedo[0], albedo[1], albedo[2]), "flat", details)


def extension_part(rng: np.random.Generator, building: Building, lot: Rect
                   ) -> RoofPart | None:
    """An added part (増築) touching the house's first part and inside its parcel."""
    main = building.parts[0].rect
    others = shapely.union_all([p.rect.polygon() for p in building.parts])
    lot_poly = lot.polygon().buffer(-0.4)
    sides = [(1, 0), (-1, 0), (0, 1), (0, -1)]
    order = rng.permutation(len(sides))
    for k in order:
        sa, sb = sides[int(k)]
        ext_len = float(rng.uniform(3.0, 5.5))
        ext_out = float(rng.uniform(2.5, 4.0))
        if sa:  # on a short end
            ext_len = min(ext_len, 2 * main.hw)
            a0 = main.hl if sa > 0 else -main.hl - ext_out
            off = float(rng.uniform(-main.hw + ext_len / 2, main.hw - ext_len / 2))
            rect = main.sub(a0, a0 + ext_out, off - ext_len / 2, off + ext_len / 2)
            # shed slopes away from the house
            shed = Rect(rect.cx, rect.cy, rect.hw, rect.hl, main.angle + (
                -math.pi / 2 if sa > 0 else math.pi / 2))
        else:  # on a long side
            b0 = main.hw if sb > 0 else -main.hw - ext_out
            off = float(rng.uniform(-main.hl + ext_len / 2, main.hl - ext_len / 2))
            rect = main.sub(off - ext_len / 2, off + ext_len / 2, b0, b0 + ext_out)
            shed = rect if sb > 0 else Rect(rect.cx, rect.cy, rect.hl, rect.hw,
                                            main.angle + math.pi)
        poly = rect.polygon()
        if lot_poly.contains(poly) and poly.intersection(others).area < 0.05:
            return RoofPart(shed, "shed", 3.0)
    return None


def rebuilt_house(rng: np.random.Generator, old: Building, lot: Rect, building_id: str
                  ) -> Building | None:
    """A new house on the same parcel (建替): another footprint and another roof."""
    old_fp = old.footprint()
    for _ in range(12):
        made = house_in_parcel(rng, lot, building_id, old.parcel)
        if made is None:
            continue
        new, _ = made
        fp = new.footprint()
        iou = fp.intersection(old_fp).area / max(fp.union(old_fp).area, 1e-6)
        if iou < 0.75:
            if new.material == "flat":
                return new
            material, albedo = pick_roof(rng, exclude=old.material)
            return replace(new, material=material, albedo=albedo)
    return None
