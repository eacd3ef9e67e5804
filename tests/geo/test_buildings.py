"""Existing buildings: vector files and PLATEAU CityGML footprints (lat/lon axis order)."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
from pyproj import Transformer
from shapely.geometry import box

from idou.errors import InputNotFound, UserInputError
from idou.geo.vector.buildings import read_buildings

GML_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<core:CityModel xmlns:core="http://www.opengis.net/citygml/2.0" '
    'xmlns:bldg="http://www.opengis.net/citygml/building/2.0" '
    'xmlns:gml="http://www.opengis.net/gml" xmlns:uro="https://www.geospatial.jp/iur/uro/2.0">'
    '<gml:boundedBy><gml:Envelope srsName="http://www.opengis.net/def/crs/EPSG/0/6697" '
    'srsDimension="3"><gml:lowerCorner>35.6 139.7 0</gml:lowerCorner>'
    "<gml:upperCorner>35.7 139.8 0</gml:upperCorner></gml:Envelope></gml:boundedBy>")


def ring(lat: float, lon: float, d: float = 0.0001) -> str:
    pts = [(lat, lon), (lat + d, lon), (lat + d, lon + d), (lat, lon + d), (lat, lon)]
    return " ".join(f"{a} {b} 10.0" for a, b in pts)


def polygon_xml(tag: str, lat: float, lon: float) -> str:
    return (f"<bldg:{tag}><gml:MultiSurface><gml:surfaceMember><gml:Polygon><gml:exterior>"
            f"<gml:LinearRing><gml:posList>{ring(lat, lon)}</gml:posList></gml:LinearRing>"
            f"</gml:exterior></gml:Polygon></gml:surfaceMember></gml:MultiSurface></bldg:{tag}>")


def citygml(tmp_path: Path) -> Path:
    body = (
        '<core:cityObjectMember><bldg:Building gml:id="b1">'
        f'{polygon_xml("lod0FootPrint", 35.65, 139.75)}'
        "<uro:buildingIDAttribute><uro:BuildingIDAttribute><uro:buildingID>13101-bldg-1"
        "</uro:buildingID></uro:BuildingIDAttribute></uro:buildingIDAttribute>"
        "</bldg:Building></core:cityObjectMember>"
        '<core:cityObjectMember><bldg:Building gml:id="b2">'
        f'{polygon_xml("lod0RoofEdge", 35.66, 139.76)}'
        "</bldg:Building></core:cityObjectMember>"
        '<core:cityObjectMember><bldg:Building gml:id="b3"><bldg:consistsOfBuildingPart>'
        f'<bldg:BuildingPart gml:id="p1">{polygon_xml("lod0FootPrint", 35.67, 139.77)}'
        "</bldg:BuildingPart></bldg:consistsOfBuildingPart></bldg:Building>"
        "</core:cityObjectMember></core:CityModel>")
    path = tmp_path / "53394611_bldg_6697_op.gml"
    path.write_text(GML_HEAD + body, encoding="utf-8")
    return path


def test_citygml_footprints_are_read_lat_lon_and_reprojected(tmp_path: Path) -> None:
    buildings = read_buildings(citygml(tmp_path), "EPSG:6677")
    assert list(buildings.columns) == ["building_id", "geometry"]
    assert buildings["building_id"].tolist() == ["13101-bldg-1", "b2", "b3"]
    assert buildings.crs.to_epsg() == 6677
    back = Transformer.from_crs(6677, 4326, always_xy=True)
    lon, lat = back.transform(*buildings.geometry.iloc[0].centroid.coords[0])
    assert lat == pytest.approx(35.65005, abs=1e-5)
    assert lon == pytest.approx(139.75005, abs=1e-5)
    # 0.0001 deg is about 11 m north-south and 9 m east-west at 35.6 N
    assert 80 < buildings.geometry.iloc[0].area < 120


def test_citygml_with_entities_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.gml"
    path.write_text('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>',
                    encoding="utf-8")
    with pytest.raises(UserInputError, match=r"evil\.gml declares a DTD or XML entities"):
        read_buildings(path, None)


def test_vector_buildings_drop_other_attributes(tmp_path: Path) -> None:
    path = tmp_path / "kaoku.gpkg"
    gpd.GeoDataFrame({"家屋番号": ["K1", "K2"], "所有者": ["山田", "佐藤"]},
                     geometry=[box(0, 0, 5, 5), box(10, 0, 15, 5)], crs=6677).to_file(path)
    buildings = read_buildings(path, "EPSG:6677")
    assert list(buildings.columns) == ["building_id", "geometry"]
    assert buildings["building_id"].tolist() == ["K1", "K2"]


def test_missing_file_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(InputNotFound):
        read_buildings(tmp_path / "none.gpkg", None)


def test_real_plateau_samples(shared_data: Path) -> None:
    folder = shared_data / "plateau"
    sapporo = read_buildings(folder / "64413325_bldg_6697_op.gml", "EPSG:6680")
    yokosuka = read_buildings(folder / "52397519_bldg_6697_op.gml", "EPSG:6677")
    assert len(sapporo) == 25 and len(yokosuka) == 13
    assert sapporo.geometry.is_valid.all() and yokosuka.geometry.is_valid.all()
    assert sapporo.area.min() > 2 and sapporo.area.max() < 5000
    lon, lat = Transformer.from_crs(6677, 4326, always_xy=True).transform(
        *yokosuka.geometry.iloc[0].centroid.coords[0])
    assert 35.2 < lat < 35.3 and 139.7 < lon < 139.8
