"""Chip folders (``A/``, ``B/``, ``label/``) scored like flights, through detect's engine.

The layout of LEVIR-CD, WHU-CD and open-cd: before chips in ``A/``, after chips in ``B/`` and
change labels in ``label/``, matched by file stem (PNG, JPEG or TIFF). A label is untyped: a
pixel is change (>= 128, or 1 in a 0/1 mask) or not; every change counts as a *new* building
(almost all of LEVIR-CD's are), so only the ``new`` channel is scored and tuned, and the
``demolished`` channel, which such labels cannot judge, is left out.

Each chip pair runs exactly as ``idou detect`` runs a flight pair
(:func:`idou.training.evaluate.predict_pair`: preflight, resampling to the model's GSD, tiling,
blending); chips without georeferencing are first wrapped in GeoTIFFs at ``gsd`` metres per
pixel (in ``crs``, any projected CRS; EPSG:6677 by default). True objects are the 8-connected
components of the label, as polygons, so the object and pixel rules of
:mod:`idou.geo.scoring.metrics` apply unchanged. Nothing here imports torch or mlflow.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import shapes
from scipy import ndimage

from idou.errors import InvalidOption, UnreadableInput, UserInputError
from idou.geo.raster.grid import Grid
from idou.geo.scoring import metrics
from idou.training.evaluate import Evaluation, ScenePrediction, score_predictions

CHIP_FOLDERS = ("A", "B", "label")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
LABELLED_CHANNELS = ("new",)  # what an untyped change label can score
DEFAULT_CRS = "EPSG:6677"


@dataclass(frozen=True)
class Chip:
    """One before/after chip pair with its change label."""

    name: str
    before: Path
    after: Path
    label: Path


def is_chip_folder(folder: str | Path) -> bool:
    """Whether ``folder`` is laid out as a chip folder (it has any of A/, B/, label/)."""
    root = Path(folder).expanduser()
    return root.is_dir() and any((root / name).is_dir() for name in CHIP_FOLDERS)


def _images(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")}


def find_chips(folder: str | Path) -> list[Chip]:
    """The chip pairs of a chip folder, by stem; a broken layout is a :class:`UserInputError`."""
    root = Path(folder).expanduser()
    missing = [name for name in CHIP_FOLDERS if not (root / name).is_dir()]
    if missing:
        raise UserInputError(
            f"{root} is not a chip folder: {', '.join(m + '/' for m in missing)} missing; a chip "
            "folder holds A/ (before), B/ (after) and label/ with the same file names in each.")
    files = {name: _images(root / name) for name in CHIP_FOLDERS}
    for name in CHIP_FOLDERS:
        if not files[name]:
            raise UserInputError(f"{root / name} holds no PNG, JPEG or TIFF chips; put the "
                                 f"{name} chips there.")
    stems = set(files["A"]) | set(files["B"]) | set(files["label"])
    for name in CHIP_FOLDERS:
        lacking = sorted(stems - set(files[name]))
        if lacking:
            shown = ", ".join(lacking[:3]) + (f" and {len(lacking) - 3} more"
                                              if len(lacking) > 3 else "")
            raise UserInputError(
                f"{root / name} lacks {shown} (found in the other folders); every chip needs "
                "the same name in A/, B/ and label/.")
    return [Chip(stem, files["A"][stem], files["B"][stem], files["label"][stem])
            for stem in sorted(stems)]


def open_chip(path: Path) -> Any:
    """``rasterio.open`` a chip (plain PNG/JPEG chips are not georeferenced: no warning)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise UnreadableInput(f"{path} is not a readable image ({exc}); replace the chip.") from exc


def _georeferenced(src: Any) -> bool:
    return src.crs is not None and src.transform != Affine.identity()


def read_change_label(path: Path) -> np.ndarray:
    """A label chip as a bool change mask: >= 128 is change (0/255 labels), or 1 in 0/1 masks."""
    with open_chip(path) as src:
        label = np.asarray(src.read(1))
    if label.size and int(label.max()) <= 1:
        return label == 1
    return label >= 128


def chip_grid(chip: Chip, gsd: float | None, crs: str | None = None) -> Grid:
    """The grid of a chip's label: its own georeferencing, or ``gsd`` m pixels in ``crs``."""
    with open_chip(chip.before) as a, open_chip(chip.label) as lab:
        if (a.height, a.width) != (lab.height, lab.width):
            raise UserInputError(f"{chip.label} is {lab.width}x{lab.height} px but "
                                 f"{chip.before} is {a.width}x{a.height}; a label must match "
                                 "its chips pixel for pixel.")
        if _georeferenced(a) and _georeferenced(lab):
            return Grid(lab.crs, lab.transform, lab.width, lab.height)
        height, width = lab.height, lab.width
    if gsd is None:
        raise UserInputError(f"{chip.before} has no georeferencing; pass --gsd with the chips' "
                             "metres per pixel (e.g. --gsd 0.5 for LEVIR-CD).")
    if not gsd > 0:
        raise InvalidOption(f"--gsd {gsd} is not a pixel size; pass metres per pixel, e.g. 0.5.")
    # the top edge at y = height x gsd: never the (flipped) identity GDAL would drop
    return Grid(CRS.from_user_input(crs or DEFAULT_CRS),
                Affine(gsd, 0.0, 0.0, 0.0, -gsd, height * gsd), width, height)


