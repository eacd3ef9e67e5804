"""A QGIS project (``.qgz``) beside the review GeoPackage, so staff open one file.

The project holds the GeoPackage's layers (styled with the same QML as ``layer_styles``)
and the two orthophotos (after shown, before hidden beneath it). Files beside or below the
project file are referenced relative to it, so the folder can be moved or copied to a shared
drive as a whole; flights elsewhere are referenced by their absolute path, so they keep
opening after the folder moves as long as they stay where they are.
A ``.qgz`` is a zip holding one ``.qgs`` XML document.
"""

from __future__ import annotations

import os
import uuid
import zipfile
from collections.abc import Sequence
from pathlib import Path
from xml.etree import ElementTree as ET

from pyproj import CRS

from idou.geo.files.owned_outputs import MARKER_KEY, MARKER_VALUE, QGZ_COMMENT
from idou.geo.review.qgis_styles import QGIS_VERSION, load_qml

DISPLAY_NAMES = {
    "candidate_parcels": "調査対象の筆 (candidate_parcels)",
    "changes": "異動 (changes)",
    "existing_buildings": "既存家屋 (existing_buildings)",
    "unmapped_buildings": "未評価家屋の候補 (unmapped_buildings)",
    "coverage": "判読範囲 (coverage)",
    "missed": "見逃し入力 (missed)",
    "run_info": "実行情報 (run_info)",
}
TABLES = ("run_info",)
STYLE_ELEMENTS = ("renderer-v2", "labeling", "fieldConfiguration", "aliases", "defaults",
                  "editable", "previewExpression", "layerGeometryType")


def write_qgis_project(target: Path, *, gpkg: Path, layers: Sequence[str], crs: object,
                       orthophotos: tuple[Path, Path] | None = None,
                       extent: tuple[float, float, float, float] | None = None) -> Path:
    """Write ``target`` (.qgz) referencing ``gpkg``'s ``layers`` and the orthophotos.

    Args:
        target: the project path (``.qgz``), normally beside ``gpkg``.
        gpkg: the review GeoPackage.
        layers: its vector layers, top first (``run_info`` is added as a table as well).
        crs: the project CRS (the flight's).
        orthophotos: (before, after) rasters or None; a folder of sheets or a ``.txt`` list
            is left out (QGIS cannot open it as one layer; build a VRT to include it).
        extent: (xmin, ymin, xmax, ymax) to open at; None lets QGIS choose.

    Returns:
        ``target``.
    """
    target = Path(target)
    base = target.parent
    srs = _spatialrefsys(crs)
    root = ET.Element("qgis", {"projectname": f"idou {Path(gpkg).stem}",
                               "version": QGIS_VERSION})
    ET.SubElement(root, "homePath", {"path": ""})
    ET.SubElement(root, "title").text = f"異動判読 {Path(gpkg).stem}"
    project_crs = ET.SubElement(root, "projectCrs")
    if srs is not None:
        project_crs.append(srs)
    tree = ET.SubElement(root, "layer-tree-group")
    ET.SubElement(tree, "customproperties")
    project_layers = ET.SubElement(root, "projectlayers")
    order = ET.SubElement(root, "layerorder")
    entries = _layer_entries(Path(gpkg), layers, base, srs, orthophotos)
    for key, name, source, provider, visible, element in entries:
        layer_id = f"{key}_{uuid.uuid5(uuid.NAMESPACE_URL, source).hex[:12]}"
        element.find("id").text = layer_id  # type: ignore[union-attr]
        project_layers.append(element)
        ET.SubElement(order, "layer", {"id": layer_id})
        node = ET.SubElement(tree, "layer-tree-layer", {
            "id": layer_id, "name": name, "source": source, "providerKey": provider,
            "checked": "Qt::Checked" if visible else "Qt::Unchecked", "expanded": "1"})
        ET.SubElement(node, "customproperties")
    _add_properties(root)
    if extent is not None:
        _add_canvas(root, extent, crs if srs is not None else None)
    xml = ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
           + ET.tostring(root, encoding="unicode"))
    _save_qgz(target, xml)
    return target


_Entry = tuple[str, str, str, str, bool, ET.Element]  # key, name, source, provider, visible, xml


def _layer_entries(gpkg: Path, layers: Sequence[str], base: Path, srs: ET.Element | None,
                   orthophotos: tuple[Path, Path] | None) -> list[_Entry]:
    """The project's layers, top first: the GeoPackage's, its tables, then the orthophotos
    QGIS can open (after shown, before hidden), each with paths relative to ``base``."""
    entries: list[_Entry] = []
    for layer in [*layers, *(t for t in TABLES if t not in layers)]:
        source = f"{_relative(gpkg, base)}|layername={layer}"
        element = (_table_layer(layer, source) if layer in TABLES
                   else _vector_layer(layer, source, srs))
        entries.append((layer, DISPLAY_NAMES.get(layer, layer), source, "ogr", True, element))
    if orthophotos is not None:
        for label, path, visible in (("今回オルソ", orthophotos[1], True),
                                     ("前回オルソ", orthophotos[0], False)):
            if not _opens_as_raster(Path(path)):
                continue
            source = _relative(Path(path), base)
            name = f"{label} ({Path(path).name})"
            entries.append((f"ortho_{label}", name, source, "gdal", visible,
                            _raster_layer(name, source)))
    return entries


