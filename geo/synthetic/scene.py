"""What one flight sees: buildings, trees, cars, ground materials and the sun."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from idou.geo.synthetic.buildings import Building, house_in_parcel, large_building
from idou.geo.synthetic.layout import Layout, Parcel, Rect

# ground materials (index into render.GROUND_ALBEDO)
BACKGROUND, ROAD, GRAVEL, LAWN, WEEDS, PARKING, CROP, SOIL_ROWS, PADDY, BARE, CONCRETE, TARP, \
    FOREST, DRY_GRASS, SIDEWALK, HEDGE = range(16)

CAR_COLOURS = ((225, 226, 228), (230, 230, 226), (175, 178, 182), (40, 42, 46), (110, 112, 118),
               (150, 30, 32), (32, 58, 120), (200, 190, 160), (90, 40, 30))
CAR_WEIGHTS = (0.22, 0.12, 0.18, 0.15, 0.1, 0.06, 0.06, 0.06, 0.05)


@dataclass(frozen=True)
class Tree:
    """A tree crown: centre (world m), crown radius, height (m) and leaf colour."""

    x: float
    y: float
    radius: float
    height: float
    albedo: tuple[float, float, float]


@dataclass(frozen=True)
class Car:
    """A car seen from above: its rectangle (axis = driving direction) and body colour."""

    rect: Rect
    colour: tuple[float, float, float]


@dataclass
class Sun:
    """Sun azimuth (degrees clockwise from north) and elevation (degrees)."""

    azimuth: float
    elevation: float

    def vector(self) -> np.ndarray:
        """Unit vector towards the sun (east, north, up)."""
        a, e = math.radians(self.azimuth), math.radians(self.elevation)
        return np.array([math.sin(a) * math.cos(e), math.cos(a) * math.cos(e), math.sin(e)])

    def shadow_offset(self, height: float) -> tuple[float, float]:
        """Where the shadow of a point ``height`` metres up falls, relative to it (east, north)."""
        a, e = math.radians(self.azimuth), math.radians(self.elevation)
        length = height / math.tan(e)
        return (-math.sin(a) * length, -math.cos(a) * length)


@dataclass(frozen=True)
class Camera:
    """Where the photo was taken from: tall things lean away from the nadir (not true ortho)."""

    nadir_x: float
    nadir_y: float
    altitude: float

    def lean(self, x: float, y: float, height: float) -> tuple[float, float]:
        """Image displacement (east, north metres) of a point ``height`` metres above (x, y)."""
        k = height / self.altitude
        return ((x - self.nadir_x) * k, (y - self.nadir_y) * k)


@dataclass
class Epoch:
    """Everything that differs between flights; the layout is shared."""

    sun: Sun
    buildings: list[Building] = field(default_factory=list)
    trees: list[Tree] = field(default_factory=list)
    cars: list[Car] = field(default_factory=list)
    parcel_material: dict[int, int] = field(default_factory=dict)
    ground: list[tuple[Rect, int]] = field(default_factory=list)  # drawn over parcels
    parking_lines: list[int] = field(default_factory=list)  # parcels with stall lines
    lawn_tone: float = 0.0  # seasonal: -1 dry/brown .. +1 lush
    camera: Camera | None = None  # None: a true orthophoto
    carports: list[Rect] = field(default_factory=list)  # translucent roofs, not buildings
    ground_albedo: np.ndarray | None = None  # a style's materials; None: render's default


@dataclass
class Base:
    """The 2024 scene plus what the change step needs to know about parcels."""

    epoch: Epoch
    uses: dict[int, str]  # parcel index -> house, vacant, parking, farm, large, grove
    driveways: dict[int, Rect]
    next_id: int
    gardens: dict[int, Rect] = field(default_factory=dict)


def tree_colour(rng: np.random.Generator) -> tuple[float, float, float]:
    """A leaf colour: mostly dark greens, some yellow-greens and conifers."""
    base = np.array([(52, 74, 40), (60, 84, 44), (44, 62, 38), (72, 92, 50), (40, 56, 42)]
                    [int(rng.integers(5))], dtype=float) * rng.uniform(0.9, 1.12)
    return (float(base[0]), float(base[1]), float(base[2]))


def random_tree(rng: np.random.Generator, x: float, y: float, big: bool = False) -> Tree:
    """A garden or street tree at (x, y)."""
    radius = float(rng.uniform(2.2, 4.5) if big else rng.uniform(1.0, 2.6))
    return Tree(x, y, radius, radius * float(rng.uniform(1.6, 2.6)), tree_colour(rng))


def random_car(rng: np.random.Generator, cx: float, cy: float, angle: float) -> Car:
    """A passenger car or a kei car at a position and heading."""
    colour = CAR_COLOURS[int(rng.choice(len(CAR_COLOURS), p=CAR_WEIGHTS))]
    hl = float(rng.uniform(1.7, 2.35))
    return Car(Rect(cx, cy, hl, 0.82 if hl > 1.9 else 0.74, angle),
               tuple(float(c) * float(rng.uniform(0.94, 1.04)) for c in colour))  # type: ignore[arg-type]


def populate(rng: np.random.Generator, layout: Layout, sun: Sun,
             force_vacant: set[int] | None = None) -> Base:
    """Fill the parcels with what the first flight (2024) sees.

    Args:
        rng: Random generator.
        layout: Roads and parcels.
        sun: The first flight's sun.
        force_vacant: Residential parcels that are vacant lots in 2024 (to build on later),
            so that small scenes still have lots to build on.
    """
    force_vacant = force_vacant or set()
    epoch = Epoch(sun=sun)
    uses: dict[int, str] = {}
    driveways: dict[int, Rect] = {}
    gardens: dict[int, Rect] = {}
    next_id = 1
    for parcel in layout.parcels:
        lot = parcel.rect
        use = _use_of(rng, parcel, force_vacant)
        if use == "house":
            made = house_in_parcel(rng, lot, f"B{next_id:05d}", parcel.index)
            if made is None:
                use = "vacant"
            else:
                epoch.buildings.append(made[0])
                next_id += 1
                _furnish_house(rng, epoch, parcel.index, lot, made, driveways, gardens)
        if use == "large":
            building = large_building(rng, lot, f"B{next_id:05d}", parcel.index)
            if building is None:
                use = "parking"
            else:
                epoch.buildings.append(building)
                next_id += 1
                epoch.parcel_material[parcel.index] = CONCRETE
                for k in range(int(rng.integers(0, 4))):
                    x, y = lot.point(float(rng.uniform(-lot.hl + 2, lot.hl - 2)),
                                     lot.hw - 1.0 - 0.2 * k)
                    epoch.trees.append(random_tree(rng, x, y))
        _cover_ground(rng, epoch, parcel.index, lot, use)
        uses[parcel.index] = use
    _street_trees(rng, layout, epoch)
    for building in epoch.buildings:
        building.solar = building.material != "flat" and bool(rng.random() < 0.15)
    return Base(epoch, uses, driveways, next_id, gardens)


def _use_of(rng: np.random.Generator, parcel: Parcel, force_vacant: set[int]) -> str:
    """What a parcel holds in 2024: from its zone (a residential lot draws house, vacant or
    parking)."""
    zone = parcel.zone
    if zone == "residential":
        r = rng.random()
        return "vacant" if r < 0.12 or parcel.index in force_vacant else (
            "parking" if r > 0.94 else "house")
    if zone == "large_building":
        return "large"
    if zone == "large_parking":
        return "parking"
    return zone


def _furnish_house(rng: np.random.Generator, epoch: Epoch, index: int, lot: Rect,
                   made: tuple[Building, Rect | None], driveways: dict[int, Rect],
                   gardens: dict[int, Rect]) -> None:
    """A house's lot: its ground, driveway (maybe a carport), hedge, trees and back garden."""
    building, driveway = made
    epoch.parcel_material[index] = int(
        rng.choice([GRAVEL, LAWN, CONCRETE, GRAVEL], p=[0.45, 0.25, 0.15, 0.15]))
    if driveway is not None:
        driveways[index] = driveway
        epoch.ground.append((driveway, CONCRETE))
        if rng.random() < 0.25:
            epoch.carports.append(carport_over(driveway))
    if rng.random() < 0.25:  # a hedge (生垣) along one side of the lot
        a0 = -lot.hl + 0.15 if rng.random() < 0.5 else lot.hl - 0.95
        epoch.ground.append((lot.sub(a0, a0 + 0.8, -lot.hw + 0.3, lot.hw - 0.3), HEDGE))
    _garden_trees(rng, epoch, lot, building.footprint())
    garden = _back_garden(rng, lot, building)
    if garden is not None:
        gardens[index] = garden[0]
        epoch.ground.append(garden)


