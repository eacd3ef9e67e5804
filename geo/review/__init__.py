"""The review GeoPackage staff open in QGIS (styles, project, fields), keeping their
edits on re-runs, and what is read back from it (summary, harvest)."""
