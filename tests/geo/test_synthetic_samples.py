"""The committed data_samples/: what the generator promises, and that it still makes them."""

from __future__ import annotations

import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from rasterio import features
from shapely.geometry import box

from idou.geo.synthetic import make_flight_pair, write_flight_pair
from idou.geo.synthetic.changes import MINIMUM_AT_2048

SAMPLES = Path(__file__).resolve().parents[2] / "data_samples"
FLIGHTS = ("flight_2024.tif", "flight_2025.tif")
VECTORS = {"parcels.gpkg": "parcels", "buildings_2024.gpkg": "buildings",
           "buildings_2025.gpkg": "buildings", "truth.gpkg": "truth"}

pytestmark = pytest.mark.skipif(not (SAMPLES / "truth.gpkg").is_file(),
                                reason="data_samples/ has not been generated")


def _recorded_command() -> tuple[int, int]:
    text = (SAMPLES / "README.md").read_text(encoding="utf-8")
    match = re.search(r"idou samples make data_samples --seed (\d+) --size (\d+)", text)
    assert match, "data_samples/README.md must give the exact regeneration command"
    return int(match.group(1)), int(match.group(2))


def test_readme_says_synthetic_and_version() -> None:
    text = (SAMPLES / "README.md").read_text(encoding="utf-8")
    assert "synthetic" in text.lower()
    from idou.geo.synthetic import GENERATOR_VERSION

    assert f"generator version {GENERATOR_VERSION}" in text


def test_readme_counts_match_the_truth() -> None:
    text = (SAMPLES / "README.md").read_text(encoding="utf-8")
    truth = gpd.read_file(SAMPLES / "truth.gpkg", layer="truth")
    counts = truth.groupby("change_type")["change_id"].nunique()
    said = re.search(r"(\d+) new, (\d+) demolished, (\d+) extensions, (\d+) rebuilt", text)
    assert said, "README must state the change counts"
    assert [int(x) for x in said.groups()] == [
        counts.get(k, 0) for k in ("new", "demolished", "extension", "rebuilt")]


def test_total_size_fits_git() -> None:
    total = sum(p.stat().st_size for p in SAMPLES.iterdir() if p.is_file())
    assert total <= 15 * 1024 * 1024


def test_change_counts_meet_minimums() -> None:
    truth = gpd.read_file(SAMPLES / "truth.gpkg", layer="truth")
    counts = truth.groupby("change_type")["change_id"].nunique()
    for kind, minimum in MINIMUM_AT_2048.items():
        assert counts.get(kind, 0) >= minimum, kind


@pytest.mark.parametrize("name", FLIGHTS)
def test_flights_are_municipal_orthophotos(name: str) -> None:
    with rasterio.open(SAMPLES / name) as ds:
        assert ds.width >= 2048 and ds.height >= 2048
        assert ds.crs.to_epsg() == 6677
        assert ds.res == pytest.approx((0.2, 0.2))
        assert ds.count == 3 and ds.dtypes == ("uint8",) * 3
        assert ds.compression.value == "JPEG" and ds.photometric.value == "YCbCr"
        assert ds.profile["tiled"] and ds.block_shapes[0] in ((256, 256), (512, 512))
        assert ds.overviews(1) == [2, 4, 8]


def test_partial_overlap_nodata_and_truth_on_valid_pixels() -> None:
    truth = gpd.read_file(SAMPLES / "truth.gpkg", layer="truth")
    extents = []
    for name in FLIGHTS:
        with rasterio.open(SAMPLES / name) as ds:
            extents.append(box(*ds.bounds))
            valid = ds.dataset_mask() > 0
            mask = features.rasterize(((g, 1) for g in truth.geometry), out_shape=valid.shape,
                                      transform=ds.transform, all_touched=True, dtype="uint8")
            assert mask.sum() >= shapely.union_all(truth.geometry).area / 0.04 * 0.9
            assert valid[mask == 1].all(), name
            if name == "flight_2025.tif":
                assert 0.01 < (~valid).mean() < 0.2
    share = extents[0].intersection(extents[1]).area / extents[0].area
    assert 0.5 < share < 0.95


def test_generator_still_makes_the_committed_samples(tmp_path: Path) -> None:
    seed, size = _recorded_command()
    paths = write_flight_pair(make_flight_pair(seed, size), tmp_path)
    for name, layer in VECTORS.items():
        made = gpd.read_file(paths[name.removesuffix(".gpkg")], layer=layer)
        kept = gpd.read_file(SAMPLES / name, layer=layer)
        assert made.drop(columns="geometry").equals(kept.drop(columns="geometry")), name
        assert made.geometry.geom_equals_exact(kept.geometry, 1e-6).all(), name
    for name in FLIGHTS:
        with rasterio.open(paths[name.removesuffix(".tif")]) as a, \
                rasterio.open(SAMPLES / name) as b:
            assert a.transform == b.transform and a.shape == b.shape
            assert np.array_equal(a.dataset_mask(), b.dataset_mask())
            diff = np.abs(a.read().astype(np.int16) - b.read().astype(np.int16))
            assert diff.mean() < 0.5 and np.percentile(diff, 99.9) <= 8, name