def _cover_ground(rng: np.random.Generator, epoch: Epoch, index: int, lot: Rect,
                  use: str) -> None:
    """The ground of a vacant lot, a car park, farmland or a grove (with its trees)."""
    if use == "vacant":
        epoch.parcel_material[index] = int(rng.choice([WEEDS, GRAVEL, DRY_GRASS]))
    elif use == "parking":
        epoch.parcel_material[index] = PARKING
    elif use == "farm":
        epoch.parcel_material[index] = int(
            rng.choice([CROP, SOIL_ROWS, PADDY, WEEDS], p=[0.4, 0.3, 0.2, 0.1]))
    elif use == "grove":
        epoch.parcel_material[index] = FOREST
        area = 4 * lot.hl * lot.hw
        for _ in range(int(area / 14)):
            x, y = lot.point(float(rng.uniform(-lot.hl, lot.hl)),
                             float(rng.uniform(-lot.hw, lot.hw)))
            epoch.trees.append(random_tree(rng, x, y, big=True))


def carport_over(driveway: Rect) -> Rect:
    """A carport roof (about 2.7 × 5 m) over the inner end of a driveway."""
    length = min(2 * driveway.hw, 5.2)
    return driveway.sub(-driveway.hl - 0.1, driveway.hl + 0.1, driveway.hw - length,
                        driveway.hw)