def _wrap(path: Path, grid: Grid, folder: Path, bands: int) -> Path:
    """``path`` as is when georeferenced, else a GeoTIFF copy on ``grid`` in ``folder``."""
    with open_chip(path) as src:
        if src.count < bands:
            raise UserInputError(f"{path} has {src.count} band(s) but the model reads {bands}; "
                                 "use colour chips.")
        if _georeferenced(src):
            return path
        if (src.height, src.width) != (grid.height, grid.width):
            raise UserInputError(f"{path} is {src.width}x{src.height} px but its label is "
                                 f"{grid.width}x{grid.height}; the chips of a pair must match.")
        data = src.read()
        profile = {"driver": "GTiff", "width": src.width, "height": src.height,
                   "count": src.count, "dtype": data.dtype, "crs": grid.crs,
                   "transform": grid.transform}
    out = folder / f"{path.parent.name}_{path.stem}.tif"
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
    return out


def truth_objects(mask: np.ndarray, grid: Grid, channel: str = "new") -> gpd.GeoDataFrame:
    """The 8-connected objects of a change mask as polygons on ``grid`` (one row each)."""
    labels, n = ndimage.label(mask, structure=metrics.EIGHT_CONNECTED)
    parts: dict[int, list[Any]] = {}
    if n:
        for geom, value in shapes(labels.astype(np.int32), mask=labels > 0, connectivity=8,
                                  transform=grid.transform):
            parts.setdefault(int(value), []).append(shapely.geometry.shape(geom))
    geoms = [shapely.union_all(parts[k]) for k in sorted(parts)]
    return gpd.GeoDataFrame({"channel": [channel] * len(geoms)}, geometry=geoms, crs=grid.crs)


def predict_chips(loaded: Any, session: Any, chips: list[Chip], *, gsd: float | None,
                  crs: str | None = None, batch_size: int = 4) -> Iterator[ScenePrediction]:
    """The model's prediction on each chip pair, through detect's engine (one pair at a time)."""
    from idou.training.evaluate import predict_pair

    bands = len(loaded.contract.band_order)
    with tempfile.TemporaryDirectory(prefix="idou-chips-") as tmp:
        for chip in chips:
            grid = chip_grid(chip, gsd, crs)
            before = _wrap(chip.before, grid, Path(tmp), bands)
            after = _wrap(chip.after, grid, Path(tmp), bands)
            truth = truth_objects(read_change_label(chip.label), grid)
            yield predict_pair(loaded, session, before, after, truth, name=chip.name,
                               crs=grid.crs.to_string(), batch_size=batch_size)
            for path in (before, after):
                if path.parent == Path(tmp):
                    path.unlink()


def mask_prediction(chip: Chip, mask: np.ndarray, *, gsd: float | None,
                    crs: str | None = None) -> ScenePrediction:
    """A fixed change mask (a peer's output, or all-changed) as a prediction on the chip's grid.

    The mask goes into the ``new`` channel as probability 1 (0 elsewhere); scored at any
    threshold in (0, 1] it is the mask itself.
    """
    grid = chip_grid(chip, gsd, crs)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (grid.height, grid.width):
        raise UserInputError(f"the mask for {chip.name} is {mask.shape[1]}x{mask.shape[0]} px, "
                             f"its chips {grid.width}x{grid.height}; pass masks of the same size.")
    probs = np.zeros((2, grid.height, grid.width), dtype=np.uint8)
    probs[0][mask] = 255
    return ScenePrediction(name=chip.name, grid=grid, probs=probs,
                           valid=np.ones(mask.shape, dtype=bool),
                           truth=truth_objects(read_change_label(chip.label), grid))


def evaluate_chip_folder(spec: str, folder: str | Path, *, gsd: float | None,
                         thresholds: dict[str, float] | None = None,
                         min_area_m2: float = metrics.DEFAULT_MIN_AREA_M2,
                         cover: float = metrics.DEFAULT_COVER, device: str = "cpu",
                         crs: str | None = None, batch_size: int = 4) -> Evaluation:
    """Scores of a model on a chip folder at its own thresholds (or ``thresholds``).

    Only the channels an untyped label can judge (:data:`LABELLED_CHANNELS`) are scored.
    """
    from idou.training.evaluate import load_model

    chips = find_chips(folder)
    chip_grid(chips[0], gsd, crs)  # refuse missing --gsd before loading the model
    loaded, session = load_model(spec, device=device)
    if thresholds is None:
        thresholds = dict(zip(metrics.CHANNELS, loaded.contract.thresholds, strict=True))
    return score_predictions(
        predict_chips(loaded, session, chips, gsd=gsd, crs=crs, batch_size=batch_size),
        thresholds, min_area_m2=min_area_m2, cover=cover, source=spec,
        channels=LABELLED_CHANNELS)
