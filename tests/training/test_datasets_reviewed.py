"""Reviewed (harvested) labels become change chips at the right place, read from both flights."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import box

from idou.geo.errors import UserInputError
from idou.training.datasets.reviewed import ReviewedDataset

CRS = "EPSG:6677"
X0, Y0, GSD, SIZE = 10_000.0, 20_000.0, 0.5, 200  # a 100 m square flight at 0.5 m


def _flight(path: Path, value: int) -> None:
    data = np.full((3, SIZE, SIZE), value, np.uint8)
    data[0] = np.arange(SIZE, dtype=np.uint8)[None, :]  # red encodes the column
    data[1] = np.arange(SIZE, dtype=np.uint8)[:, None]  # green encodes the row
    with rasterio.open(path, "w", driver="GTiff", width=SIZE, height=SIZE, count=3,
                       dtype="uint8", crs=CRS, transform=from_origin(X0, Y0, GSD, GSD)) as dst:
        dst.write(data)


def _cell(col0: int, row0: int, col1: int, row1: int) -> box:
    """World box covering pixel columns col0..col1-1 and rows row0..row1-1 of the flight."""
    return box(X0 + col0 * GSD, Y0 - row1 * GSD, X0 + col1 * GSD, Y0 - row0 * GSD)


def _harvest(folder: Path, rows: list[dict[str, object]], manifest: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _flight(folder / "before.tif", 10)
    _flight(folder / "after.tif", 200)
    gdf = gpd.GeoDataFrame(rows, geometry="geometry", crs=CRS)
    gdf.to_file(folder / "labels.gpkg", layer="labels", driver="GPKG")
    meta = manifest or {"before": "before.tif", "after": "after.tif", "crs": CRS}
    (folder / "harvest.json").write_text(json.dumps(meta), encoding="utf-8")
    return folder


def test_positive_lands_on_its_pixels_and_chips_read_both_flights(tmp_path: Path) -> None:
    rows = [
        {"channel": "new", "label": "positive", "source": "review",
         "geometry": _cell(60, 80, 70, 90)},
        {"channel": "demolished", "label": "ignore", "source": "review",
         "geometry": _cell(72, 80, 75, 84)},
        {"channel": "demolished", "label": "negative", "source": "review",
         "geometry": _cell(150, 150, 160, 160)},
    ]
    ds = ReviewedDataset(_harvest(tmp_path / "h", rows), chip_size=64)
    assert len(ds) == 2  # one chip per positive/negative polygon, none for ignore
    assert ds.has_change == [True, False]

    item = ds[0]
    assert item["before"].shape == (64, 64, 3) and item["before"].dtype == np.uint8
    assert item["after"].shape == (64, 64, 3)
    assert item["target"].shape == (2, 64, 64) and item["target"].dtype == np.uint8
    window = ds.windows[0]
    c0, r0 = int(window.col_off), int(window.row_off)
    # The chip's pixels are the flight's pixels at (row0 + r, col0 + c): red = col, green = row.
    assert item["before"][0, 0, 0] == c0 and item["before"][0, 0, 1] == r0
    assert item["before"][0, 0, 2] == 10 and item["after"][0, 0, 2] == 200
    expected_new = np.zeros((SIZE, SIZE), np.uint8)
    expected_new[80:90, 60:70] = 1
    assert np.array_equal(item["target"][0], expected_new[r0:r0 + 64, c0:c0 + 64])
    expected_dem = np.zeros((SIZE, SIZE), np.uint8)
    expected_dem[80:84, 72:75] = 255
    assert np.array_equal(item["target"][1], expected_dem[r0:r0 + 64, c0:c0 + 64])

    negative = ds[1]["target"]
    assert not (negative == 1).any() and not (negative == 255).any()


def test_nodata_outside_the_flight_is_ignored_and_ignore_beats_positive(tmp_path: Path) -> None:
    rows = [
        {"channel": "new", "label": "positive", "source": "missed",
         "geometry": _cell(0, 0, 20, 20)},
        {"channel": "new", "label": "ignore", "source": "review",
         "geometry": _cell(5, 5, 10, 10)},
        {"channel": "rebuilt", "label": "positive", "source": "review",
         "geometry": _cell(100, 100, 104, 104)},
    ]
    ds = ReviewedDataset(_harvest(tmp_path / "h", rows), chip_size=32)
    target = ds[0]["target"]
    assert target[0, 6, 6] == 255 and target[0, 12, 12] == 1 and target[0, 25, 25] == 0
    # Shift the window off the flight: the part outside is ignore in both channels.
    from rasterio.windows import Window
    ds.windows[0] = Window(-8, -8, 32, 32)
    target = ds[0]["target"]
    assert (target[:, :8, :] == 255).all() and (target[:, :, :8] == 255).all()
    rebuilt = ds[1]["target"]
    assert (rebuilt == 1).any(axis=(1, 2)).all()  # rebuilt = positive in both channels


def test_dataset_survives_pickling_for_dataloader_workers(tmp_path: Path) -> None:
    rows = [{"channel": "new", "label": "positive", "source": "review",
             "geometry": _cell(60, 80, 70, 90)}]
    ds = ReviewedDataset(_harvest(tmp_path / "h", rows), chip_size=32)
    first = ds[0]
    clone = pickle.loads(pickle.dumps(ds))
    assert np.array_equal(clone[0]["target"], first["target"])
    assert np.array_equal(clone[0]["after"], first["after"])


def test_nested_manifest_and_bad_inputs(tmp_path: Path) -> None:
    rows = [{"channel": "new", "label": "positive", "source": "review",
             "geometry": _cell(60, 80, 70, 90)}]
    folder = _harvest(tmp_path / "nested", rows, manifest={
        "orthophotos": {"before": {"path": "before.tif"}, "after": "after.tif"}, "crs": CRS})
    assert len(ReviewedDataset(folder, chip_size=32)) == 1

    (folder / "harvest.json").write_text(json.dumps({"after": "after.tif"}), encoding="utf-8")
    with pytest.raises(UserInputError, match="before"):
        ReviewedDataset(folder)
    with pytest.raises(UserInputError, match="harvest.json"):
        ReviewedDataset(tmp_path / "missing")
    bad = _harvest(tmp_path / "bad", [{"channel": "new", "label": "maybe", "source": "review",
                                        "geometry": _cell(1, 1, 2, 2)}])
    with pytest.raises(UserInputError, match="maybe"):
        ReviewedDataset(bad)


def test_labels_in_another_crs_and_outside_the_flights(tmp_path: Path) -> None:
    rows = [{"channel": "new", "label": "positive", "source": "review",
             "geometry": _cell(60, 80, 70, 90)},
            {"channel": "new", "label": "positive", "source": "missed",
             "geometry": _cell(5000, 5000, 5010, 5010)}]  # far outside both flights
    folder = _harvest(tmp_path / "h", rows)
    gdf = gpd.read_file(folder / "labels.gpkg", layer="labels").to_crs("EPSG:4326")
    gdf.to_file(folder / "labels.gpkg", layer="labels", driver="GPKG", mode="w")
    ds = ReviewedDataset(folder, chip_size=64)
    assert len(ds) == 1 and ds.has_change == [True]
    window = ds.windows[0]
    c0, r0 = int(window.col_off), int(window.row_off)
    new = ds[0]["target"][0]
    assert new[82 - r0:88 - r0, 62 - c0:68 - c0].all()  # the core of the box, after warping
    assert new.sum() < 130  # 100 px, give or take the reprojected edges


def test_reads_the_manifest_idou_harvest_writes(tmp_path: Path) -> None:
    from dataclasses import asdict

    from idou.geo.review.harvest import HarvestReport

    rows = [{"channel": "demolished", "label": "positive", "source": "review",
             "change_id": "c1", "geometry": _cell(60, 80, 70, 90)}]
    folder = _harvest(tmp_path / "h", rows)
    report = HarvestReport(source="review.gpkg", before=str(folder / "before.tif"),
                           after=str(folder / "after.tif"), crs=CRS, model={}, counts={},
                           counts_by_channel={}, precision=None, recall=None)
    (folder / "harvest.json").write_text(json.dumps(asdict(report)), encoding="utf-8")
    ds = ReviewedDataset(folder, chip_size=32)
    assert ds.has_change == [True] and (ds[0]["target"][1] == 1).any()

    # A harvest whose run recorded no orthophoto paths: they can be given to the dataset.
    report.before = report.after = None
    (folder / "harvest.json").write_text(json.dumps(asdict(report)), encoding="utf-8")
    with pytest.raises(UserInputError, match="before"):
        ReviewedDataset(folder)
    ds = ReviewedDataset(folder, chip_size=32, before=str(folder / "before.tif"),
                         after=str(folder / "after.tif"))
    assert len(ds) == 1


def test_idou_train_config_takes_a_harvest_folder(tmp_path: Path) -> None:
    from idou.training.config import DataSpec
    from idou.training.loaders import build_dataset

    rows = [{"channel": "new", "label": "positive", "source": "review",
             "geometry": _cell(60, 80, 70, 90)}]
    folder = _harvest(tmp_path / "h", rows)
    ds = build_dataset(DataSpec("reviewed", {"folder": str(folder), "chip_size": 64}), 0.5)
    assert isinstance(ds, ReviewedDataset)
    assert ds.has_change == [True]
    assert ds[0]["target"].shape == (2, 64, 64)
