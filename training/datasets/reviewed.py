"""Change chips from field-survey labels harvested by ``idou harvest`` (reviewed GeoPackages).

A harvest folder holds ``labels.gpkg`` (layer ``labels``: ``channel`` new | demolished,
``label`` positive | negative | ignore, ``source`` review | missed, polygons in the flight CRS) and
``harvest.json`` (the before and after orthophotos and the CRS). Each labelled polygon (ignore
polygons excepted) centres one chip; the chip is read by windows from both orthophotos on the
common grid chosen by :func:`idou.geo.raster.preflight.preflight` (after's lattice, ``gsd_m``),
through :class:`idou.geo.raster.align.AlignedPair`, so orthophotos are never loaded whole.

Target per channel: 0 everywhere (including explicit negatives), 1 inside its positives, 255
inside its ignore polygons and wherever either flight has no data. Overlaps resolve as
ignore > positive > negative. ``extension`` counts as new; ``rebuilt`` is positive in both.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from pyproj import CRS
from rasterio.features import rasterize
from rasterio.windows import Window
from shapely.geometry import box

from idou.errors import UnreadableInput, UserInputError

IGNORE = 255
LABELS_FILE = "labels.gpkg"
LABELS_LAYER = "labels"
HARVEST_FILE = "harvest.json"
CHANNELS: dict[str, tuple[int, ...]] = {
    "new": (0,), "extension": (0,), "demolished": (1,), "rebuilt": (0, 1),
    "新築": (0,), "増築": (0,), "滅失": (1,), "建替": (0, 1),
}
LABEL_VALUES = ("positive", "negative", "ignore")
_PATH_KEYS = {
    "before": ("before", "before_path", "before_ortho", "before_orthophoto"),
    "after": ("after", "after_path", "after_ortho", "after_orthophoto"),
}


def read_harvest_manifest(folder: Path) -> tuple[str | None, str | None, str | None]:
    """(before, after, crs) from ``folder/harvest.json`` (None where it names none).

    Accepts the paths at the top level (``before``/``after``, as ``idou harvest`` writes them, or
    ``before_path`` …) or nested under ``orthophotos`` / ``flights``; values may be strings or
    ``{"path": ...}``. Relative paths resolve inside ``folder``.
    """
    manifest = folder / HARVEST_FILE
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UserInputError(
            f"{folder} has no {HARVEST_FILE}; pass the folder written by `idou harvest`.") from exc
    except json.JSONDecodeError as exc:
        raise UnreadableInput(
            f"{manifest} is not valid JSON ({exc.msg}); re-run `idou harvest`.") from exc
    places = [meta] + [meta[k] for k in ("orthophotos", "flights") if isinstance(meta.get(k), dict)]
    paths: list[str | None] = []
    for keys in _PATH_KEYS.values():
        found: str | None = None
        for place in places:
            value = next((place[k] for k in keys if place.get(k)), None)
            if isinstance(value, dict):
                value = value.get("path")
            if isinstance(value, str) and value:
                found = value if Path(value).is_absolute() or "*" in value else str(folder / value)
                break
        paths.append(found)
    crs = meta.get("crs")
    return paths[0], paths[1], str(crs) if crs else None


def read_labels(folder: Path) -> gpd.GeoDataFrame:
    """The ``labels`` layer of ``folder/labels.gpkg``, checked for the harvest columns."""
    path = folder / LABELS_FILE
    if not path.is_file():
        raise UserInputError(
            f"{folder} has no {LABELS_FILE}; pass the folder written by `idou harvest`.")
    labels = gpd.read_file(path, layer=LABELS_LAYER)
    missing = [c for c in ("channel", "label") if c not in labels.columns]
    if missing:
        raise UserInputError(
            f"{path} layer {LABELS_LAYER} lacks column(s) {', '.join(missing)}; re-run "
            "`idou harvest`.")
    labels = labels[labels.geometry.notna() & ~labels.geometry.is_empty].copy()
    labels["label"] = labels["label"].astype(str).str.strip().str.lower()
    labels["channel"] = labels["channel"].astype(str).str.strip().str.lower()
    bad_label = sorted(set(labels["label"]) - set(LABEL_VALUES))
    bad_channel = sorted(set(labels["channel"]) - set(CHANNELS))
    if bad_label or bad_channel:
        raise UserInputError(
            f"{path} has unknown label or channel values {bad_label + bad_channel}; labels are "
            "positive/negative/ignore and channels new/demolished.")
    return labels.reset_index(drop=True)


class ReviewedDataset:
    """Chips around reviewed change labels, read from the two orthophotos by windows.

    Args:
        folder: an ``idou harvest`` output folder (``labels.gpkg`` + ``harvest.json``).
        chip_size: chip side in pixels of the common grid.
        gsd_m: the grid's pixel size in metres (the model's training GSD); None keeps the after
            orthophoto's own pixel size.
        before, after: override the orthophotos named in ``harvest.json``.
        crs: CRS of orthophotos that record none (world files); defaults to harvest.json's.

    Items: ``before``/``after`` uint8 H×W×3, ``target`` uint8 2×H×W. ``has_change[i]`` is True
    when a positive polygon reaches into chip i.
    """

    def __init__(self, folder: str | Path, chip_size: int = 256, gsd_m: float | None = None,
                 before: str | None = None, after: str | None = None,
                 crs: str | None = None) -> None:
        from idou.geo.raster.preflight import preflight
        from idou.geo.raster.sources import open_source
        from idou.inference.contract import ModelContract

        self.folder = Path(folder)
        self.chip_size = chip_size
        before_path, after_path, harvest_crs = read_harvest_manifest(self.folder)
        before, after, crs = before or before_path, after or after_path, crs or harvest_crs
        for side, path in (("before", before), ("after", after)):
            if path is None:
                raise UserInputError(
                    f"{self.folder / HARVEST_FILE} names no {side} orthophoto; pass it as "
                    f"{side} = \"PATH\" in the [[train_data]] table.")
        assert before is not None and after is not None
        source_before = open_source(before, crs=crs)
        source_after = open_source(after, crs=crs)
        gsd = gsd_m if gsd_m is not None else float(np.mean(source_after.grid.res))
        self.report = preflight(source_before, source_after, ModelContract(gsd_m=gsd),
                                estimate_misregistration=False)
        self.grid = self.report.grid
        labels = read_labels(self.folder)
        grid_crs = CRS.from_wkt(self.grid.crs.to_wkt())
        if labels.crs is None:
            labels = labels.set_crs(grid_crs)
        elif not labels.crs.equals(grid_crs):
            labels = labels.to_crs(grid_crs)
        self.labels = labels
        self._tree = shapely.STRtree(labels.geometry.values)
        # One chip per positive/negative polygon inside the area both flights cover.
        inside = labels.geometry.intersects(self.grid.footprint())
        centres = labels[(labels["label"] != "ignore") & inside]
        self.windows = [self._window_around(g) for g in centres.geometry.values]
        pixel_area = self.grid.res[0] * self.grid.res[1]
        positives = set(np.flatnonzero((labels["label"] == "positive").to_numpy()))
        self.has_change: list[bool] = []
        for window in self.windows:
            chip = box(*self.grid.window_bounds(window))
            hits = self._tree.query(chip, predicate="intersects")
            self.has_change.append(any(
                i in positives and labels.geometry.values[i].intersection(chip).area
                >= 0.5 * pixel_area for i in hits))
        self._pair: Any = None
        self._pid = -1

    def _window_around(self, geometry: Any) -> Window:
        x, y = shapely.get_coordinates(geometry.representative_point())[0]
        col, row = ~self.grid.transform @ (x, y)
        half = self.chip_size / 2
        width, height = self.grid.width, self.grid.height
        col0 = min(max(math.floor(col - half), 0), max(width - self.chip_size, 0))
        row0 = min(max(math.floor(row - half), 0), max(height - self.chip_size, 0))
        return Window(col0, row0, self.chip_size, self.chip_size)

    def _reader(self) -> Any:
        """The AlignedPair of this process (re-opened after a DataLoader worker fork)."""
        if self._pair is None or self._pid != os.getpid():
            from idou.geo.raster.align import AlignedPair

            self._pair = AlignedPair(self.report)
            self._pid = os.getpid()
        return self._pair

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        window = self.windows[index]
        before, after, valid = self._reader().read(window)
        target = self.rasterize_target(window)
        target[:, ~valid] = IGNORE
        return {"before": np.ascontiguousarray(before[:3].transpose(1, 2, 0)),
                "after": np.ascontiguousarray(after[:3].transpose(1, 2, 0)),
                "target": target}

    def rasterize_target(self, window: Window) -> np.ndarray:
        """The 2×H×W target of the labels inside ``window`` (before the nodata mask)."""
        height, width = int(window.height), int(window.width)
        target = np.zeros((2, height, width), np.uint8)
        chip = box(*self.grid.window_bounds(window))
        hits = self._tree.query(chip, predicate="intersects")
        if len(hits) == 0:
            return target
        transform = self.grid.window_transform(window)
        near = self.labels.iloc[np.sort(hits)]
        for value, burn in (("positive", 1), ("ignore", IGNORE)):
            for channel in (0, 1):
                rows = near[(near["label"] == value)
                            & near["channel"].map(lambda c, ch=channel: ch in CHANNELS[c])]
                if len(rows):
                    rasterize(((g, burn) for g in rows.geometry.values), out=target[channel],
                              transform=transform)
        return target

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pair"] = None  # open datasets do not cross process boundaries
        state["_pid"] = -1
        del state["_tree"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._tree = shapely.STRtree(self.labels.geometry.values)
