"""Which journal blocks a re-delivered sheet invalidates.

A batch run records, for every file of both flights (sheets, world files, sidecars), its size,
modification time and a hash of sampled bytes (the header, the end and evenly spaced 16 KiB
chunks between: 256 KiB read per file whatever its size, and a re-exported or re-copied sheet
changes it). On
resume, the blocks that overlap a file whose fingerprint changed are computed again, so a sheet
replaced at the same path never leaves blocks computed from the old one. A changed AOI file
sends every block back; changed parcel or building files make the GeoPackage be written again.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import shapely

from idou.inference.blocks import Block

META_KEY = "sheet_fingerprints"
VECTORS_KEY = "vector_fingerprints"
_CHUNK = 1 << 14
_SAMPLES = 16


def fingerprint_file(path: Path) -> dict[str, object]:
    """Size, mtime (ns) and the sha256 of the first, last and 14 evenly spaced 16 KiB chunks
    (of the whole file when smaller than that)."""
    stat = path.stat()
    size = stat.st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        if size <= _CHUNK * _SAMPLES:
            digest.update(fh.read())
        else:
            for k in range(_SAMPLES):
                fh.seek((size - _CHUNK) * k // (_SAMPLES - 1))
                digest.update(fh.read(_CHUNK))
    return {"bytes": size, "mtime_ns": stat.st_mtime_ns, "sampled_sha256": digest.hexdigest()}


def fingerprint_sources(sources: Iterable[Any]) -> dict[str, dict[str, object]]:
    """Fingerprints of every existing file of ``sources`` (``RasterSource``), by resolved path."""
    out: dict[str, dict[str, object]] = {}
    for source in sources:
        for f in source.files:
            p = Path(f)
            if not str(p).startswith("/vsi") and p.is_file():
                out[str(p.resolve())] = fingerprint_file(p)
    return out


def fingerprint_paths(paths: Iterable[Path | None]) -> dict[str, dict[str, object]]:
    """Fingerprints of vector files (with their same-stem sidecars: .dbf, .shx, .prj, .cpg)."""
    out: dict[str, dict[str, object]] = {}
    for path in paths:
        if path is None or not Path(path).is_file():
            continue
        p = Path(path)
        for f in [p, *sorted(p.parent.glob(p.stem + ".*"))]:
            if f.is_file() and f.suffix.lower() in _SIDECARS | {p.suffix.lower()}:
                out[str(f.resolve())] = fingerprint_file(f)
    return out


_SIDECARS = {".dbf", ".shx", ".prj", ".cpg", ".qix"}


def dumps(fingerprints: dict[str, dict[str, object]]) -> str:
    """The journal meta value."""
    return json.dumps(fingerprints, sort_keys=True)


def changed_files(recorded: str | None, now: dict[str, dict[str, object]]) -> list[str] | None:
    """Files whose fingerprint differs from the journal's; None when the journal recorded none
    (a run started by an older idou: everything must be taken as changed)."""
    if recorded is None:
        return None
    try:
        old = json.loads(recorded)
    except ValueError:
        return None
    return sorted(p for p in set(old) | set(now) if old.get(p) != now.get(p))


def stale_blocks(blocks: Iterable[Block], grid: Any, changed: list[str] | None,
                 sources: Iterable[Any] = ()) -> list[str]:
    """Ids of the blocks (with their halo) that overlap one of the ``changed`` files.

    A changed file that cannot be placed (a world file, a sidecar, an unreadable raster)
    invalidates every block: better computed twice than scored on an old sheet. A sheet that
    records no CRS is placed in the CRS of the flight (``sources``) it belongs to.
    """
    blocks = list(blocks)
    flight_crs = {str(Path(f).resolve()): s.crs for s in sources for f in s.files}
    if changed is None:
        return [b.id for b in blocks]
    if not changed:
        return []
    areas = []
    for path in changed:
        area = _footprint(Path(path), grid.crs, flight_crs.get(path))
        if area is None:
            return [b.id for b in blocks]
        areas.append(area)
    union = shapely.union_all(areas)
    stale = []
    for b in blocks:
        box = shapely.box(*grid.window_bounds(b.halo_window(grid.width, grid.height)))
        if box.intersects(union):
            stale.append(b.id)
    return stale


def _footprint(path: Path, crs: Any, fallback_crs: Any) -> Any | None:
    """The raster's footprint in ``crs`` (its own CRS, else ``fallback_crs``), or None."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioError
    from rasterio.warp import transform_bounds

    if not path.is_file():
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                src_crs = ds.crs or fallback_crs
                if src_crs is None or ds.transform.is_identity:
                    return None
                bounds = transform_bounds(src_crs, crs, *ds.bounds, densify_pts=21)
    except (RasterioError, ValueError):
        return None
    return shapely.box(*bounds)
