"""Change chips from a georeferenced orthophoto pair and the building footprints of each date.

Every city keeps its building map (家屋現況図) for each survey year; the change labels follow from
two of them: new = after − before, demolished = before − after. Footprints are matched between
the dates (by ``building_id`` when the map keeps its ids, else by overlap): a building that
appeared is new over its whole footprint, one that vanished is demolished over its whole
footprint, so a rebuilt house (建替) counts as both even where it overlaps its predecessor. New
area of a matched building (or, unmatched, new area touching an old footprint) is an extension
(増築): it stays in the *new* channel and is also reported in ``extension``.

A band ``edge_px`` pixels either side of every footprint edge is ignored (255): footprints and
photos never line up to the pixel. Change pieces smaller than ``min_area_px`` (redrawn outlines,
slivers) are ignored too rather than taught as change.

The orthophotos are read window by window with rasterio (through a ``WarpedVRT`` onto one common
grid at the model's GSD, bilinear, as ``idou.geo.raster.align`` reads them at inference); nothing
reads a whole orthophoto.

Dataset item contract (every idou training dataset yields this dict):

- ``before``, ``after``: uint8 ``H×W×3`` (RGB, the model's band order);
- ``target``: uint8 ``2×H×W``, channel 0 = new, 1 = demolished; 0/1, 255 = ignore;
- optional ``buildings_before``, ``buildings_after``: uint8 ``H×W`` building masks (0/1, 255 =
  ignore) for the auxiliary building head.

:mod:`idou.training.augment` and :func:`idou.training.augment.collate` act on that dict.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.enums import Resampling
from rasterio.features import rasterize
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from scipy import ndimage
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from idou.errors import FlightsDoNotOverlap, InputNotFound, InvalidOption, UnusableCRS
from idou.geo.scoring.metrics import EIGHT_CONNECTED

IGNORE = 255


@dataclass
class DerivedLabels:
    """Labels of one window derived from the two dates' footprints.

    Attributes:
        target: uint8 2×H×W (new, demolished), 0/1, 255 = ignore.
        extension: bool H×W, the part of *new* that touches an old footprint (増築).
        buildings_before: uint8 H×W footprint mask of the first date (0/1, 255 on edges).
        buildings_after: uint8 H×W footprint mask of the second date (0/1, 255 on edges).
    """

    target: np.ndarray
    extension: np.ndarray
    buildings_before: np.ndarray
    buildings_after: np.ndarray


def rasterize_footprints(geoms: Iterable[BaseGeometry], transform: Affine,
                         shape: tuple[int, int]) -> np.ndarray:
    """Bool mask of the pixels whose centre lies inside any of ``geoms``."""
    shapes = [(g, 1) for g in geoms if g is not None and not g.is_empty]
    if not shapes:
        return np.zeros(shape, dtype=bool)
    return rasterize(shapes, out_shape=shape, transform=transform, fill=0,
                     dtype="uint8").astype(bool)


def _edge_band(mask: np.ndarray, edge_px: int) -> np.ndarray:
    if edge_px <= 0 or not mask.any():
        return np.zeros_like(mask)
    grown = ndimage.binary_dilation(mask, iterations=edge_px)
    shrunk = ndimage.binary_erosion(mask, iterations=edge_px, border_value=1)
    return grown & ~shrunk


def derive_labels(before: np.ndarray, after: np.ndarray, edge_px: int = 1,
                  min_area_px: int = 0, appeared: np.ndarray | None = None,
                  vanished: np.ndarray | None = None) -> DerivedLabels:
    """Change labels from the two dates' footprint masks.

    Without ``appeared``/``vanished`` the labels are purely geometric: new = after − before,
    demolished = before − after, extension = new pieces touching a first-date footprint. With
    them (footprints matched between the dates, see :func:`match_footprints`), a building that
    appeared is new over its *whole* footprint and one that vanished is demolished over its
    whole footprint, even where a rebuilt house (建替) overlaps its predecessor; growth of a
    matched building is an extension.

    Args:
        before: bool H×W footprints of the first date.
        after: bool H×W footprints of the second date.
        edge_px: pixels either side of each footprint edge that are ignored (0 = none).
        min_area_px: change pieces with fewer pixels are ignored instead of labelled.
        appeared: bool H×W footprints of second-date buildings with no first-date match.
        vanished: bool H×W footprints of first-date buildings with no second-date match.

    Returns:
        The derived labels.
    """
    before = before.astype(bool)
    after = after.astype(bool)
    grown = after & ~before
    new = grown | (appeared.astype(bool) if appeared is not None else False)
    demolished = (before & ~after) | (vanished.astype(bool) if vanished is not None else False)
    band = _edge_band(before, edge_px) | _edge_band(after, edge_px)
    ignore_new = np.zeros_like(new)
    ignore_dem = np.zeros_like(demolished)
    if min_area_px > 0:
        for mask, ign in ((new, ignore_new), (demolished, ignore_dem)):
            lab, n = ndimage.label(mask, structure=EIGHT_CONNECTED)
            if n:
                sizes = ndimage.sum_labels(mask, lab, index=np.arange(1, n + 1))
                small = np.flatnonzero(sizes < min_area_px) + 1
                ign |= np.isin(lab, small)
        new &= ~ignore_new
        demolished &= ~ignore_dem
    if appeared is not None:
        extension = new & ~appeared.astype(bool)
    else:
        extension = np.zeros_like(new)
        if new.any() and before.any():
            lab, _ = ndimage.label(new, structure=EIGHT_CONNECTED)
            near_before = ndimage.binary_dilation(before, structure=EIGHT_CONNECTED)
            touching = np.unique(lab[near_before & new])
            extension = np.isin(lab, touching[touching > 0])
    target = np.stack([new, demolished]).astype(np.uint8)
    target[0][ignore_new] = IGNORE
    target[1][ignore_dem] = IGNORE
    target[:, band] = IGNORE
    bb = before.astype(np.uint8)
    ba = after.astype(np.uint8)
    bb[_edge_band(before, edge_px)] = IGNORE
    ba[_edge_band(after, edge_px)] = IGNORE
    return DerivedLabels(target, extension, bb, ba)


def match_footprints(before: gpd.GeoDataFrame, after: gpd.GeoDataFrame, by: str = "auto",
                     min_iou: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Which footprints appeared and which vanished between the two dates.

    Args:
        before: first-date footprints (``building_id``, ``geometry``).
        after: second-date footprints.
        by: ``"id"`` (same ``building_id`` = same building, as 家屋現況図 keep their 家屋番号),
            ``"overlap"`` (same building when IoU >= ``min_iou``), or ``"auto"``: ids when at
            least half of the first date's ids recur in the second date, else overlap.
        min_iou: IoU that makes two footprints one building in overlap matching.

    Returns:
        ``(appeared, vanished)``: bool arrays over the rows of ``after`` and ``before``.
    """
    if by == "auto":
        ids_b = set(before["building_id"]) if "building_id" in before else set()
        ids_a = set(after["building_id"]) if "building_id" in after else set()
        by = "id" if ids_b and len(ids_b & ids_a) >= 0.5 * len(ids_b) else "overlap"
    if by == "id":
        return (~after["building_id"].isin(set(before["building_id"])).to_numpy(),
                ~before["building_id"].isin(set(after["building_id"])).to_numpy())
    if by != "overlap":
        raise InvalidOption(f"unknown footprint matching {by!r}; use id, overlap or auto.")
    gb = np.asarray(before.geometry.values, dtype=object)
    ga = np.asarray(after.geometry.values, dtype=object)
    matched_b = np.zeros(len(gb), bool)
    matched_a = np.zeros(len(ga), bool)
    if len(gb) and len(ga):
        ia, ib = after.sindex.query(gb, predicate="intersects")[::-1]
        inter = shapely.area(shapely.intersection(ga[ia], gb[ib]))
        union = shapely.area(shapely.union(ga[ia], gb[ib]))
        ok = inter >= min_iou * np.maximum(union, 1e-12)
        matched_a[ia[ok]] = True
        matched_b[ib[ok]] = True
    return ~matched_a, ~matched_b


