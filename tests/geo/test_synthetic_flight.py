"""The in-memory flight pair: determinism and the promises other stages rely on."""

from __future__ import annotations

import re

import numpy as np
import pytest
import shapely
from rasterio import features
from rasterio.transform import rowcol
from shapely.geometry import box

from idou.geo.synthetic import FlightPair, make_flight_pair

SIZE = 512


@pytest.fixture(scope="module")
def pair() -> FlightPair:
    return make_flight_pair(seed=7, size=SIZE)


def _extent(tr, h: int, w: int):  # noqa: ANN001, ANN202
    return box(tr.c, tr.f - h * abs(tr.e), tr.c + w * tr.a, tr.f)


def test_same_seed_same_pair(pair: FlightPair) -> None:
    again = make_flight_pair(seed=7, size=SIZE)
    assert np.array_equal(pair.before, again.before)
    assert np.array_equal(pair.after, again.after)
    assert pair.after_transform == again.after_transform
    for name in ("parcels", "buildings_before", "buildings_after", "truth"):
        a, b = getattr(pair, name), getattr(again, name)
        assert a.drop(columns="geometry").equals(b.drop(columns="geometry")), name
        assert all(a.geometry.geom_equals_exact(b.geometry, 1e-9)), name


def test_other_seed_other_pair(pair: FlightPair) -> None:
    other = make_flight_pair(seed=8, size=SIZE)
    assert not np.array_equal(pair.before, other.before)


def test_images_grids_and_crs(pair: FlightPair) -> None:
    assert pair.crs == "EPSG:6677"
    assert pair.before.shape == (SIZE, SIZE, 3) and pair.before.dtype == np.uint8
    assert pair.after.shape[2] == 3 and pair.after.dtype == np.uint8
    assert pair.before_valid.shape == pair.before.shape[:2]
    assert pair.after_valid.shape == pair.after.shape[:2]
    for tr in (pair.before_transform, pair.after_transform):
        assert tr.a == pytest.approx(0.2) and tr.e == pytest.approx(-0.2)
        assert tr.b == 0 and tr.d == 0
    # zone IX near 前橋市
    assert -80000 < pair.before_transform.c < -60000
    assert 35000 < pair.before_transform.f < 52000


def test_partial_overlap_and_nodata_margin(pair: FlightPair) -> None:
    before = _extent(pair.before_transform, *pair.before.shape[:2])
    after = _extent(pair.after_transform, *pair.after.shape[:2])
    share = before.intersection(after).area / before.area
    assert 0.5 < share < 0.95
    assert pair.after_transform.c != pair.before_transform.c
    assert pair.after_transform.f != pair.before_transform.f
    margin = ~pair.after_valid
    assert 0.01 < margin.mean() < 0.2
    assert (pair.after[margin] == 0).all()
    assert (pair.after[pair.after_valid] > 0).any(axis=-1).all()


def test_flights_differ_in_radiometry(pair: FlightPair) -> None:
    before = _extent(pair.before_transform, SIZE, SIZE)
    after = _extent(pair.after_transform, SIZE, SIZE)
    x0, y0, x1, y1 = before.intersection(after).bounds
    r0, c0 = rowcol(pair.before_transform, x0 + 0.1, y1 - 0.1)
    r1, c1 = rowcol(pair.after_transform, x0 + 0.1, y1 - 0.1)
    h, w = round((y1 - y0) / 0.2), round((x1 - x0) / 0.2)
    a = pair.before[r0:r0 + h, c0:c0 + w].astype(float)
    b = pair.after[r1:r1 + h, c1:c1 + w].astype(float)
    valid = pair.after_valid[r1:r1 + h, c1:c1 + w]
    # the same ground (correlated at a coarse scale), but not the same pixels
    coarse = np.s_[::8, ::8]
    ga, gb = a.mean(-1)[coarse][valid[coarse]], b.mean(-1)[coarse][valid[coarse]]
    assert np.corrcoef(ga, gb)[0, 1] > 0.4
    assert np.abs(a - b)[valid].mean() > 3


