"""Written flight pairs look like municipal deliveries and read back as generated."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from idou.geo.synthetic import FlightPair, make_flight_pair, write_flight_pair


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[FlightPair, dict[str, Path]]:
    pair = make_flight_pair(seed=3, size=512)
    return pair, write_flight_pair(pair, tmp_path_factory.mktemp("pair"))


def test_files_and_layers(written: tuple[FlightPair, dict[str, Path]]) -> None:
    _, paths = written
    assert {p.name for p in paths.values()} == {
        "flight_2024.tif", "flight_2025.tif", "parcels.gpkg", "buildings_2024.gpkg",
        "buildings_2025.gpkg", "truth.gpkg"}
    layers = {"parcels": "parcels", "buildings_2024": "buildings",
              "buildings_2025": "buildings", "truth": "truth"}
    for name, layer in layers.items():
        gdf = gpd.read_file(paths[name], layer=layer)
        assert gdf.crs.to_epsg() == 6677
        assert len(gdf) > 0


@pytest.mark.parametrize("name", ["flight_2024", "flight_2025"])
def test_geotiff_profile(written: tuple[FlightPair, dict[str, Path]], name: str) -> None:
    _, paths = written
    with rasterio.open(paths[name]) as ds:
        assert ds.crs.to_epsg() == 6677
        assert ds.res == pytest.approx((0.2, 0.2))
        assert ds.count == 3 and ds.dtypes == ("uint8",) * 3
        assert ds.compression.value == "JPEG"
        assert ds.photometric.value == "YCbCr"
        assert ds.profile["tiled"] and ds.block_shapes[0] == (256, 256)
        assert ds.overviews(1) == [2, 4, 8]
        assert ds.tags()["IDOU_SYNTHETIC"].startswith("yes")
        assert ds.tags()["IDOU_FLIGHT"] == name[-4:]


def test_nodata_margin_reads_back_invalid(written: tuple[FlightPair, dict[str, Path]]) -> None:
    pair, paths = written
    with rasterio.open(paths["flight_2025"]) as ds:
        mask = ds.dataset_mask() > 0
        data = ds.read()
    assert np.array_equal(mask, pair.after_valid)
    with rasterio.open(paths["flight_2024"]) as ds:
        assert (ds.dataset_mask() > 0).all()
    # JPEG keeps the content close to what was generated
    diff = np.abs(data.astype(int) - np.moveaxis(pair.after, -1, 0).astype(int))
    assert diff[:, pair.after_valid].mean() < 4


def test_vectors_read_back_equal(written: tuple[FlightPair, dict[str, Path]]) -> None:
    pair, paths = written
    truth = gpd.read_file(paths["truth"], layer="truth")
    assert list(truth.columns) == ["change_id", "change_type", "channel", "地番", "geometry"]
    assert truth.drop(columns="geometry").equals(pair.truth.drop(columns="geometry"))
    assert all(truth.geometry.geom_equals_exact(pair.truth.geometry, 1e-6))
    parcels = gpd.read_file(paths["parcels"], layer="parcels")
    assert list(parcels["地番"]) == list(pair.parcels["地番"])