def derive_labels_from_footprints(before: Sequence[BaseGeometry],
                                  after: Sequence[BaseGeometry], transform: Affine,
                                  shape: tuple[int, int], edge_px: int = 1,
                                  min_area_px: int = 0,
                                  appeared: Sequence[bool] | None = None,
                                  vanished: Sequence[bool] | None = None) -> DerivedLabels:
    """Rasterise both dates' footprints onto a window and derive its labels.

    ``appeared``/``vanished`` flag the footprints of ``after``/``before`` that have no match in
    the other date (see :func:`match_footprints`); without them the labels are geometric.
    """
    mb = rasterize_footprints(before, transform, shape)
    ma = rasterize_footprints(after, transform, shape)
    app = van = None
    if appeared is not None and vanished is not None:
        app = rasterize_footprints([g for g, f in zip(after, appeared, strict=True) if f],
                                   transform, shape)
        van = rasterize_footprints([g for g, f in zip(before, vanished, strict=True) if f],
                                   transform, shape)
    return derive_labels(mb, ma, edge_px, min_area_px, app, van)


def _read_footprints(path: Path, crs: Any) -> gpd.GeoDataFrame:
    from idou.geo.vector.buildings import read_buildings

    return read_buildings(path, crs)


def _common_grid(a: Any, b: Any, gsd_m: float | None) -> tuple[Affine, int, int]:
    """North-up grid over the overlap of two datasets (in ``a``'s CRS) at ``gsd_m``."""
    from rasterio.warp import transform_bounds

    ab = a.bounds
    bb = transform_bounds(b.crs, a.crs, *b.bounds) if b.crs != a.crs else b.bounds
    left, bottom = max(ab.left, bb[0]), max(ab.bottom, bb[1])
    right, top = min(ab.right, bb[2]), min(ab.top, bb[3])
    if right <= left or top <= bottom:
        raise FlightsDoNotOverlap(f"{a.name} and {b.name} do not overlap; pass two flights of one "
                                  "area.")
    res = gsd_m or math.sqrt(abs(a.transform.determinant))
    width, height = int((right - left) // res), int((top - bottom) // res)
    return Affine(res, 0, left, 0, -res, top), width, height


class FootprintChipDataset:
    """Chips of an orthophoto pair with labels derived from each date's footprints.

    Args:
        before_image: first-date orthophoto (any rasterio-readable file or VRT).
        after_image: second-date orthophoto.
        before_buildings: footprints of the first date (GeoPackage, Shapefile, GeoJSON, CityGML).
        after_buildings: footprints of the second date.
        chip_size: chip side in pixels of the model grid.
        gsd_m: model GSD in metres; None keeps the first orthophoto's.
        stride: step between chips (default ``chip_size``).
        edge_px: ignore band either side of footprint edges, in model pixels.
        min_area_m2: change pieces smaller than this are ignored.
        min_valid: chips with a smaller fraction of valid pixels in both dates are skipped.
        match: footprint matching between the dates (see :func:`match_footprints`).
    """

    def __init__(self, before_image: Path, after_image: Path, before_buildings: Path,
                 after_buildings: Path, chip_size: int = 256, gsd_m: float | None = None,
                 stride: int | None = None, edge_px: int = 1, min_area_m2: float = 4.0,
                 min_valid: float = 0.5, match: str = "auto") -> None:
        self.paths = (Path(before_image), Path(after_image))
        for p in self.paths:
            if not p.exists():
                raise InputNotFound(f"{p} does not exist; check the orthophoto path.")
        self.chip_size = chip_size
        self.edge_px = edge_px
        with rasterio.open(self.paths[0]) as a, rasterio.open(self.paths[1]) as b:
            if a.crs is None or b.crs is None:
                raise UnusableCRS(f"{a.name if a.crs is None else b.name} has no CRS; "
                                  "georeference it (e.g. a .tfw/.prj) first.")
            self.crs = a.crs
            self.transform, self.width, self.height = _common_grid(a, b, gsd_m)
        self.gsd_m = float(self.transform.a)
        self.min_area_px = int(round(min_area_m2 / self.gsd_m ** 2))
        self.footprints = (_read_footprints(Path(before_buildings), self.crs),
                           _read_footprints(Path(after_buildings), self.crs))
        appeared, vanished = match_footprints(*self.footprints, by=match)
        self.flags = (vanished, appeared)
        step = stride or chip_size
        windows = [Window(c, r, chip_size, chip_size)
                   for r in range(0, max(1, self.height - chip_size + 1), step)
                   for c in range(0, max(1, self.width - chip_size + 1), step)]
        self.windows = [w for w in windows if self._valid_fraction(w) >= min_valid]
        self.has_change = [self._window_has_change(w) for w in self.windows]
        self._vrts: list[WarpedVRT] | None = None

    def _window_box(self, window: Window) -> BaseGeometry:
        left, top = self.transform @ (window.col_off, window.row_off)
        right, bottom = self.transform @ (window.col_off + window.width,
                                          window.row_off + window.height)
        return box(left, bottom, right, top)

    def _geoms(self, which: int, area: BaseGeometry) -> tuple[list[BaseGeometry], list[bool]]:
        """Footprints of date ``which`` meeting ``area`` and their unmatched flags."""
        frame = self.footprints[which]
        idx = frame.sindex.query(area, predicate="intersects")
        return list(frame.geometry.values[idx]), [bool(f) for f in self.flags[which][idx]]

    def _window_has_change(self, window: Window) -> bool:
        area = self._window_box(window)
        (gb, fb), (ga, fa) = self._geoms(0, area), self._geoms(1, area)
        min_m2 = self.min_area_px * self.gsd_m ** 2
        if any(g.intersection(area).area >= min_m2 for g, f in zip(gb + ga, fb + fa, strict=True)
               if f):
            return True
        b = shapely.union_all(gb) if gb else shapely.Polygon()
        a = shapely.union_all(ga) if ga else shapely.Polygon()
        return bool(shapely.symmetric_difference(a, b).intersection(area).area >= min_m2)

    def _open(self) -> list[WarpedVRT]:
        if self._vrts is None:
            self._vrts = []
            for p in self.paths:
                src = rasterio.open(p)
                self._vrts.append(WarpedVRT(src, crs=self.crs, transform=self.transform,
                                            width=self.width, height=self.height,
                                            resampling=Resampling.average))
        return self._vrts

    def _valid_fraction(self, window: Window) -> float:
        fractions = []
        for p in self.paths:
            with rasterio.open(p) as src, WarpedVRT(
                    src, crs=self.crs, transform=self.transform, width=self.width,
                    height=self.height) as vrt:
                m = vrt.read_masks(1, window=window, out_shape=(16, 16),
                                   resampling=Resampling.nearest)
                fractions.append(float((m > 0).mean()))
        return min(fractions)

    def __len__(self) -> int:
        return len(self.windows)

    def __getstate__(self) -> dict[str, Any]:  # dataloader workers reopen their own files
        state = dict(self.__dict__)
        state["_vrts"] = None
        return state

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        window = self.windows[index]
        images, valid = [], np.ones((window.height, window.width), dtype=bool)
        for vrt in self._open():
            data = vrt.read([1, 2, 3], window=window)
            valid &= vrt.read_masks(1, window=window) > 0
            images.append(np.ascontiguousarray(data.transpose(1, 2, 0)).astype(np.uint8))
        area = self._window_box(window)
        wt = rasterio.windows.transform(window, self.transform)
        (gb, fb), (ga, fa) = self._geoms(0, area), self._geoms(1, area)
        labels = derive_labels_from_footprints(gb, ga, wt, (window.height, window.width),
                                               self.edge_px, self.min_area_px, fa, fb)
        labels.target[:, ~valid] = IGNORE
        labels.buildings_before[~valid] = IGNORE
        labels.buildings_after[~valid] = IGNORE
        return {"before": images[0], "after": images[1], "target": labels.target,
                "buildings_before": labels.buildings_before,
                "buildings_after": labels.buildings_after}