def test_second_flight_has_other_sun_and_subpixel_misregistration(pair: FlightPair) -> None:
    info = pair.info
    assert abs(float(info["sun_azimuth_2025"]) - float(info["sun_azimuth_2024"])) >= 25
    mis = np.hypot(float(info["misregistration_row_px"]), float(info["misregistration_col_px"]))
    assert 0 < mis <= 1.0
    # the grid shift in the info is the one in the geotransforms
    assert pair.after_transform.c - pair.before_transform.c == pytest.approx(
        int(info["shift_x_px"]) * 0.2)


def test_truth_semantics(pair: FlightPair) -> None:
    truth = pair.truth
    assert set(truth.change_type) <= {"new", "demolished", "extension", "rebuilt"}
    assert set(truth.channel) <= {"new", "demolished"}
    counts = truth.groupby("change_type").change_id.nunique()
    for kind in ("new", "demolished", "extension", "rebuilt"):
        assert counts.get(kind, 0) >= 1, kind
    for _, rows in truth[truth.change_type == "rebuilt"].groupby("change_id"):
        assert sorted(rows.channel) == ["demolished", "new"]
    before_ids = set(pair.buildings_before.building_id)
    after = pair.buildings_after.set_index("building_id")
    for row in truth.itertuples():
        if row.change_type == "new" or (row.change_type == "rebuilt" and row.channel == "new"):
            ids = after.index[after.geometry.intersects(row.geometry.buffer(-0.1))]
            assert all(i not in before_ids for i in ids)
        if row.change_type == "extension":
            # the added part is in the after footprint of a building that kept its id
            hit = after.geometry.intersection(row.geometry).area
            bid = hit.idxmax()
            assert bid in before_ids
            assert hit.max() == pytest.approx(row.geometry.area, rel=1e-3)
    # labels derived from footprints agree with the truth
    new_area = shapely.union_all(pair.buildings_after.geometry).difference(
        shapely.union_all(pair.buildings_before.geometry)).area
    truth_new = shapely.union_all(truth[truth.channel == "new"].geometry)
    assert truth_new.area >= 0.95 * new_area - 1e-6


def test_truth_on_valid_pixels_of_both(pair: FlightPair) -> None:
    for tr, valid in ((pair.before_transform, pair.before_valid),
                      (pair.after_transform, pair.after_valid)):
        mask = features.rasterize(((g, 1) for g in pair.truth.geometry), out_shape=valid.shape,
                                  transform=tr, fill=0, all_touched=True, dtype="uint8")
        assert mask.sum() >= shapely.union_all(pair.truth.geometry).area / 0.04 * 0.9
        assert valid[mask == 1].all()


def test_parcels_have_chiban_and_shozai(pair: FlightPair) -> None:
    parcels = pair.parcels
    assert list(parcels.columns) == ["地番", "所在", "area_m2", "geometry"]
    assert all(re.fullmatch(r"[1-9]\d*-[1-9]\d*", c) for c in parcels["地番"])
    assert parcels["地番"].is_unique
    assert all(re.fullmatch(r"大字\S+町字\S+", s) for s in parcels["所在"])
    assert np.allclose(parcels.area_m2, parcels.geometry.area, rtol=1e-3)
    # each truth row names the parcel it lies in
    by_chiban = parcels.set_index("地番").geometry
    for row in pair.truth.itertuples():
        assert by_chiban[row.地番].buffer(0.01).contains(row.geometry)


def test_geometries_are_single_polygons(pair: FlightPair) -> None:
    for gdf in (pair.truth, pair.buildings_before, pair.buildings_after, pair.parcels):
        assert set(gdf.geom_type) == {"Polygon"}
        assert gdf.is_valid.all()


def test_building_ids_stable(pair: FlightPair) -> None:
    before = pair.buildings_before.set_index("building_id").geometry
    after = pair.buildings_after.set_index("building_id").geometry
    assert before.index.is_unique and after.index.is_unique
    kept = before.index.intersection(after.index)
    assert len(kept) > 0.6 * len(before)
    same = [before[i].equals(after[i]) for i in kept]
    assert sum(same) >= len(kept) - pair.truth.change_type.eq("extension").sum()
