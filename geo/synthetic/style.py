"""Styles of generated flights: another roof palette, season and vegetation than the default.

A style recolours a generated scene after every random draw of the default generator is made,
with its own random stream (seeded by the scene seed and the style's name), so the layout,
buildings, changes and truth of a seed are the same in every style and the default style
(``None``) leaves the generator's output byte for byte as it was.

``autumn``: a late-autumn town elsewhere in Japan: glazed orange-brown and green-blue roofs
instead of grey 瓦 and blue metal, straw-coloured grass and bare fields, red and yellow
foliage, a low sun (long shadows). It is what a model trained only on the default scenes has
never seen, the stand-in for a city's own photographs in the fine-tuning recipe.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace

import numpy as np

from idou.geo.synthetic import scene as sc
from idou.geo.synthetic.scene import Epoch, Sun

Colour = tuple[float, float, float]


@dataclass(frozen=True)
class Style:
    """How a style recolours a scene.

    Attributes:
        name: the style's name (``idou samples make --style NAME``).
        roofs: roof colours per material; each building draws one from its own id.
        foliage: leaf colours trees are redrawn from.
        ground: material index → albedo replacing the default's (others keep theirs).
        lawn_tone: grass tone of both flights (-1 dry/brown .. +1 lush).
        sun_elevation: (low, high) sun elevation in degrees of both flights.
    """

    name: str
    roofs: dict[str, tuple[Colour, ...]]
    foliage: tuple[Colour, ...]
    ground: dict[int, Colour]
    lawn_tone: float
    sun_elevation: tuple[float, float]


STYLES: dict[str, Style] = {
    "autumn": Style(
        name="autumn",
        roofs={
            "kawara": ((150, 78, 46), (128, 70, 48), (96, 108, 120), (162, 96, 58)),
            "metal": ((46, 110, 104), (168, 150, 60), (58, 58, 62), (190, 188, 176)),
            "slate": ((170, 132, 92), (92, 60, 56), (196, 170, 130)),
            "flat": ((198, 186, 160), (130, 126, 118), (206, 200, 186)),
        },
        foliage=((150, 62, 34), (176, 120, 40), (120, 96, 44), (92, 70, 42), (70, 78, 40)),
        ground={sc.BACKGROUND: (150, 136, 96), sc.LAWN: (146, 134, 88),
                sc.WEEDS: (156, 138, 92), sc.CROP: (132, 110, 80), sc.PADDY: (164, 146, 98),
                sc.FOREST: (104, 70, 40), sc.HEDGE: (78, 84, 44), sc.ROAD: (120, 118, 112),
                sc.PARKING: (110, 108, 104)},
        lawn_tone=-1.0,
        sun_elevation=(28.0, 36.0),
    ),
}


def style_names() -> list[str]:
    """The styles ``make_flight_pair`` knows, besides the default (``None``)."""
    return sorted(STYLES)


def get_style(name: str) -> Style:
    """The style called ``name``.

    Raises:
        ValueError: no such style.
    """
    if name not in STYLES:
        raise ValueError(f"unknown style {name!r}; use one of {', '.join(style_names())}")
    return STYLES[name]


def _pick(colours: tuple[Colour, ...], key: str, jitter: float = 0.08) -> Colour:
    """A colour of ``colours`` and a brightness jitter, both fixed by ``key``."""
    h = zlib.crc32(key.encode())
    base = colours[h % len(colours)]
    f = 1.0 + jitter * (((h >> 8) % 1000) / 500.0 - 1.0)
    return (base[0] * f, base[1] * f, base[2] * f)


def ground_albedo(style: Style, default: np.ndarray) -> np.ndarray:
    """The ground albedo table of ``style`` (a copy of ``default`` with its materials)."""
    table = default.copy()
    for material, colour in style.ground.items():
        table[material] = colour
    return table


def apply_style(style: Style, seed: int, epochs: list[Epoch], default_ground: np.ndarray
                ) -> None:
    """Recolour the epochs of one scene in place (roofs, trees, ground, season, sun).

    A building keeps its style colour across the flights unless its default colour changed
    (a repainted or rebuilt roof), so what changed in the default scene changes here too.
    """
    rng = np.random.default_rng([seed, zlib.crc32(style.name.encode())])
    table = ground_albedo(style, default_ground)
    recoloured: dict[int, Colour] = {}  # a building object may stand in both flights
    for epoch in epochs:
        for b in epoch.buildings:
            if id(b) not in recoloured:
                roofs = style.roofs.get(b.material, style.roofs["flat"])
                recoloured[id(b)] = _pick(roofs, f"{b.building_id}:{b.material}:{b.albedo}")
    for k, epoch in enumerate(epochs):
        for b in epoch.buildings:
            b.albedo = recoloured[id(b)]
        epoch.trees = [replace(t, albedo=_pick(style.foliage, f"{t.x:.2f},{t.y:.2f}", 0.12))
                       for t in epoch.trees]
        epoch.ground_albedo = table
        epoch.lawn_tone = style.lawn_tone
        lo, hi = style.sun_elevation
        epoch.sun = Sun(epoch.sun.azimuth, float(rng.uniform(lo, hi)) - 2.0 * k)


__all__ = ["STYLES", "Style", "apply_style", "get_style", "ground_albedo",
           "style_names"]