def _add_properties(root: ET.Element) -> None:
    """Relative paths, projections on, and idou's marker (kept when staff save in QGIS)."""
    properties = ET.SubElement(root, "properties")
    paths = ET.SubElement(properties, "Paths")
    ET.SubElement(paths, "Absolute", {"type": "bool"}).text = "false"
    spatial = ET.SubElement(properties, "SpatialRefSys")
    ET.SubElement(spatial, "ProjectionsEnabled", {"type": "int"}).text = "1"
    marker = ET.SubElement(properties, "idou")  # kept when staff save the project in QGIS
    ET.SubElement(marker, MARKER_KEY, {"type": "QString"}).text = MARKER_VALUE


def _add_canvas(root: ET.Element, extent: tuple[float, float, float, float],
                crs: object | None) -> None:
    """The map canvas opening at ``extent`` (in ``crs``, when the project has one)."""
    canvas = ET.SubElement(root, "mapcanvas", {"name": "theMapCanvas"})
    ET.SubElement(canvas, "units").text = "meters"
    box = ET.SubElement(canvas, "extent")
    for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), extent, strict=True):
        ET.SubElement(box, tag).text = repr(float(value))
    destination = ET.SubElement(canvas, "destinationsrs")
    if crs is not None:
        destination.append(_spatialrefsys(crs))  # type: ignore[arg-type]


def _save_qgz(target: Path, xml: str) -> None:
    """Write ``xml`` as ``target`` (a zipped ``.qgs``) atomically."""
    temp = target.with_name(f".{target.stem}.{uuid.uuid4().hex[:8]}.tmp.qgz")
    try:
        with zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(f"{target.stem}.qgs", xml.encode("utf-8"))
            archive.comment = QGZ_COMMENT
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def _opens_as_raster(path: Path) -> bool:
    """QGIS opens one raster file (GeoTIFF, COG, VRT); a folder of sheets or a list does not."""
    return not path.is_dir() and path.suffix.lower() not in (".txt", ".lst", "")


def _relative(path: Path, base: Path) -> str:
    """``./…`` for a file beside or below ``base``; else its absolute path.

    A path climbing out of the folder (``../flights/2025.tif``) would break when the folder
    is moved on its own, while the absolute path keeps reaching the flights where they are.
    """
    resolved, folder = Path(path).resolve(), Path(base).resolve()
    if not resolved.is_relative_to(folder):
        return resolved.as_posix()
    return "./" + resolved.relative_to(folder).as_posix()


def _spatialrefsys(crs: object) -> ET.Element | None:
    if crs is None:
        return None
    parsed = CRS.from_user_input(crs)
    element = ET.Element("spatialrefsys", {"nativeFormat": "Wkt"})
    ET.SubElement(element, "wkt").text = parsed.to_wkt()
    authority = parsed.to_authority()
    ET.SubElement(element, "authid").text = ":".join(authority) if authority else ""
    ET.SubElement(element, "description").text = parsed.name
    ET.SubElement(element, "geographicflag").text = "true" if parsed.is_geographic else "false"
    return element


def _vector_layer(layer: str, source: str, srs: ET.Element | None) -> ET.Element:
    element = ET.Element("maplayer", {"type": "vector", "geometry": "Polygon",
                                      "wkbType": "MultiPolygon", "styleCategories":
                                      "AllStyleCategories"})
    ET.SubElement(element, "id")
    ET.SubElement(element, "datasource").text = source
    ET.SubElement(element, "layername").text = DISPLAY_NAMES.get(layer, layer)
    if srs is not None:
        holder = ET.SubElement(element, "srs")
        holder.append(ET.fromstring(ET.tostring(srs)))
    ET.SubElement(element, "provider", {"encoding": "UTF-8"}).text = "ogr"
    try:
        style = ET.fromstring(load_qml(layer).split("\n", 1)[1])
    except FileNotFoundError:
        return element
    element.set("labelsEnabled", style.get("labelsEnabled", "0"))
    for tag in STYLE_ELEMENTS:
        child = style.find(tag)
        if child is not None:
            element.append(child)
    return element


def _table_layer(layer: str, source: str) -> ET.Element:
    element = ET.Element("maplayer", {"type": "vector", "geometry": "No geometry",
                                      "wkbType": "NoGeometry"})
    ET.SubElement(element, "id")
    ET.SubElement(element, "datasource").text = source
    ET.SubElement(element, "layername").text = DISPLAY_NAMES.get(layer, layer)
    ET.SubElement(element, "provider", {"encoding": "UTF-8"}).text = "ogr"
    return element


def _raster_layer(name: str, source: str) -> ET.Element:
    element = ET.Element("maplayer", {"type": "raster"})
    ET.SubElement(element, "id")
    ET.SubElement(element, "datasource").text = source
    ET.SubElement(element, "layername").text = name
    ET.SubElement(element, "provider").text = "gdal"
    return element
