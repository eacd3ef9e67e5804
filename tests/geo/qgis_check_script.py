"""Open a review GeoPackage and its .qgz in real QGIS (headless) and report what QGIS sees.

Run with the SYSTEM python that has PyQGIS (Debian ``python3-qgis``), not the venv:
``QT_QPA_PLATFORM=offscreen /usr/bin/python3 qgis_check_script.py OUT.gpkg OUT.qgz OUT.png``.
Prints one JSON object; the test asserts on it.
"""

import json
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (  # noqa: E402
    QgsApplication,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize  # noqa: E402
from qgis.PyQt.QtGui import QColor  # noqa: E402


def _edit_like_staff(gpkg: str) -> dict:
    """Set 調査状況/調査者/調査日 on the top candidate through QGIS's editing API and save."""
    from qgis.PyQt.QtCore import QDate

    layer = QgsVectorLayer(f"{gpkg}|layername=candidate_parcels", "edit", "ogr")
    feature = next(layer.getFeatures())
    fields = layer.fields()
    layer.startEditing()
    layer.changeAttributeValue(feature.id(), fields.indexOf("調査状況"), "課税対象")
    layer.changeAttributeValue(feature.id(), fields.indexOf("調査者"), "QGIS 太郎")
    layer.changeAttributeValue(feature.id(), fields.indexOf("調査日"), QDate(2025, 6, 1))
    committed = layer.commitChanges()
    parcel_id = feature["parcel_id"]
    errors = layer.commitErrors()
    del layer
    return {"committed": bool(committed), "parcel_id": parcel_id, "errors": errors}


def main(gpkg: str, qgz: str, png: str, ortho: str, edit: str = "") -> None:
    app = QgsApplication([], False)
    app.initQgis()
    report: dict = {"layers": {}, "project": {}}
    layers = []
    for name in ("missed", "coverage", "existing_buildings", "changes", "candidate_parcels",
                 "run_info"):
        layer = QgsVectorLayer(f"{gpkg}|layername={name}", name, "ogr")
        info: dict = {"valid": layer.isValid()}
        if layer.isValid():
            fields = layer.fields()
            info["features"] = layer.featureCount()
            info["renderer"] = layer.renderer().type() if layer.renderer() else None
            info["labels"] = bool(layer.labelsEnabled())
            info["widgets"] = {f.name(): layer.editorWidgetSetup(i).type()
                               for i, f in enumerate(fields)}
            info["aliases"] = {f.name(): layer.attributeAlias(i) for i, f in enumerate(fields)}
            info["types"] = {f.name(): f.typeName() for f in fields}
            info["defaults"] = {f.name(): layer.defaultValueDefinition(i).expression()
                                for i, f in enumerate(fields)}
            if layer.renderer() is not None and layer.renderer().type() == "categorizedSymbol":
                info["category_field"] = layer.renderer().classAttribute()
                info["categories"] = [str(c.value()) for c in layer.renderer().categories()]
            if layer.isSpatial():
                layers.append(layer)
        report["layers"][name] = info
    if ortho:
        raster = QgsRasterLayer(ortho, "ortho")
        report["ortho_valid"] = raster.isValid()
        if raster.isValid():
            layers.append(raster)
    settings = QgsMapSettings()
    top_first = ("candidate_parcels", "changes", "existing_buildings", "missed", "coverage",
                 "ortho")
    ordered = sorted(layers, key=lambda lyr: top_first.index(lyr.name()))
    settings.setLayers(ordered)
    settings.setDestinationCrs(ordered[0].crs())
    extent = None
    for lyr in ordered:
        if lyr.name() in ("coverage",):
            extent = lyr.extent()
    if extent is None:
        extent = ordered[0].extent()
    extent.scale(1.1)
    settings.setExtent(extent)
    settings.setOutputSize(QSize(900, 900))
    settings.setBackgroundColor(QColor(255, 255, 255))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    report["png_saved"] = bool(image.save(png, "png"))
    project = QgsProject.instance()
    report["project"]["read"] = bool(project.read(qgz))
    report["project"]["layers"] = {
        lyr.name(): {"valid": lyr.isValid(), "source": lyr.source(),
                     "renderer": (lyr.renderer().type() if hasattr(lyr, "renderer")
                                  and lyr.renderer() is not None else None)}
        for lyr in project.mapLayers().values()}
    report["project"]["crs"] = project.crs().authid()
    project.removeAllMapLayers()
    if edit:
        report["edit"] = _edit_like_staff(gpkg)
    print("QGIS_REPORT=" + json.dumps(report, ensure_ascii=False), flush=True)
    # PyQGIS can crash while tearing down; the report is already out, so leave at once.
    os._exit(0)


if __name__ == "__main__":
    main(*sys.argv[1:6])
