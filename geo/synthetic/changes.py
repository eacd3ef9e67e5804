"""The second flight: true changes (new, demolished, extension, rebuilt) and distractors."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from idou.geo.synthetic.buildings import (
    Building,
    extension_part,
    house_in_parcel,
    pick_roof,
    rebuilt_house,
)
from idou.geo.synthetic.layout import Layout, Rect
from idou.geo.synthetic.scene import (
    BARE,
    CONCRETE,
    CROP,
    DRY_GRASS,
    GRAVEL,
    LAWN,
    PADDY,
    SOIL_ROWS,
    TARP,
    WEEDS,
    Base,
    Epoch,
    Sun,
    carport_over,
    random_tree,
)

# minimum counts per change type at 2048 px; scaled by area for other sizes
MINIMUM_AT_2048 = {"new": 30, "demolished": 15, "extension": 5, "rebuilt": 5}
TARGET_AT_2048 = {"new": 36, "demolished": 18, "extension": 7, "rebuilt": 7}


@dataclass(frozen=True)
class TruthRow:
    """One truth polygon; a rebuilt change has two rows with the same change_id."""

    change_id: str
    change_type: str
    channel: str
    parcel: int
    geometry: BaseGeometry


def target_counts(size: int) -> dict[str, int]:
    """How many changes of each type a scene of ``size`` pixels gets."""
    scale = (size / 2048.0) ** 2
    return {k: max(1, int(math.ceil(v * scale))) for k, v in TARGET_AT_2048.items()}


def make_second_epoch(rng: np.random.Generator, layout: Layout, base: Base, sun: Sun,
                      eligible: set[int], size: int, safe: BaseGeometry
                      ) -> tuple[Epoch, list[TruthRow]]:
    """Apply changes on eligible parcels (inside both flights) and distractors anywhere.

    The steps draw from ``rng`` in a fixed order (the samples depend on it): true changes
    first (new, extension, rebuilt, demolished), then the distractors.

    Args:
        rng: Random generator.
        layout: The shared layout.
        base: The first flight's scene.
        sun: The sun of the second flight.
        eligible: Parcels that lie mostly inside the valid overlap of both flights.
        size: Image size in pixels (sets how many changes).
        safe: The valid overlap of both flights (less a small margin); every truth polygon
            lies inside it.
    """
    second = _SecondEpoch(rng, layout, base, sun, safe, target_counts(size))
    houses = second.pool(eligible, "house")
    vacant = second.pool(eligible, "vacant")
    farms = second.pool(eligible, "farm")
    houses = [i for i in houses if safe.contains(second.by_parcel[i].footprint())]
    vacant = second.add_new_buildings(vacant, farms)
    houses = second.extend(houses)
    houses = second.rebuild(houses)
    houses = second.demolish(houses)
    second.repaint_and_cover(houses)
    second.assemble_buildings()
    second.construction_sites(vacant[:max(1, int(round(len(eligible) * 0.012)))])
    second.seasonal_vegetation()
    second.change_trees()
    second.drop_gardens()
    return second.epoch, second.truth


class _SecondEpoch:
    """The second flight's scene as :func:`make_second_epoch` builds it, step by step."""

    def __init__(self, rng: np.random.Generator, layout: Layout, base: Base, sun: Sun,
                 safe: BaseGeometry, want: dict[str, int]) -> None:
        first = base.epoch
        self.rng, self.layout, self.base, self.safe, self.want = rng, layout, base, safe, want
        self.epoch = Epoch(sun=sun, buildings=[], trees=list(first.trees), cars=[],
                           parcel_material=dict(first.parcel_material),
                           ground=list(first.ground))
        self.by_parcel = {b.parcel: b for b in first.buildings}
        self.truth: list[TruthRow] = []
        self.next_id = base.next_id
        self.n_change = 0
        self.changed: dict[int, Building | None] = {}  # parcel -> replacement (None: demolished)
        self.clear_ground: set[int] = set()
        self.added: list[Building] = []

    def new_change_id(self) -> str:
        self.n_change += 1
        return f"C{self.n_change:04d}"

    def pool(self, eligible: set[int], use: str) -> list[int]:
        """The eligible parcels of ``use``, shuffled."""
        return [int(i) for i in self.rng.permutation(sorted(
            i for i in eligible if self.base.uses.get(i) == use))]

    def add_new_buildings(self, vacant: list[int], farms: list[int]) -> list[int]:
        """New buildings: about 60 % on vacant lots, the rest on farmland (then more lots if
        short); returns the vacant lots left."""
        used_vacant: set[int] = set()
        new = self.want["new"]
        for limit, candidates in ((int(round(new * 0.6)), vacant), (new, farms), (new, vacant)):
            for index in candidates:
                if len(self.added) >= limit:
                    break
                if index not in used_vacant and self._build_new(index):
                    used_vacant.add(index)
        return [i for i in vacant if i not in used_vacant]

    def _build_new(self, index: int) -> bool:
        rng = self.rng
        made = house_in_parcel(rng, self.layout.parcels[index].rect, f"B{self.next_id:05d}",
                               index)
        if made is None or not self.safe.contains(made[0].footprint()):
            return False
        building, driveway = made
        self.next_id += 1
        self.added.append(building)
        self.truth.append(TruthRow(self.new_change_id(), "new", "new", index,
                                   building.footprint()))
        self.epoch.parcel_material[index] = int(rng.choice([GRAVEL, CONCRETE, LAWN]))
        if driveway is not None:
            self.epoch.ground.append((driveway, CONCRETE))
        self.clear_ground.add(index)
        return True

    def extend(self, houses: list[int]) -> list[int]:
        """Extensions (増築): only the added part is a change; returns the houses left."""
        done = used = 0
        for index in houses:
            if done >= self.want["extension"]:
                break
            used += 1
            old = self.by_parcel[index]
            if old.material == "flat":
                continue
            part = extension_part(self.rng, old, self.layout.parcels[index].rect)
            if part is None or not self.safe.contains(part.rect.polygon()):
                continue
            self.changed[index] = replace(old, parts=[*old.parts, part])
            added_geom = shapely.set_precision(shapely.set_precision(
                part.rect.polygon(), 1e-3).difference(old.footprint()), 1e-3)
            self.truth.append(TruthRow(self.new_change_id(), "extension", "new", index,
                                       added_geom))
            done += 1
        return houses[used:]

    def rebuild(self, houses: list[int]) -> list[int]:
        """Rebuilt (建替): old footprint gone, a new one on the same parcel."""
        done = used = 0
        for index in houses:
            if done >= self.want["rebuilt"]:
                break
            used += 1
            old = self.by_parcel[index]
            new = rebuilt_house(self.rng, old, self.layout.parcels[index].rect,
                                f"B{self.next_id:05d}")
            if new is None or not self.safe.contains(new.footprint()):
                continue
            self.next_id += 1
            self.changed[index] = new
            cid = self.new_change_id()
            self.truth.append(TruthRow(cid, "rebuilt", "demolished", index, old.footprint()))
            self.truth.append(TruthRow(cid, "rebuilt", "new", index, new.footprint()))
            self.clear_ground.add(index)
            done += 1
        return houses[used:]

    def demolish(self, houses: list[int]) -> list[int]:
        """Demolished: 更地 (bare soil or gravel)."""
        gone = houses[:self.want["demolished"]]
        for index in gone:
            self.changed[index] = None
            self.truth.append(TruthRow(self.new_change_id(), "demolished", "demolished",
                                       index, self.by_parcel[index].footprint()))
            self.epoch.parcel_material[index] = int(self.rng.choice([BARE, BARE, GRAVEL]))
            self.clear_ground.add(index)
        return houses[len(gone):]

    def repaint_and_cover(self, houses: list[int]) -> None:
        """Distractors on unchanged houses: roofs repainted, carports over driveways, solar
        panels on a roof."""
        first = self.base.epoch
        n_repaint = max(1, int(round(len(first.buildings) * 0.03)))
        for index in houses[:n_repaint]:
            old = self.by_parcel[index]
            if old.material == "flat":
                continue
            material, albedo = pick_roof(self.rng)
            self.changed[index] = replace(old, albedo=albedo, material=material)
        has_carport = set(first.carports)
        self.epoch.carports = list(first.carports)
        for index in houses[2 * n_repaint:3 * n_repaint]:
            drive = self.base.driveways.get(index)
            if drive is not None and carport_over(drive) not in has_carport:
                self.epoch.carports.append(carport_over(drive))
        for index in houses[n_repaint:2 * n_repaint]:
            old = self.by_parcel[index]
            if old.material != "flat" and not old.solar:
                self.changed[index] = replace(old, solar=True)

    def assemble_buildings(self) -> None:
        """The first flight's buildings with their changes applied, then the new ones."""
        for building in self.base.epoch.buildings:
            if building.parcel in self.changed:
                repl = self.changed[building.parcel]
                if repl is not None:
                    self.epoch.buildings.append(repl)
            else:
                self.epoch.buildings.append(building)
        self.epoch.buildings.extend(self.added)

    def construction_sites(self, lots: list[int]) -> None:
        """Distractor: bare soil and a blue tarp with no building yet."""
        rng = self.rng
        for index in lots:
            self.epoch.parcel_material[index] = BARE
            lot = self.layout.parcels[index].rect
            a = float(rng.uniform(-lot.hl * 0.5, lot.hl * 0.5))
            b = float(rng.uniform(-lot.hw * 0.5, lot.hw * 0.5))
            cx, cy = lot.point(a, b)
            self.epoch.ground.append((Rect(cx, cy, float(rng.uniform(1.5, 3.0)),
                                           float(rng.uniform(1.0, 2.0)),
                                           lot.angle + rng.normal(0, 0.3)), TARP))

    def seasonal_vegetation(self) -> None:
        """Distractor: seasonal vegetation on farmland and lawns."""
        rng, material = self.rng, self.epoch.parcel_material
        for index, use in self.base.uses.items():
            if use == "farm" and index not in self.clear_ground and rng.random() < 0.6:
                old_mat = material[index]
                choices = [m for m in (CROP, SOIL_ROWS, PADDY, WEEDS) if m != old_mat]
                material[index] = int(rng.choice(choices))
            elif use == "vacant" and material[index] in (WEEDS, DRY_GRASS) \
                    and rng.random() < 0.5:
                material[index] = DRY_GRASS if material[index] == WEEDS else WEEDS
        self.epoch.lawn_tone = float(rng.uniform(-1.0, -0.3))

    def change_trees(self) -> None:
        """Distractor: trees cut, grown and planted; most trees on cleared parcels go."""
        rng, epoch, layout = self.rng, self.epoch, self.layout
        xs = np.array([t.x for t in epoch.trees])
        ys = np.array([t.y for t in epoch.trees])
        radii = np.array([t.radius for t in epoch.trees])
        cleared = shapely.union_all([layout.parcels[i].rect.polygon()
                                     for i in self.clear_ground])
        on_cleared = shapely.contains_xy(cleared, xs, ys) if len(xs) else np.zeros(0, bool)
        fresh = shapely.union_all([row.geometry for row in self.truth if row.channel == "new"])
        near_new = shapely.distance(fresh, shapely.points(xs, ys)) < radii + 0.5 \
            if len(xs) and not fresh.is_empty else np.zeros(len(xs), bool)
        kept = []
        for k, tree in enumerate(epoch.trees):
            if near_new[k] or (on_cleared[k] and rng.random() < 0.7):
                continue
            r = rng.random()
            if r < 0.04:
                continue
            if r < 0.25:
                tree = replace(tree, radius=tree.radius * float(rng.uniform(1.05, 1.2)))
            kept.append(tree)
        buildings = shapely.STRtree([b.footprint() for b in epoch.buildings])
        for _ in range(int(len(epoch.trees) * 0.04) + 1):
            index = int(rng.integers(len(layout.parcels)))
            lot = layout.parcels[index].rect
            x, y = lot.point(float(rng.uniform(-lot.hl + 1, lot.hl - 1)),
                             float(rng.uniform(-lot.hw + 1, lot.hw - 1)))
            if self.base.uses.get(index) in ("house", "vacant", "grove") and \
                    len(buildings.query(shapely.Point(x, y).buffer(2.5), "intersects")) == 0:
                kept.append(random_tree(rng, x, y))
        epoch.trees = kept

    def drop_gardens(self) -> None:
        """Gardens of cleared parcels go with the house."""
        dropped = {self.base.gardens[i] for i in self.clear_ground if i in self.base.gardens}
        self.epoch.ground = [(r, m) for r, m in self.epoch.ground if r not in dropped]


__all__ = ["MINIMUM_AT_2048", "TruthRow", "make_second_epoch", "target_counts", "CROP",
           "SOIL_ROWS", "PADDY"]
