"""Existing buildings (家屋現況図) from GeoPackage, Shapefile, GeoJSON or PLATEAU CityGML.

The result always has two columns, ``building_id`` and ``geometry`` (polygons in the
flight CRS); every other attribute is dropped (家屋 registers carry owner data).

PLATEAU ``bldg`` CityGML: the footprint is ``bldg:lod0FootPrint``, else
``bldg:lod0RoofEdge``, else the 2-D outline of ``bldg:lod1Solid``; a building made of
``bldg:BuildingPart`` s gets the union of its parts. Coordinates in EPSG:6697 (and any CRS
whose first axis is northing or latitude) are read in their axis order and reprojected.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeET
import geopandas as gpd
import shapely
from defusedxml import DefusedXmlException
from pyproj import CRS
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from idou.errors import InputNotFound, UnreadableInput, UnusableCRS, UserInputError
from idou.geo.files.network import check_local_source
from idou.geo.vector.parcels import clean_polygons, detect_shapefile_encoding
from idou.geo.vector.vector_files import read_vector, vector_exists

GML = "{http://www.opengis.net/gml}"
BLDG2 = "{http://www.opengis.net/citygml/building/2.0}"
BLDG_NAMESPACES = (BLDG2, "{http://www.opengis.net/citygml/building/1.0}",
                   "{http://www.opengis.net/citygml/building/3.0}")
URO_ID_TAGS = ("buildingID",)
ID_CANDIDATES = ("building_id", "buildingID", "bldg_id", "家屋番号", "家屋ID", "id", "ID",
                 "gml_id", "fid")
MAX_GML_BYTES = 1024 * 1024 * 1024
PLATEAU_ATTRIBUTION = ("出典：3D都市モデル（Project PLATEAU）（国土交通省）の建築物 LOD0 外形を"
                       "idou で加工して作成")


def read_buildings(path: Path, target_crs: object | None,
                   encoding: str | None = None) -> gpd.GeoDataFrame:
    """Read existing building footprints.

    Args:
        path: GeoPackage, Shapefile, GeoJSON or PLATEAU CityGML (``.gml``).
        target_crs: CRS of the flight; None keeps the source CRS.
        encoding: attribute encoding of a Shapefile without ``.cpg``.

    Returns:
        GeoDataFrame with ``building_id`` (str) and polygon ``geometry``.

    Raises:
        UserInputError: missing/unreadable file, no CRS, no footprints.
    """
    path = Path(path)
    if not vector_exists(path):
        raise InputNotFound(f"{path} does not exist; check the building file path.")
    if path.suffix.lower() in (".gml", ".xml"):
        frame = read_citygml_buildings(path)
    else:
        frame = _read_vector(path, encoding)
    frame, _, _ = clean_polygons(frame)
    if frame.empty:
        raise UserInputError(f"{path} has no building polygons; check the building file.")
    if target_crs is not None:
        frame = frame.to_crs(target_crs)
    out = gpd.GeoDataFrame(frame[["building_id", "geometry"]].reset_index(drop=True),
                           geometry="geometry", crs=frame.crs)
    if path.suffix.lower() in (".gml", ".xml"):
        out.attrs["attribution"] = PLATEAU_ATTRIBUTION
    return out


def _read_vector(path: Path, encoding: str | None) -> gpd.GeoDataFrame:
    check_local_source(path, "the buildings")
    if encoding is None and path.suffix.lower() == ".shp":
        encoding = detect_shapefile_encoding(path)
    frame = read_vector(path, "building", encoding,
                        fix="pass a GeoPackage, Shapefile, GeoJSON or PLATEAU CityGML")
    if frame.crs is None:
        raise UnusableCRS(f"{path} has no CRS (a Shapefile needs its .prj); add one.")
    id_column = next((c for c in ID_CANDIDATES if c in frame.columns), None)
    ids = (frame[id_column].astype(str) if id_column is not None
           else [f"B{i + 1:06d}" for i in range(len(frame))])
    return gpd.GeoDataFrame({"building_id": list(ids)}, geometry=frame.geometry, crs=frame.crs)


def read_citygml_buildings(path: Path) -> gpd.GeoDataFrame:
    """Footprints of PLATEAU/CityGML ``bldg:Building`` features in the file's own CRS."""
    size = path.stat().st_size
    if size > MAX_GML_BYTES:
        raise UserInputError(f"{path} is {size / 2**20:.0f} MiB, over idou's 1024 MiB limit "
                             "for one CityGML file; use the per-mesh PLATEAU files.")
    try:
        root = SafeET.parse(path, forbid_dtd=True, forbid_entities=True,
                            forbid_external=True).getroot()
    except DefusedXmlException as exc:
        raise UserInputError(f"{path} declares a DTD or XML entities, which idou refuses for "
                             "safety; use the CityGML file as published.") from exc
    except ParseError as exc:
        raise UnreadableInput(f"{path} is not well-formed XML ({exc}); re-download it.") from exc
    if root is None:
        raise UserInputError(f"{path} is empty; re-download it.")
    crs = _citygml_crs(root, path)
    lat_first = _northing_first(crs)
    try:
        ids, geoms = _footprints(root, lat_first)
    except ValueError as exc:
        raise UserInputError(f"{path.name} is not valid CityGML: it has a {exc}; use the "
                             "PLATEAU file as published (coordinates with a decimal point).") \
            from exc
    if not geoms:
        raise UserInputError(f"{path} has no bldg:Building footprint (lod0 or lod1); "
                             "pass a PLATEAU bldg file.")
    frame_crs = CRS.from_epsg(6668) if crs.to_epsg() == 6697 else crs
    if frame_crs.is_compound:
        frame_crs = CRS(frame_crs.sub_crs_list[0])
    return gpd.GeoDataFrame({"building_id": ids}, geometry=geoms, crs=frame_crs)


