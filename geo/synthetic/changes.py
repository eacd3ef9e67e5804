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
    first = base.epoch
    epoch = Epoch(sun=sun, buildings=[], trees=list(first.trees), cars=[],
                  parcel_material=dict(first.parcel_material), ground=list(first.ground))
    by_parcel = {b.parcel: b for b in first.buildings}
    uses = base.uses
    want = target_counts(size)
    truth: list[TruthRow] = []
    next_id = base.next_id
    n_change = 0

    def new_change_id() -> str:
        nonlocal n_change
        n_change += 1
        return f"C{n_change:04d}"

    def pool(use: str) -> list[int]:
        return [int(i) for i in rng.permutation(sorted(
            i for i in eligible if uses.get(i) == use))]

    houses = pool("house")
    vacant = pool("vacant")
    farms = pool("farm")
    changed: dict[int, Building | None] = {}  # parcel -> replacement (None = demolished)
    clear_ground: set[int] = set()

    houses = [i for i in houses if safe.contains(by_parcel[i].footprint())]

    # new buildings: about 60 % on vacant lots, the rest on farmland (then more lots if short)
    added: list[Building] = []
    used_vacant: set[int] = set()

    def build_new(index: int) -> None:
        nonlocal next_id
        made = house_in_parcel(rng, layout.parcels[index].rect, f"B{next_id:05d}", index)
        if made is None or not safe.contains(made[0].footprint()):
            return
        building, driveway = made
        used_vacant.add(index)
        next_id += 1
        added.append(building)
        truth.append(TruthRow(new_change_id(), "new", "new", index, building.footprint()))
        epoch.parcel_material[index] = int(rng.choice([GRAVEL, CONCRETE, LAWN]))
        if driveway is not None:
            epoch.ground.append((driveway, CONCRETE))
        clear_ground.add(index)

    for limit, candidates in ((int(round(want["new"] * 0.6)), vacant), (want["new"], farms),
                              (want["new"], vacant)):
        for index in candidates:
            if len(added) >= limit:
                break
            if index not in used_vacant:
                build_new(index)
    vacant = [i for i in vacant if i not in used_vacant]

    # extensions (増築): only the added part is a change
    done = 0
    used = 0
    for index in houses:
        if done >= want["extension"]:
            break
        used += 1
        old = by_parcel[index]
        if old.material == "flat":
            continue
        part = extension_part(rng, old, layout.parcels[index].rect)
        if part is None or not safe.contains(part.rect.polygon()):
            continue
        changed[index] = replace(old, parts=[*old.parts, part])
        added_geom = shapely.set_precision(shapely.set_precision(part.rect.polygon(), 1e-3)
                                           .difference(old.footprint()), 1e-3)
        truth.append(TruthRow(new_change_id(), "extension", "new", index, added_geom))
        done += 1
    houses = houses[used:]

    # rebuilt (建替): old footprint gone, a new one on the same parcel
    done = 0
    used = 0
    for index in houses:
        if done >= want["rebuilt"]:
            break
        used += 1
        old = by_parcel[index]
        new = rebuilt_house(rng, old, layout.parcels[index].rect, f"B{next_id:05d}")
        if new is None or not safe.contains(new.footprint()):
            continue
        next_id += 1
        changed[index] = new
        cid = new_change_id()
        truth.append(TruthRow(cid, "rebuilt", "demolished", index, old.footprint()))
        truth.append(TruthRow(cid, "rebuilt", "new", index, new.footprint()))
        clear_ground.add(index)
        done += 1
    houses = houses[used:]

    # demolished: 更地 (bare soil or gravel)
    k = 0
    for index in houses[:want["demolished"]]:
        changed[index] = None
        truth.append(TruthRow(new_change_id(), "demolished", "demolished", index,
                              by_parcel[index].footprint()))
        epoch.parcel_material[index] = int(rng.choice([BARE, BARE, GRAVEL]))
        clear_ground.add(index)
        k += 1
    houses = houses[k:]

    # distractor: roofs repainted on the same footprint
    n_repaint = max(1, int(round(len(first.buildings) * 0.03)))
    for index in houses[:n_repaint]:
        old = by_parcel[index]
        if old.material == "flat":
            continue
        material, albedo = pick_roof(rng)
        changed[index] = replace(old, albedo=albedo, material=material)
    # distractor: carports (not buildings) put over driveways of unchanged houses
    has_carport = set(first.carports)
    epoch.carports = list(first.carports)
    for index in houses[2 * n_repaint:3 * n_repaint]:
        drive = base.driveways.get(index)
        if drive is not None and carport_over(drive) not in has_carport:
            epoch.carports.append(carport_over(drive))
    # distractor: solar panels put on an unchanged roof
    for index in houses[n_repaint:2 * n_repaint]:
        old = by_parcel[index]
        if old.material != "flat" and not old.solar:
            changed[index] = replace(old, solar=True)

    for building in first.buildings:
        if building.parcel in changed:
            repl = changed[building.parcel]
            if repl is not None:
                epoch.buildings.append(repl)
        else:
            epoch.buildings.append(building)
    epoch.buildings.extend(added)

    # distractor: construction sites (bare soil, a blue tarp) with no building yet
    for index in vacant[:max(1, int(round(len(eligible) * 0.012)))]:
        epoch.parcel_material[index] = BARE
        lot = layout.parcels[index].rect
        a = float(rng.uniform(-lot.hl * 0.5, lot.hl * 0.5))
        b = float(rng.uniform(-lot.hw * 0.5, lot.hw * 0.5))
        cx, cy = lot.point(a, b)
        epoch.ground.append((Rect(cx, cy, float(rng.uniform(1.5, 3.0)),
                                  float(rng.uniform(1.0, 2.0)), lot.angle + rng.normal(0, 0.3)),
                             TARP))

    # distractor: seasonal vegetation on farmland and lawns
    for index, use in uses.items():
        if use == "farm" and index not in clear_ground and rng.random() < 0.6:
            old_mat = epoch.parcel_material[index]
            choices = [m for m in (CROP, SOIL_ROWS, PADDY, WEEDS) if m != old_mat]
            epoch.parcel_material[index] = int(rng.choice(choices))
        elif use == "vacant" and epoch.parcel_material[index] in (WEEDS, DRY_GRASS) \
                and rng.random() < 0.5:
            epoch.parcel_material[index] = DRY_GRASS if \
                epoch.parcel_material[index] == WEEDS else WEEDS
    epoch.lawn_tone = float(rng.uniform(-1.0, -0.3))

    # distractor: trees cut, grown and planted; most trees on cleared parcels go
    xs = np.array([t.x for t in epoch.trees])
    ys = np.array([t.y for t in epoch.trees])
    radii = np.array([t.radius for t in epoch.trees])
    cleared = shapely.union_all([layout.parcels[i].rect.polygon() for i in clear_ground])
    on_cleared = shapely.contains_xy(cleared, xs, ys) if len(xs) else np.zeros(0, bool)
    fresh = shapely.union_all([row.geometry for row in truth if row.channel == "new"])
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
        if uses.get(index) in ("house", "vacant", "grove") and \
                len(buildings.query(shapely.Point(x, y).buffer(2.5), "intersects")) == 0:
            kept.append(random_tree(rng, x, y))
    epoch.trees = kept
    # gardens of cleared parcels go with the house
    dropped = {base.gardens[i] for i in clear_ground if i in base.gardens}
    epoch.ground = [(r, m) for r, m in epoch.ground if r not in dropped]
    return epoch, truth


__all__ = ["MINIMUM_AT_2048", "TruthRow", "make_second_epoch", "target_counts", "CROP",
           "SOIL_ROWS", "PADDY"]
