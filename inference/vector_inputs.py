"""Reading a run's vector inputs: parcels and existing buildings, in the grid's CRS.

Read before any inference runs, so a wrong ``chiban_column`` or ``encoding`` stops a run (and
`idou batch --check`) at once; what would surprise staff (repaired or dropped parcels, files
that miss the flights) is said through the run's ``log`` callback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd

from idou.inference.progress import LogFn


def read_vectors(parcels: Any, buildings: Any, crs: Any, grid: Any = None,
                 say: LogFn | None = None, encoding: str | None = None,
                 chiban_column: str | None = None
                 ) -> tuple[gpd.GeoDataFrame | None, gpd.GeoDataFrame | None]:
    """Read parcels and existing buildings in the grid's CRS (before any inference runs).

    With ``say``, repaired or dropped parcels, and parcels or buildings that all lie outside
    ``grid``, are reported as warnings.
    """
    parcel_frame = building_frame = None
    if parcels is not None:
        from idou.geo.vector.parcels import read_parcels

        paths = [Path(parcels)] if isinstance(parcels, str | Path) else [Path(p) for p in parcels]
        parcel_set = read_parcels(paths if len(paths) > 1 else paths[0], crs, encoding,
                                  chiban_column=chiban_column)
        parcel_frame = parcel_set.frame
        if say is not None:
            _report_parcels(parcel_set, ", ".join(p.name for p in paths), grid, say)
    if buildings is not None:
        from idou.geo.vector.buildings import read_buildings

        building_frame = read_buildings(Path(buildings), crs, encoding)
        if say is not None and grid is not None and len(building_frame) and \
                not building_frame.intersects(grid.footprint()).any():
            say("warning", f"none of the {len(building_frame)} buildings in "
                           f"{Path(buildings).name} overlap the flights, so changes are "
                           "classified as if no building stood there; check the buildings "
                           "file and its CRS.")
    return parcel_frame, building_frame


def _report_parcels(parcel_set: Any, names: str, grid: Any, say: LogFn) -> None:
    """Warn about repaired or dropped parcels and about parcels that miss the flights."""
    if parcel_set.repaired or parcel_set.n_dropped:
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(parcel_set.dropped.items()))
        say("warning", f"{names}: repaired {parcel_set.repaired} invalid parcel geometries and "
                       f"dropped {parcel_set.n_dropped}" + (f" ({reasons})" if reasons else "")
                       + "; check the parcel file if parcels are missing from the output.")
    for note in getattr(parcel_set, "notes", []):
        say("warning", note)
    frame = parcel_set.frame
    if grid is not None and len(frame) and not frame.intersects(grid.footprint()).any():
        say("warning", f"none of the {len(frame)} parcels in {names} overlap the flights, so no "
                       "candidate parcels can be listed; check the parcel file and its CRS.")