def _back_garden(rng: np.random.Generator, lot: Rect, building: Building
                 ) -> tuple[Rect, int] | None:
    """A lawn, vegetable patch or gravel strip behind the house, when there is room."""
    coords = np.asarray(building.footprint().exterior.coords)
    px, py = lot.perp
    back = float(((coords[:, 0] - lot.cx) * px + (coords[:, 1] - lot.cy) * py).max())
    b0, b1 = back + float(rng.uniform(0.6, 1.2)), lot.hw - 0.4
    if b1 - b0 < 2.0 or rng.random() < 0.35:
        return None
    material = int(rng.choice([LAWN, BARE, WEEDS, GRAVEL], p=[0.45, 0.2, 0.2, 0.15]))
    return lot.sub(-lot.hl + 0.4, lot.hl - 0.4, b0, b1), material


def _street_trees(rng: np.random.Generator, layout: Layout, epoch: Epoch) -> None:
    """Rows of street trees (街路樹) on the sidewalks of main roads."""
    from shapely.geometry import Point

    for road in layout.roads:
        if not road.main or rng.random() < 0.3:
            continue
        r = road.rect
        spacing = float(rng.uniform(8, 12))
        for side in (-1, 1):
            b = side * (r.hw - 1.1)
            for a in np.arange(-r.hl + float(rng.uniform(0, spacing)), r.hl, spacing):
                x, y = r.point(float(a), b)
                if rng.random() < 0.8 and any(s.contains(Point(x, y).buffer(1.0))
                                              for s in layout.sidewalks):
                    epoch.trees.append(Tree(x, y, float(rng.uniform(1.4, 2.4)),
                                            float(rng.uniform(4, 7)), tree_colour(rng)))


def _garden_trees(rng: np.random.Generator, epoch: Epoch, lot: Rect, footprint: object) -> None:
    """A few trees and shrubs in a house's garden, away from the house."""
    from shapely.geometry import Point

    n = int(rng.choice([0, 1, 2, 3, 4], p=[0.3, 0.3, 0.2, 0.12, 0.08]))
    for _ in range(n):
        for _try in range(4):
            a = float(rng.uniform(-lot.hl + 1.0, lot.hl - 1.0))
            b = float(rng.uniform(-lot.hw + 1.0, lot.hw - 1.0))
            x, y = lot.point(a, b)
            tree = random_tree(rng, x, y)
            if not Point(x, y).buffer(tree.radius * 0.6).intersects(footprint):  # type: ignore[arg-type]
                epoch.trees.append(tree)
                break


def place_cars(rng: np.random.Generator, layout: Layout, epoch: Epoch, uses: dict[int, str],
               driveways: dict[int, Rect], density: float = 1.0) -> None:
    """Cars parked in stalls and driveways and driving on the roads (differ per flight)."""
    for index, use in uses.items():
        parcel = layout.parcels[index]
        if use == "parking" and epoch.parcel_material.get(index) == PARKING:
            for rect in parking_stalls(parcel):
                if rng.random() < 0.55 * density:
                    ang = rect.angle + (0.0 if rng.random() < 0.5 else math.pi)
                    epoch.cars.append(random_car(rng, rect.cx, rect.cy, ang + rng.normal(0, 0.03)))
        elif index in driveways and use == "house" and rng.random() < 0.6 * density:
            d = driveways[index]
            ang = d.angle + math.pi / 2
            epoch.cars.append(random_car(rng, d.cx, d.cy, ang + rng.normal(0, 0.04)))
    for road in layout.roads:
        r = road.rect
        n = int(rng.poisson(2 * r.hl / (45.0 if road.main else 140.0) * density))
        for _ in range(n):
            a = float(rng.uniform(-r.hl, r.hl))
            lane = (r.hw * 0.45) if road.main else 0.0
            side = 1.0 if rng.random() < 0.5 else -1.0
            x, y = r.point(a, side * lane)
            epoch.cars.append(random_car(rng, x, y, r.angle + (0 if side > 0 else math.pi)))


def parking_stalls(parcel: Parcel) -> list[Rect]:
    """Stalls 2.5 × 5 m along the front and back of a parking parcel (axis = car direction)."""
    lot = parcel.rect
    stalls: list[Rect] = []
    n = int((2 * lot.hl - 1.0) // 2.5)
    if n < 1:
        return stalls
    start = -n * 2.5 / 2
    rows = [(-lot.hw + 0.5, -lot.hw + 5.5)]
    if 2 * lot.hw >= 16.5:
        rows.append((lot.hw - 5.5, lot.hw - 0.5))
    for b0, b1 in rows:
        for k in range(n):
            a0 = start + 2.5 * k
            s = lot.sub(a0, a0 + 2.5, b0, b1)
            stalls.append(Rect(s.cx, s.cy, s.hw, s.hl, lot.angle + math.pi / 2))
    return stalls
