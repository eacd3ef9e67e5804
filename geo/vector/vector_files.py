"""Open the vector files users give (parcels, buildings, AOI): one layer with geometry, or a
one-sentence :class:`UserInputError`.

A file is given as ``path`` or, to pick one layer of a GeoPackage with several, as
``path.gpkg:layer``. A CSV or a GeoPackage table without geometry, a file with several layers
and no layer named, an unknown ``--encoding`` and attributes in another encoding than the one
given or recorded (``.cpg``) are refused with the file's name and the fix. Heights (Z) are
dropped: idou works in plan.
"""

from __future__ import annotations

import codecs
import warnings
from pathlib import Path

import geopandas as gpd
import pyogrio
import shapely

from idou.errors import InputNotFound, InvalidOption, UnreadableInput, UserInputError

LAYER_HINT = "path.gpkg:layer"


def split_layer(spec: str | Path) -> tuple[Path, str | None]:
    """``"parcels.gpkg:筆"`` → (``parcels.gpkg``, ``"筆"``); a plain existing path has no layer.

    The colon counts as a layer separator only when the path with it does not exist and the part
    before it does (so Windows drive letters and file names with colons keep working).
    """
    path = Path(spec)
    if path.exists() or ":" not in path.name:
        return path, None
    name, _, layer = path.name.rpartition(":")
    base = path.with_name(name)
    if name and layer and base.exists():
        return base, layer
    return path, None


def vector_exists(spec: str | Path) -> bool:
    """Whether ``spec`` (``path`` or ``path.gpkg:layer``) names an existing file."""
    return split_layer(spec)[0].exists()


def check_encoding(encoding: str | None) -> None:
    """Refuse an ``--encoding`` that Python does not know, before anything is read."""
    if encoding is None:
        return
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise InvalidOption(
            f"--encoding {encoding} is not an encoding idou knows (in FLIGHT.toml: encoding); "
            "use cp932 for Shift_JIS files or utf-8.") from None


def read_vector(spec: str | Path, what: str, encoding: str | None = None, *,
                fix: str = "pass a GeoPackage, Shapefile or GeoJSON with polygons"
                ) -> gpd.GeoDataFrame:
    """Read the one geometry layer of a vector file (or the layer ``path.gpkg:layer`` names).

    Args:
        spec: the file, or ``path.gpkg:layer``.
        what: what the file is for, in messages ("parcel", "building", "AOI").
        encoding: attribute encoding (e.g. ``cp932``); None lets GDAL decide (``.cpg``).
        fix: what to pass instead, ending the sentence of an unreadable file.

    Raises:
        UserInputError: missing or unreadable file, no geometry layer, several layers and none
            named, unknown layer or encoding, attributes not in the encoding.
    """
    check_encoding(encoding)
    path, layer = split_layer(spec)
    if not path.exists():
        raise InputNotFound(f"{what} file {path.name} does not exist; check the path.")
    layer = _geometry_layer(path, layer, what, fix)
    frame = _read_layer(path, layer, what, encoding, fix)
    if "geometry" in frame and frame.geometry.has_z.any():  # heights (CAD exports): plan only
        frame = frame.set_geometry(shapely.force_2d(frame.geometry.values), crs=frame.crs)
    return frame


def _geometry_layer(path: Path, layer: str | None, what: str, fix: str) -> str:
    """The layer to read: the one named (which must have geometry), else the only one with
    geometry."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            layers = [(str(n), t) for n, t in pyogrio.list_layers(path)]
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise UnreadableInput(f"{what} file {path.name} cannot be read as a vector file "
                              f"({_first_line(exc)}); {fix}.") from exc
    spatial = [n for n, t in layers if t is not None]
    if layer is not None:
        if layer not in dict(layers):
            raise UserInputError(
                f"{what} file {path.name} has no layer {layer!r} (layers: "
                f"{', '.join(n for n, _ in layers) or 'none'}); check the name after the colon.")
        if layer not in spatial:
            raise UserInputError(
                f"layer {layer!r} of {what} file {path.name} has no geometry (a table only); "
                f"name a layer with polygons ({', '.join(spatial) or 'there is none'}).")
    elif not spatial:
        raise UserInputError(
            f"{what} file {path.name} holds no geometry (a table such as a CSV or a GeoPackage "
            f"without a geometry layer); {fix}.")
    elif len(spatial) > 1:
        raise UserInputError(
            f"{what} file {path.name} has several layers ({', '.join(spatial)}); name one as "
            f"{path.name}:{spatial[0]} ({LAYER_HINT}).")
    else:
        layer = spatial[0]
    return layer


def _read_layer(path: Path, layer: str, what: str, encoding: str | None,
                fix: str) -> gpd.GeoDataFrame:
    """Read ``layer``; GDAL's errors and undecodable attributes as one sentence."""
    try:
        with warnings.catch_warnings():  # GDAL's warnings: the errors below say it in one line
            warnings.simplefilter("ignore")
            frame = pyogrio.read_dataframe(path, layer=layer, encoding=encoding)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise UnreadableInput(f"{what} file {path.name} cannot be read as a vector file "
                              f"({_first_line(exc)}); {fix}.") from exc
    except UnicodeDecodeError as exc:
        told = (f"--encoding {encoding}" if encoding else
                "the encoding its .cpg names" if _cpg(path) else "UTF-8")
        raise UserInputError(
            f"{what} file {path.name} has attributes that are not in {told}; pass the right "
            "--encoding (e.g. cp932; in FLIGHT.toml: encoding)"
            + (" or fix its .cpg" if _cpg(path) and not encoding else "") + ".") from exc
    return frame


def _cpg(path: Path) -> bool:
    return path.suffix.lower() == ".shp" and any(
        path.with_suffix(s).exists() for s in (".cpg", ".CPG"))


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
