"""Which existing files an idou command may replace: only files idou wrote, never an input.

Every file idou writes carries its provenance marker ``IDOU_WRITTEN_BY``: a GDAL metadata
item in GeoTIFFs, COGs and VRTs, a GeoPackage ``run_info`` table (review GeoPackages) or
dataset metadata item (other GeoPackages), a project property and the zip comment of a
``.qgz``, and a ``metadata_props`` entry in ONNX models (checked by the caller's
``is_ours``). :func:`check_replaceable` is the one check every writer makes before it writes:
an existing file is replaced only with ``--force``, only when it carries the marker, and
never when it is an input of the same run (same resolved path or same inode).
"""

from __future__ import annotations

import os
import sqlite3
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

from idou.errors import OutputConflict

MARKER_KEY = "IDOU_WRITTEN_BY"
MARKER_VALUE = "idou"
QGZ_COMMENT = f"{MARKER_KEY}={MARKER_VALUE}".encode()
_HEAD_BYTES = 1 << 20


def marker_tags() -> dict[str, str]:
    """The metadata item to put in a GDAL dataset (GeoTIFF, VRT, GeoPackage) idou writes."""
    return {MARKER_KEY: MARKER_VALUE}


def vrt_marker_xml() -> str:
    """The marker as a VRT ``<Metadata>`` element (read back by GDAL as a dataset tag)."""
    return f'  <Metadata><MDI key="{MARKER_KEY}">{MARKER_VALUE}</MDI></Metadata>'


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same existing file (resolved path or inode)."""
    try:
        if Path(a).resolve() == Path(b).resolve():
            return True
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def written_by_idou(path: Path) -> bool:
    """Whether ``path`` carries idou's provenance marker (the check its name's type asks for)."""
    check = {".gpkg": idou_geopackage, ".tif": idou_geotiff, ".tiff": idou_geotiff,
             ".vrt": idou_vrt, ".qgz": idou_qgis_project}.get(path.suffix.lower())
    return check is not None and check(path)


def _safely(check: Callable[[Path], bool], path: Path) -> bool:
    try:
        return check(path)
    except (OSError, ValueError, sqlite3.DatabaseError, zipfile.BadZipFile):
        return False


def idou_geopackage(path: Path) -> bool:
    """A GeoPackage idou wrote (``run_info`` table or the marker in its metadata)."""
    return _safely(_gpkg_is_ours, path)


def idou_geotiff(path: Path) -> bool:
    """A GeoTIFF/COG idou wrote (whatever its name: a GeoPackage named .tif is not one)."""
    return _safely(_tiff_is_ours, path)


def idou_vrt(path: Path) -> bool:
    """A VRT idou wrote."""
    return _safely(_vrt_is_ours, path)


def idou_qgis_project(path: Path) -> bool:
    """A ``.qgz`` idou wrote (or staff saved again from one)."""
    return _safely(_qgz_is_ours, path)


def check_replaceable(path: Path, *, force: bool, what: str,
                      inputs: Iterable[str | Path] = (),
                      is_ours: Callable[[Path], bool] | None = None) -> None:
    """Refuse to write ``path`` unless it is absent, or ``force`` and idou wrote it.

    Args:
        path: the file about to be written.
        force: the user passed ``--force``.
        what: how the user names this output in the sentence (e.g. ``--prob``).
        inputs: the run's input files; ``path`` is never one of them, even with ``force``.
        is_ours: the marker check for this file type (default :func:`written_by_idou`).

    Raises:
        UserInputError: the file exists and may not be replaced (one sentence, the fix).
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    for source in inputs:
        if same_file(path, source):
            raise OutputConflict(f"{path} is also an input of this run ({source}); idou never "
                                 f"overwrites its inputs, choose another {what} path.")
    if path.is_dir():
        raise OutputConflict(f"{path} is a folder; choose a file name as the {what} path.")
    if not force:
        raise OutputConflict(f"{path} already exists; pass --force to replace it (only files "
                             f"idou wrote are replaced) or choose another {what} path.")
    if not (is_ours or written_by_idou)(path):
        raise OutputConflict(f"{path} was not written by idou, so --force will not replace it; "
                             f"move it away or choose another {what} path.")


def is_review_geopackage(path: Path) -> bool:
    """Whether ``path`` is a review GeoPackage idou wrote (it has the ``run_info`` table).

    Raises:
        UserInputError: another program holds the file locked (QGIS editing it).
    """
    try:
        leave_wal_mode(path)
        return _sqlite_header(path) and "run_info" in _tables(path)
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            raise OutputConflict(f"{path} is open in another program ({exc}); save and close "
                                 "it in QGIS, then run again.") from exc
        return False
    except (OSError, sqlite3.DatabaseError):
        return False


def leave_wal_mode(path: Path) -> None:
    """Put a GeoPackage that QGIS left in WAL mode back to a rollback journal.

    QGIS switches a GeoPackage to WAL when it edits it and leaves it so after closing; every
    read-only connection then leaves ``-wal``/``-shm`` files beside it, which look exactly like
    QGIS still editing it. Only when neither exists (nobody has the file open) is the journal mode
    switched back; the data is unchanged.
    """
    try:
        with open(path, "rb") as fh:
            header = fh.read(20)
    except OSError:
        return
    if len(header) < 20 or header[:16] != b"SQLite format 3\x00" or header[18] != 2:
        return
    if Path(f"{path}-wal").exists() or Path(f"{path}-shm").exists():
        return
    con = sqlite3.connect(path, timeout=1.0)
    try:
        con.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.Error:
        pass  # held by someone after all: the checks that follow refuse it
    finally:
        con.close()


def _sqlite_header(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(16) == b"SQLite format 3\x00"


def _tables(path: Path) -> set[str]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        con.close()


def _gpkg_is_ours(path: Path) -> bool:
    if not _sqlite_header(path):
        return False
    tables = _tables(path)
    if "run_info" in tables:
        return True
    if "gpkg_metadata" not in tables:
        return False
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT metadata FROM gpkg_metadata").fetchall()
    finally:
        con.close()
    return any(_has_mdi(str(r[0])) for r in rows)


def _has_mdi(text: str) -> bool:
    return f'<MDI key="{MARKER_KEY}">{MARKER_VALUE}</MDI>' in text


def _tiff_is_ours(path: Path) -> bool:
    import rasterio

    with open(path, "rb") as fh:
        if fh.read(4) not in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return False
    try:
        with rasterio.open(path) as ds:
            tags = ds.tags()
    except rasterio.errors.RasterioError:
        return False
    # idou's COGs and samples from before the marker carry idou_scale / IDOU_SYNTHETIC
    return tags.get(MARKER_KEY) == MARKER_VALUE or "idou_scale" in tags or \
        "IDOU_SYNTHETIC" in tags


def _vrt_is_ours(path: Path) -> bool:
    """Read as text, never opened by GDAL: a hostile VRT could reach the network."""
    with open(path, "rb") as fh:
        head = fh.read(_HEAD_BYTES).decode("utf-8", errors="replace")
    return head.lstrip().startswith("<VRTDataset") and _has_mdi(head)


def _qgz_is_ours(path: Path) -> bool:
    with zipfile.ZipFile(path) as archive:
        if archive.comment == QGZ_COMMENT:
            return True
        names = [n for n in archive.namelist() if n.lower().endswith(".qgs")]
        if len(names) != 1 or archive.getinfo(names[0]).file_size > 64 * _HEAD_BYTES:
            return False
        text = archive.read(names[0]).decode("utf-8", errors="replace")
    # a project saved again in QGIS keeps idou's project property, not the zip comment
    return f"<{MARKER_KEY}" in text