def _footprints(root: Element, lat_first: bool) -> tuple[list[str], list[BaseGeometry]]:
    """Ids and footprints of the buildings under ``root``.

    Raises:
        ValueError: a coordinate that is not a number or a bad ``srsDimension``.
    """
    ids: list[str] = []
    geoms: list[BaseGeometry] = []
    for building in _iter_buildings(root):
        footprint = _footprint(building, lat_first)
        if footprint is None:
            for part in building.iter():
                if part.tag.endswith("}BuildingPart"):
                    part_footprint = _footprint(part, lat_first)
                    if part_footprint is not None:
                        footprint = (part_footprint if footprint is None
                                     else shapely.union(footprint, part_footprint))
        if footprint is None or footprint.is_empty:
            continue
        ids.append(_building_id(building))
        geoms.append(footprint)
    return ids, geoms


def _citygml_crs(root: Element, path: Path) -> CRS:
    for element in root.iter():
        srs = element.get("srsName")
        if srs:
            try:
                return CRS.from_user_input(_srs_to_user_input(srs))
            except Exception as exc:  # noqa: BLE001 - pyproj raises several types
                raise UnusableCRS(f"{path} has srsName {srs!r} that idou cannot read; "
                                  "use a file in EPSG:6697.") from exc
    return CRS.from_epsg(6697)


def _srs_to_user_input(srs: str) -> str:
    tail = srs.rstrip("/").split("/")[-1].split(":")[-1]
    return f"EPSG:{tail}" if tail.isdigit() else srs


def _northing_first(crs: CRS) -> bool:
    axes = crs.axis_info
    return bool(axes) and axes[0].direction.lower() in ("north", "south")


def _iter_buildings(root: Element) -> Iterator[Element]:
    for ns in BLDG_NAMESPACES:
        yield from root.iter(f"{ns}Building")


def _footprint(feature: Element, lat_first: bool) -> BaseGeometry | None:
    for prop in ("lod0FootPrint", "lod0RoofEdge"):
        for child in feature:
            if child.tag.endswith("}" + prop):
                polygons = _polygons(child, lat_first)
                if polygons:
                    return shapely.union_all(polygons)
    for child in feature:
        if child.tag.endswith("}lod1Solid"):
            polygons = [p for p in _polygons(child, lat_first) if p.area > 0]
            if polygons:
                return shapely.union_all(polygons)
    return None


def _polygons(element: Element, lat_first: bool) -> list[Polygon]:
    out: list[Polygon] = []
    for polygon in element.iter(f"{GML}Polygon"):
        exterior = polygon.find(f"{GML}exterior/{GML}LinearRing")
        if exterior is None:
            continue
        shell = _ring(exterior, lat_first)
        if shell is None:
            continue
        holes = [h for ring in polygon.findall(f"{GML}interior/{GML}LinearRing")
                 if (h := _ring(ring, lat_first)) is not None]
        candidate = Polygon(shell, holes)
        if not candidate.is_valid:
            candidate = shapely.make_valid(candidate)
        out.append(candidate)
    return out


def _ring(ring: Element, lat_first: bool) -> list[tuple[float, float]] | None:
    pos_list = ring.find(f"{GML}posList")
    if pos_list is not None and pos_list.text:
        dim_text = pos_list.get("srsDimension", "3")
        if dim_text.strip() not in ("2", "3"):
            raise ValueError(f'srsDimension="{dim_text}" (a posList has 2 or 3 values a point)')
        dim = int(dim_text)
        values = [_number(v) for v in pos_list.text.split()]
        coords = [tuple(values[i:i + 2]) for i in range(0, len(values) - dim + 1, dim)]
    else:
        coords = [tuple(_number(v) for v in p.text.split()[:2])
                  for p in ring.findall(f"{GML}pos") if p.text]
    if len(coords) < 4:
        return None
    return [(b, a) if lat_first else (a, b) for a, b in coords]


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"coordinate {text!r} that is not a number (a comma as decimal "
                         "point?)") from None
    if not math.isfinite(value):
        raise ValueError(f"coordinate {text!r} that is not a finite number")
    return value


def _building_id(building: Element) -> str:
    for element in building.iter():
        if element.tag.endswith("}buildingID") and element.text:
            return element.text.strip()
    return building.get(f"{GML}id") or building.get("id") or ""
