"""A city's own orthophotos and building maps (家屋現況図) as fine-tuning data (``idou finetune``).

:func:`prepare_city` turns what every city holds into a ready training run:

- a **held-back strip** of the flights (``holdout_fraction`` of the common extent on one
  ``side``) that training never sees: ``OUT/holdout/`` is a validation scene (``before.tif``,
  ``after.tif`` at the model's GSD and ``truth.gpkg`` from the difference of the two maps) for
  ``idou evaluate`` and ``idou tune``, so recall and precision before and after fine-tuning,
  and the thresholds, come from the city's own photographs;
- **single-date tiles** of the before flight with its map rasterised as the building mask
  (``OUT/train/tiles/images/0/C/R.png`` and ``labels/…``, the slippy-map layout the
  ``single_date`` dataset reads), from the rest of the flight;
- where the city keeps an earlier flight and its map, that **past pair** cut to the same
  training part (``OUT/train/past_before.tif``, ``past_after.tif``), trained on through the
  ``footprints`` dataset with labels from the map differences;
- ``OUT/city-finetune.toml``: an ``idou train`` config that starts from a given checkpoint's
  network weights (``[model] init_checkpoint``) and keeps that checkpoint's architecture and
  contract. It has no ``[[val_data]]``: no checkpoint is picked on the held-back strip, the
  last epoch is the result (``best.ckpt`` = the last epoch).

A gap of ``gap_m`` metres between the training part and the held-back strip keeps a building on
the border out of both. Rasters are read and written in blocks of rows (never a whole flight).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from affine import Affine
from PIL import Image
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from shapely.geometry import box

from idou.errors import (
    FlightsDoNotOverlap,
    InputNotFound,
    InvalidOption,
    OutputConflict,
    UnreadableInput,
    UnusableCRS,
    UserInputError,
)
from idou.geo.vector.buildings import read_buildings
from idou.training.datasets.footprints import match_footprints, rasterize_footprints

SIDES = ("east", "west", "north", "south")
CONFIG_NAME = "city-finetune.toml"
Bounds = tuple[float, float, float, float]


@dataclass
class CityPrepared:
    """What :func:`prepare_city` wrote."""

    out_dir: Path
    config: Path
    holdout: Path | None
    tiles: int
    train_bounds: Bounds
    holdout_bounds: Bounds
    truth_counts: dict[str, int]


def split_bounds(bounds: Bounds, fraction: float, side: str, gap_m: float
                 ) -> tuple[Bounds, Bounds]:
    """``(train, holdout)``: the held-back strip on ``side`` and the rest, ``gap_m`` apart."""
    if not 0 < fraction < 1:
        raise InvalidOption(f"--holdout {fraction} is not between 0 and 1; pass e.g. 0.3.")
    if side not in SIDES:
        raise InvalidOption(f"--side {side} is not a side; pass one of {', '.join(SIDES)}.")
    left, bottom, right, top = bounds
    across = side in ("east", "west")  # the strip spans x (east/west) or y (north/south)
    low, high = (left, right) if across else (bottom, top)
    far = side in ("east", "north")    # the strip lies at the high end of that axis
    cut = high - fraction * (high - low) if far else low + fraction * (high - low)
    below, above = (low, cut - gap_m / 2), (cut + gap_m / 2, high)
    train, holdout = (below, above) if far else (above, below)

    def strip(span: tuple[float, float]) -> Bounds:
        return (span[0], bottom, span[1], top) if across else (left, span[0], right, span[1])

    return strip(train), strip(holdout)


def _open_checked(path: Path) -> Any:
    if not path.is_file():
        raise InputNotFound(f"{path} does not exist; check the orthophoto path.")
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise UnreadableInput(f"{path} is not a readable raster ({exc}); pass a GeoTIFF.") from exc
    if src.crs is None:
        src.close()
        raise UnusableCRS(f"{path} has no CRS; georeference it (e.g. a .tfw and .prj) first.")
    if src.count < 3:
        src.close()
        raise UserInputError(f"{path} has {src.count} band(s); pass an RGB orthophoto.")
    return src


def _bounds_in(src: Any, crs: Any) -> Bounds:
    from rasterio.warp import transform_bounds

    b = src.bounds
    return tuple(transform_bounds(src.crs, crs, *b)) if src.crs != crs else tuple(b)  # type: ignore[return-value]


def write_region(src_path: Path, dst: Path, bounds: Bounds, gsd_m: float, crs: Any,
                 block_rows: int = 1024) -> Window:
    """Write ``bounds`` of an orthophoto at ``gsd_m`` (pixel means) as a tiled GeoTIFF.

    Returns:
        The written raster's full window (its size).
    """
    left, bottom, right, top = bounds
    width, height = int((right - left) // gsd_m), int((top - bottom) // gsd_m)
    if width < 1 or height < 1:
        raise UserInputError(f"the part of {src_path.name} to cut is empty; pass a smaller "
                             "--holdout or larger flights.")
    transform = Affine(gsd_m, 0, left, 0, -gsd_m, top)
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 3,
               "dtype": "uint8", "crs": crs, "transform": transform, "tiled": True,
               "blockxsize": 256, "blockysize": 256, "compress": "deflate",
               "interleave": "pixel"}
    dst.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(src_path) as src, WarpedVRT(
            src, crs=crs, transform=transform, width=width, height=height,
            resampling=Resampling.average) as vrt, rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), \
            rasterio.open(dst, "w", **profile) as out:
        for row in range(0, height, block_rows):
            win = Window(0, row, width, min(block_rows, height - row))
            out.write(vrt.read([1, 2, 3], window=win), window=win)
            out.write_mask(vrt.read_masks(1, window=win), window=win)
    return Window(0, 0, width, height)


def write_tiles(flight: Path, buildings: gpd.GeoDataFrame, out: Path, tile_px: int,
                min_valid: float = 0.9) -> int:
    """Cut a (model-GSD) flight into ``images/0/C/R.png`` and ``labels/0/C/R.png`` tiles.

    Labels are the map's footprints rasterised (255 building, 0 not); tiles with less than
    ``min_valid`` of valid pixels are skipped. Returns the number of tiles written.
    """
    count = 0
    with rasterio.open(flight) as src:
        for row in range(0, src.height - tile_px + 1, tile_px):
            for col in range(0, src.width - tile_px + 1, tile_px):
                win = Window(col, row, tile_px, tile_px)
                if (src.read_masks(1, window=win) > 0).mean() < min_valid:
                    continue
                rgb = src.read([1, 2, 3], window=win).transpose(1, 2, 0)
                tr = rasterio.windows.transform(win, src.transform)
                left, top = tr @ (0, 0)
                right, bottom = tr @ (tile_px, tile_px)
                idx = buildings.sindex.query(box(left, bottom, right, top),
                                             predicate="intersects")
                mask = rasterize_footprints(buildings.geometry.values[idx], tr,
                                            (tile_px, tile_px))
                key = Path("0") / str(col // tile_px) / f"{row // tile_px}.png"
                for folder, array in (("images", rgb), ("labels", mask.astype(np.uint8) * 255)):
                    path = out / folder / key
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(np.ascontiguousarray(array)).save(path)
                count += 1
    return count


def truth_from_maps(before: gpd.GeoDataFrame, after: gpd.GeoDataFrame, area: Bounds,
                    min_area_m2: float = 4.0, match: str = "auto") -> gpd.GeoDataFrame:
    """The change truth of two maps inside ``area`` (the rules of the ``footprints`` dataset).

    A building of the second map with no match in the first is ``new``, one of the first with
    no match in the second ``demolished`` (whole footprints); growth of a matched building of
    at least ``min_area_m2`` is an ``extension`` (channel new).
    """
    appeared, vanished = match_footprints(before, after, by=match)
    region = box(*area)
    rows: list[tuple[str, str, Any]] = []
    for geom in after.geometry.values[appeared]:
        rows.append(("new", "new", geom))
    for geom in before.geometry.values[vanished]:
        rows.append(("demolished", "demolished", geom))
    kept_after = after.geometry.values[~appeared]
    if len(kept_after) and len(before):
        old = shapely.union_all(before.geometry.values)
        grown = shapely.difference(shapely.union_all(kept_after), old)
        for piece in getattr(grown, "geoms", [grown]):
            if not piece.is_empty and piece.area >= min_area_m2:
                rows.append(("new", "extension", piece))
    clipped = [(c, t, g.intersection(region)) for c, t, g in rows if g.intersects(region)]
    clipped = [(c, t, g) for c, t, g in clipped if g.area >= min_area_m2]
    return gpd.GeoDataFrame(
        {"change_id": [f"C{i + 1:05d}" for i in range(len(clipped))],
         "change_type": [t for _, t, _ in clipped], "channel": [c for c, _, _ in clipped]},
        geometry=[g for _, _, g in clipped], crs=before.crs)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def _table(name: str, values: dict[str, Any], array: bool = False) -> str:
    head = f"[[{name}]]" if array else f"[{name}]"
    return "\n".join([head] + [f"{k} = {_toml_value(v)}" for k, v in values.items()
                               if v is not None]) + "\n"


def city_config(*, checkpoint: dict[str, Any], checkpoint_path: Path, out_dir: Path,
                tiles: Path, past: dict[str, str] | None, name: str, epochs: int,
                chips_per_epoch: int, max_minutes: float, lr: float, threads: int,
                chip_px: int, describe: str) -> str:
    """The text of the fine-tuning config (architecture and contract from the checkpoint)."""
    start = checkpoint.get("config") or {}
    model = dict(start.get("model") or checkpoint["network"])
    model.update({"init_weights": None, "init_checkpoint": str(checkpoint_path.resolve())})
    contract = dict(start.get("contract") or {})
    contract.pop("thresholds", None)
    contract.update({"model_name": name, "model_version": "city.1",
                     "training_data": describe})
    parts = [
        "# Fine-tuning on a city's own flights and building maps, written by\n"
        "# `idou finetune prepare`; run: idou train " + str(out_dir / CONFIG_NAME) + "\n"
        "# The held-back strip OUT/holdout/ is never trained on: report and tune there.\n",
        f"name = {_toml_value(name)}\nseed = 0\n"
        f"run_dir = {_toml_value(str((out_dir / 'run').resolve()))}\n"
        f"experiment = \"idou-city-finetune\"\n",
        _table("model", model),
        _table("train_data", {"kind": "single_date", "root": str(tiles.resolve()),
                              "pairs_per_tile": 8, "seed": 0}, array=True),
    ]
    if past is not None:
        parts.append(_table("train_data", {"kind": "footprints", **past, "chip_size": chip_px,
                                           "stride": chip_px // 2}, array=True))
    parts += [
        _table("train", {"epochs": epochs, "batch_size": 16, "chips_per_epoch": chips_per_epoch,
                         "lr": lr, "change_fraction": 0.7, "patience": epochs,
                         "min_epochs": epochs, "max_minutes": max_minutes, "threads": threads,
                         "pos_weight": 5.0, "sample_images": 0, "export_onnx": True}),
        _table("augment", {"enabled": True}),
        _table("contract", contract),
    ]
    return "\n".join(parts)


# over 60 lines only by its docstring (14 arguments); the body is the checks, then _prepare
def prepare_city(out_dir: Path, *, before: Path, before_map: Path, checkpoint: Path,
                 past_before: Path | None = None, past_before_map: Path | None = None,
                 holdout_fraction: float = 0.3, side: str = "east", gap_m: float = 10.0,
                 tile_px: int | None = None, epochs: int = 6, chips_per_epoch: int = 1024,
                 max_minutes: float = 15.0, lr: float = 1e-3, threads: int = 0,
                 name: str = "city-finetune") -> CityPrepared:
    """Split a city's flights, cut its training data and write the fine-tuning config.

    Args:
        out_dir: where everything goes (created; must not hold a previous preparation).
        before: the city's most recent flight that has a building map (the before flight of the
            pair to survey).
        before_map: that flight's building map (家屋現況図: GeoPackage, Shapefile, CityGML).
        checkpoint: the ``idou train`` checkpoint to start from (its architecture, GSD, tile
            size and normalisation are kept).
        past_before: an earlier flight with its own map; with ``before`` it is a past pair
            whose map difference gives change labels and the held-back truth.
        past_before_map: the earlier flight's map.
        holdout_fraction: share of the common extent held back.
        side: where the held-back strip lies.
        gap_m: metres between the training part and the strip, used by neither.
        tile_px: side of the single-date tiles and chips in model pixels (default: half the
            model's tile size).
        epochs, chips_per_epoch, max_minutes, lr, threads: the ``[train]`` of the config.
        name: model name in the config and contract.

    Raises:
        UserInputError: a missing or unreadable input, a bad split, or a non-empty ``out_dir``.
    """
    from idou.training.checkpoints import load_checkpoint

    if (past_before is None) != (past_before_map is None):
        raise InvalidOption("--past-before and --past-before-map go together; pass both "
                            "(an earlier flight and its building map) or neither.")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise OutputConflict(f"{out_dir} is not empty; pass a new folder as OUT_DIR.")
    ckpt = load_checkpoint(Path(checkpoint))
    contract = (ckpt.get("config") or {}).get("contract") or {}
    gsd = float(contract.get("gsd_m", 0.4))
    chip = int(tile_px or max(64, int(contract.get("tile_size", 256)) // 2))
    for path in (before_map, past_before_map):
        if path is not None and not Path(path).is_file():
            raise InputNotFound(f"{path} does not exist; pass the building map (GeoPackage, "
                                "Shapefile or CityGML).")
    crs, common = _common_extent(Path(before), past_before)
    train_b, hold_b = _split_checked(common, holdout_fraction, side, gap_m, chip * gsd, chip)
    # everything is written into a hidden folder beside OUT_DIR, renamed when complete
    final, out_dir = out_dir, out_dir.parent / f".{out_dir.name}.idou-prepare"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    try:
        result = _prepare(out_dir, final, before=Path(before), before_map=Path(before_map),
                          checkpoint=Path(checkpoint), ckpt=ckpt, crs=crs, gsd=gsd, chip=chip,
                          past_before=past_before, past_before_map=past_before_map,
                          train_b=train_b, hold_b=hold_b, holdout_fraction=holdout_fraction,
                          side=side, gap_m=gap_m, epochs=epochs,
                          chips_per_epoch=chips_per_epoch, max_minutes=max_minutes, lr=lr,
                          threads=threads, name=name)
        if final.exists():
            final.rmdir()
        out_dir.rename(final)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    return result


def _common_extent(before: Path, past_before: Path | None) -> tuple[Any, Bounds]:
    """``before``'s CRS and the extent it shares with ``past_before`` (its own without one)."""
    src = _open_checked(before)
    crs = src.crs
    common = _bounds_in(src, crs)
    src.close()
    if past_before is not None:
        with _open_checked(Path(past_before)) as past:
            pb = _bounds_in(past, crs)
        common = (max(common[0], pb[0]), max(common[1], pb[1]), min(common[2], pb[2]),
                  min(common[3], pb[3]))
        if common[2] <= common[0] or common[3] <= common[1]:
            raise FlightsDoNotOverlap(f"{past_before} and {before} do not overlap; pass an earlier "
                                      "flight of the same area.")
    return crs, common


def _split_checked(common: Bounds, holdout_fraction: float, side: str, gap_m: float,
                   chip_m: float, chip: int) -> tuple[Bounds, Bounds]:
    """:func:`split_bounds`, refusing a part smaller than one chip (``chip_m`` metres)."""
    train_b, hold_b = split_bounds(common, holdout_fraction, side, gap_m)
    for b in (train_b, hold_b):
        if min(b[2] - b[0], b[3] - b[1]) < chip_m:
            raise UserInputError(f"a part of the split is smaller than one {chip} px chip; "
                                 "pass a smaller --holdout or larger flights.")
    return train_b, hold_b


def _prepare(out_dir: Path, final: Path, *, before: Path, before_map: Path, checkpoint: Path,
             ckpt: dict[str, Any], crs: Any, gsd: float, chip: int, past_before: Path | None,
             past_before_map: Path | None, train_b: Bounds, hold_b: Bounds,
             holdout_fraction: float, side: str, gap_m: float, epochs: int,
             chips_per_epoch: int, max_minutes: float, lr: float, threads: int, name: str
             ) -> CityPrepared:
    """The work of :func:`prepare_city` in ``out_dir``; paths in the config name ``final``."""
    map_now = read_buildings(Path(before_map), crs)
    train = out_dir / "train"
    tiles_dir = train / "tiles"
    before_train = train / "before.tif"
    write_region(Path(before), before_train, train_b, gsd, crs)
    n_tiles = write_tiles(before_train, map_now, tiles_dir, chip)
    if n_tiles < 2:
        raise UserInputError(f"the training part of {before} gives {n_tiles} tile(s) of "
                             f"{chip} px; pass larger flights or a smaller --holdout.")
    past: dict[str, str] | None = None
    holdout: Path | None = None
    counts: dict[str, int] = {}
    if past_before is not None and past_before_map is not None:
        map_past = read_buildings(Path(past_before_map), crs)
        write_region(Path(past_before), train / "past_before.tif", train_b, gsd, crs)
        past = {"before_image": str((final / "train" / "past_before.tif").resolve()),
                "after_image": str((final / "train" / "before.tif").resolve()),
                "before_buildings": str(Path(past_before_map).resolve()),
                "after_buildings": str(Path(before_map).resolve())}
        holdout = out_dir / "holdout"
        write_region(Path(past_before), holdout / "before.tif", hold_b, gsd, crs)
        write_region(Path(before), holdout / "after.tif", hold_b, gsd, crs)
        truth = truth_from_maps(map_past, map_now, hold_b)
        truth.to_file(holdout / "truth.gpkg", layer="truth", driver="GPKG", engine="pyogrio")
        counts = {str(k): int(v) for k, v in truth["change_type"].value_counts().items()}
    describe = (f"fine-tuned from {Path(checkpoint).name} on {Path(before).name} with "
                f"{Path(before_map).name} (single-date pairs)"
                + (f" and the pair {Path(past_before).name}/{Path(before).name} (map "
                   "differences)" if past_before is not None else "")
                + f"; {holdout_fraction:.0%} {side} strip held back")
    text = city_config(checkpoint=ckpt, checkpoint_path=Path(checkpoint), out_dir=final,
                       tiles=final / "train" / "tiles", past=past, name=name, epochs=epochs,
                       chips_per_epoch=chips_per_epoch, max_minutes=max_minutes, lr=lr,
                       threads=threads, chip_px=chip, describe=describe)
    config = out_dir / CONFIG_NAME
    config.write_text(text, encoding="utf-8")
    split = {"crs": str(crs), "gsd_m": gsd, "train_bounds": train_b, "holdout_bounds": hold_b,
             "side": side, "holdout_fraction": holdout_fraction, "gap_m": gap_m,
             "tiles": n_tiles, "tile_px": chip, "holdout_truth": counts}
    (out_dir / "split.json").write_text(json.dumps(split, indent=1) + "\n", encoding="utf-8")
    return CityPrepared(final, final / CONFIG_NAME, final / "holdout" if holdout else None,
                        n_tiles, train_b, hold_b, counts)


def precision_at_recall(tune_report: dict[str, Any], channel: str, recall: float
                        ) -> dict[str, float] | None:
    """The point of an ``idou tune`` curve with the best precision among recall >= ``recall``.

    Args:
        tune_report: the contents of a ``.tune.json`` written by ``idou tune``.
        channel: ``"new"`` or ``"demolished"``.
        recall: the object recall to reach.

    Returns:
        ``{"threshold", "recall", "precision", ...}`` of that point, or None if no threshold of
        the sweep reaches ``recall``.
    """
    curve = tune_report["channels"][channel]["curve"]
    reached = [point for point in curve if point["recall"] >= recall]
    if not reached:
        return None
    return dict(max(reached, key=lambda p: (p["precision"], p["threshold"])))


def read_tune_report(path: Path) -> dict[str, Any]:
    """A ``.tune.json`` of ``idou tune``; a missing or foreign file is a user error."""
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        for channel in ("new", "demolished"):
            report["channels"][channel]["curve"]  # noqa: B018 - the keys must be there
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserInputError(f"{path} is not a .tune.json written by idou tune ({exc}); pass "
                             "the <model>.tune.json beside a tuned model.") from exc
    return dict(report)
