"""Labels derived from two dates' footprints: new, demolished, extension, rebuilt, ignore band."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import box

from idou.training.datasets.footprints import (
    IGNORE,
    FootprintChipDataset,
    derive_labels,
    derive_labels_from_footprints,
    match_footprints,
)


def _mask(shape: tuple[int, int], *rects: tuple[int, int, int, int]) -> np.ndarray:
    m = np.zeros(shape, bool)
    for r0, r1, c0, c1 in rects:
        m[r0:r1, c0:c1] = True
    return m


def test_new_building_is_new_inside_and_ignored_on_its_edge() -> None:
    before = _mask((40, 40))
    after = _mask((40, 40), (10, 20, 10, 20))
    labels = derive_labels(before, after, edge_px=1)
    new, dem = labels.target
    assert (new[12:18, 12:18] == 1).all()
    assert new[10, 15] == IGNORE and new[9, 15] == IGNORE  # one pixel either side of the edge
    assert new[8, 15] == 0 and new[15, 5] == 0
    assert not (dem == 1).any()
    assert not labels.extension.any()


def test_demolished_building_is_demolished_only() -> None:
    labels = derive_labels(_mask((40, 40), (5, 15, 5, 15)), _mask((40, 40)), edge_px=1)
    new, dem = labels.target
    assert (dem[7:13, 7:13] == 1).all()
    assert not (new == 1).any()
    assert labels.buildings_before[10, 10] == 1 and labels.buildings_after[10, 10] == 0


def test_extension_is_new_area_touching_an_old_footprint() -> None:
    before = _mask((40, 40), (10, 20, 10, 20))
    after = _mask((40, 40), (10, 20, 10, 28))  # the same house, grown eastwards
    labels = derive_labels(before, after, edge_px=1)
    new, dem = labels.target
    assert (new[12:18, 22:26] == 1).all()  # the added part
    assert (new[12:18, 12:18] == 0).all()  # the old house is not new
    assert labels.extension[15, 24] and not labels.extension[15, 15]
    assert not (dem == 1).any()
    # a separate new house is new but not an extension
    labels = derive_labels(before, after | _mask((40, 40), (30, 38, 30, 38)), edge_px=1)
    assert labels.target[0, 34, 34] == 1 and not labels.extension[34, 34]


def test_rebuilt_house_is_new_and_demolished_where_the_footprints_overlap() -> None:
    before = _mask((40, 40), (10, 20, 10, 20))
    after = _mask((40, 40), (12, 22, 12, 22))
    geometric = derive_labels(before, after, edge_px=0)
    assert geometric.target[0, 15, 15] == 0  # geometry alone cannot tell a rebuilt house
    matched = derive_labels(before, after, edge_px=0, appeared=after, vanished=before)
    assert matched.target[0, 15, 15] == 1 and matched.target[1, 15, 15] == 1
    assert not matched.extension.any()


def test_small_change_pieces_are_ignored_not_taught() -> None:
    before = _mask((40, 40), (10, 20, 10, 20))
    after = _mask((40, 40), (10, 20, 10, 21))  # a one-pixel redraw of the outline
    labels = derive_labels(before, after, edge_px=0, min_area_px=20)
    assert labels.target[0, 15, 20] == IGNORE
    assert not (labels.target == 1).any()


def test_match_footprints_by_id_and_by_overlap() -> None:
    b = gpd.GeoDataFrame({"building_id": ["a", "b"]},
                         geometry=[box(0, 0, 10, 10), box(20, 0, 30, 10)], crs="EPSG:6677")
    a = gpd.GeoDataFrame({"building_id": ["a", "c"]},
                         geometry=[box(0, 0, 12, 10), box(21, 0, 31, 10)], crs="EPSG:6677")
    appeared, vanished = match_footprints(b, a, by="id")
    assert appeared.tolist() == [False, True] and vanished.tolist() == [False, True]
    appeared, vanished = match_footprints(b, a, by="overlap")  # c overlaps b: IoU 0.82
    assert not appeared.any() and not vanished.any()


def test_labels_from_polygons_follow_the_window_transform() -> None:
    t = Affine(0.5, 0, 100.0, 0, -0.5, 200.0)  # 0.5 m pixels, top-left at (100, 200)
    labels = derive_labels_from_footprints([], [box(105, 190, 110, 195)], t, (40, 40),
                                           edge_px=1, appeared=[True], vanished=[])
    rows, cols = np.nonzero(labels.target[0] == 1)
    assert rows.min() == 11 and rows.max() == 18  # y 195..190 → rows 10..19, minus the band
    assert cols.min() == 11 and cols.max() == 18


def _write_rgb(path: Path, data: np.ndarray, transform: Affine) -> None:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=3, dtype="uint8", crs="EPSG:6677", transform=transform,
                       tiled=True, blockxsize=64, blockysize=64) as dst:
        dst.write(data)


def test_footprint_dataset_reads_chips_with_derived_labels(tmp_path: Path) -> None:
    t = Affine(0.2, 0, 0.0, 0, -0.2, 51.2)  # 256 px at 0.2 m
    rng = np.random.default_rng(0)
    before = rng.integers(60, 90, (3, 256, 256), dtype=np.uint8)
    after = before.copy()
    after[:, 40:80, 40:80] = 200  # a new roof at x 8..16 m, y 35.2..43.2 m
    _write_rgb(tmp_path / "b.tif", before, t)
    _write_rgb(tmp_path / "a.tif", after, t)
    old = box(30, 20, 40, 30)
    gpd.GeoDataFrame({"building_id": ["1"]}, geometry=[old], crs="EPSG:6677").to_file(
        tmp_path / "b.gpkg")
    gpd.GeoDataFrame({"building_id": ["1", "2"]}, geometry=[old, box(8, 35.2, 16, 43.2)],
                     crs="EPSG:6677").to_file(tmp_path / "a.gpkg")
    ds = FootprintChipDataset(tmp_path / "b.tif", tmp_path / "a.tif", tmp_path / "b.gpkg",
                              tmp_path / "a.gpkg", chip_size=64, gsd_m=0.4)
    assert len(ds) == 4 and ds.has_change == [True, False, False, False]
    item = ds[0]
    assert item["before"].shape == item["after"].shape == (64, 64, 3)
    assert item["before"].dtype == np.uint8
    assert item["target"].shape == (2, 64, 64) and item["target"].dtype == np.uint8
    # the new roof: pixels 40..80 at 0.2 m → 20..40 at 0.4 m; its interior is new, bright
    assert (item["target"][0, 22:38, 22:38] == 1).all()
    assert item["after"][30, 30].min() > 150 and item["before"][30, 30].max() < 100
    assert not (item["target"][1] == 1).any()
    assert item["buildings_after"][30, 30] == 1 and item["buildings_before"][30, 30] == 0


def test_missing_orthophoto_is_a_user_error(tmp_path: Path) -> None:
    from idou.errors import InputNotFound

    with pytest.raises(InputNotFound):
        FootprintChipDataset(tmp_path / "x.tif", tmp_path / "y.tif", tmp_path / "b.gpkg",
                             tmp_path / "a.gpkg")
