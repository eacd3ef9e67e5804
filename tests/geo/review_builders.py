"""Tiny review-run inputs shared by the review-stage tests (loaded by file path).

Three parcels in a row (A町 1..3), one existing building on parcel 1, and four changes:
an extension of that building, a new building spanning parcels 1 and 2, a demolished
building on parcel 3 and a false alarm on parcel 2.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
from shapely.geometry import box

CRS = "EPSG:6677"


def parcels() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"parcel_id": ["A町 1", "A町 2", "A町 3"], "地番": ["1", "2", "3"],
         "所在": ["A町", "A町", "B町"]},
        geometry=[box(0, 0, 40, 40), box(40, 0, 80, 40), box(80, 0, 120, 40)], crs=CRS)


def buildings() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"building_id": ["K1", "K2"]},
                            geometry=[box(5, 5, 15, 15), box(90, 10, 100, 20)], crs=CRS)


def raw_changes(shift: float = 0.0) -> gpd.GeoDataFrame:
    geoms = [box(15, 5, 20, 15), box(30 + shift, 20, 50 + shift, 30),
             box(89, 9, 101, 21), box(60, 5, 65, 10)]
    return gpd.GeoDataFrame(
        {"channel": ["new", "new", "demolished", "new"], "area_m2": [g.area for g in geoms],
         "score_max": [0.9, 0.85, 0.95, 0.55], "score_mean": [0.7, 0.6, 0.8, 0.5]},
        geometry=geoms, crs=CRS)


def coverage() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"status": ["processed", "nodata"]},
                            geometry=[box(0, 0, 120, 35), box(0, 35, 120, 40)], crs=CRS)


def run_info() -> dict[str, object]:
    return {"model_name": "idou-default", "model_version": "0.1.0",
            "model_sha256": "0" * 64, "thresholds": {"new": 0.4, "demolished": 0.45},
            "recall_target": 0.95, "crs": CRS, "idou_version": "0.1.0"}


def write_run(target: Path, *, shift: float = 0.0, drop: tuple[int, ...] = (),
              force: bool = False, orthophotos: tuple[Path, Path] | None = None):
    """Classify, join and write a run to ``target``; returns the WriteResult."""
    from idou.geo.changes.classify import classify_changes
    from idou.geo.changes.parcel_join import join_parcels
    from idou.geo.review.gpkg_output import write_review_geopackage

    changes = raw_changes(shift)
    changes = changes.drop(index=list(drop))
    classified = classify_changes(changes, buildings(), parcels())
    candidates = join_parcels(classified, parcels())
    return write_review_geopackage(
        target, changes=classified, candidate_parcels=candidates,
        existing_buildings=buildings(), coverage=coverage(), run_info=run_info(),
        orthophotos=orthophotos, force=force)
