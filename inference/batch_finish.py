"""The end of a batch run: the detect stage after probabilities, run once on the block mosaic.

``finish`` hands the mosaic to ``idou.inference.detect.finish_from_probabilities`` when the
detect module provides it, so `idou batch` and `idou detect` make polygons, classes, the parcel
join and the GeoPackage with one code path. Until it does, it runs the public pieces exactly as
`idou detect` chains them (``resolve_thresholds`` → ``vectorize`` → ``classify_changes`` →
``join_parcels`` → ``write_review_geopackage``), with detect's defaults.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd

MIN_AREA_M2 = 8.0
VECTORIZE_BLOCK = 2048


def _detect_finish() -> Callable[..., Any] | None:
    try:
        detect = importlib.import_module("idou.inference.detect")
    except ImportError:
        return None
    fn = getattr(detect, "finish_from_probabilities", None)
    return fn if callable(fn) else None


def finish(probabilities: Any, coverage: gpd.GeoDataFrame, report: Any, model: Any,
           output: Path, *, parcels: Path | None, buildings: Path | None,
           run_info: dict[str, Any], force: bool = False, write_project: bool = True
           ) -> dict[str, Any]:
    """Vectorise the whole grid's probabilities once and write the review GeoPackage.

    Args:
        probabilities: uint8 ``(2, H, W)`` reader of the grid (``read(window)``).
        coverage: the ``coverage`` layer (``status`` processed / nodata).
        report: the run's preflight report (grid, sources).
        model: the resolved model (``LoadedModel``: contract with thresholds, sha256).
        output: the GeoPackage (written atomically).
        parcels: parcel file, or None.
        buildings: existing-building file, or None.
        run_info: provenance for the ``run_info`` table.
        force: re-run into an existing GeoPackage (staff edits are kept).
        write_project: also write the QGIS project (``.qgz``) beside it.

    Returns:
        ``{"changes_by_type": {...}, "candidate_parcels": n}``.
    """
    orthophotos = (Path(report.before.path), Path(report.after.path))
    delegate = _detect_finish()
    if delegate is not None:
        result: dict[str, Any] = delegate(
            probabilities, coverage, report, model, output, parcels=parcels,
            buildings=buildings, run_info=run_info, orthophotos=orthophotos, force=force,
            write_project=write_project)
        return result
    from idou.geo.vectorize import vectorize
    from idou.inference.detect import _read_vectors, _write_output, resolve_thresholds

    grid = report.grid
    thresholds = resolve_thresholds(model.contract)
    parcel_frame, building_frame = _read_vectors(parcels, buildings, grid.crs)
    changes = vectorize(probabilities, grid, thresholds, min_area_m2=MIN_AREA_M2,
                        block_size=VECTORIZE_BLOCK)
    info = {**run_info, "threshold_new": thresholds[0], "threshold_demolished": thresholds[1]}
    return _write_output(output, changes, parcel_frame, building_frame, coverage, info,
                         orthophotos, force, write_project)
