"""Probabilities to decided changes: polygons, the building map's evidence, 新築/増築/滅失/建替,
and the candidate parcels they fall on."""
