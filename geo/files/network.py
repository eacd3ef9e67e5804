"""No network sources unless asked: idou runs on closed networks (LGWAN) and reads local files.

GDAL reads from the network through ``/vsicurl/`` and its other ``/vsi*`` handlers, URLs,
connection strings (``WMS:``, ``PG:``, ...), VRTs whose sources are any of these, and OGR VRTs
(which can name any data source). Every raster and vector input is checked here before GDAL
opens it; a network source is refused with one sentence and no connection is attempted.
``allow_network_sources()`` (``--allow-network``, FLIGHT.toml ``allow_network = true``) lifts
the check for one command.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from idou.errors import UserInputError

_ALLOWED: contextvars.ContextVar[bool] = contextvars.ContextVar("idou_allow_network",
                                                                default=False)
_NETWORK_VSI = re.compile(r"/?vsi(curl|s3|gs|az|adls|oss|swift|webhdfs|hdfs)", re.IGNORECASE)
_CONNECTION = re.compile(
    r"^(wms|wmts|wcs|wfs|oapif|ogcapi|eedai?|pg|postgresql|mysql|mssql|oci|odbc|stacit|ngw|"
    r"plscenes|daas|couchdb|es|elasticsearch|mongodb(v3)?|carto|amigocloud|gft|http|https|ftp|"
    r"plmosaic|rasterlite|georaster|sde|ads|tiledb)\s*:", re.IGNORECASE)
_SOURCE_TAGS = {"SourceFilename", "SrcDataSource", "SourceDataset", "Filename",
                "ServerUrl", "ServerURL", "URL", "Url"}
_SERVICE_ROOTS = {"GDAL_WMS", "GDAL_WMTS", "GDAL_WCS", "WCS_GDAL", "WMS_Capabilities",
                  "WMT_MS_Capabilities", "Capabilities", "OGRWFSDataSource",
                  "OGRVRTDataSource"}
_MAX_XML_BYTES = 16 * 1024 * 1024
_MAX_DEPTH = 8
_HINT = ("copy the data to a local file first, or pass --allow-network (FLIGHT.toml: "
         "allow_network = true) if this machine may reach it")


@contextlib.contextmanager
def allow_network_sources(allowed: bool = True) -> Iterator[None]:
    """Within the block, network sources are accepted when ``allowed``."""
    token = _ALLOWED.set(allowed)
    try:
        yield
    finally:
        _ALLOWED.reset(token)


def network_allowed() -> bool:
    """Whether network sources are accepted now."""
    return _ALLOWED.get()


def is_network_path(text: str) -> bool:
    """Whether GDAL would read ``text`` from the network (URL, /vsicurl/..., WMS:...)."""
    value = text.strip()
    return "://" in value or bool(_NETWORK_VSI.search(value)) or bool(
        _CONNECTION.match(value))


def check_local_source(path: str | Path, what: str) -> None:
    """Refuse a network source, or a local VRT/XML file that leads to one (unless allowed).

    Args:
        path: the raster or vector input as given (a path or a GDAL name).
        what: how to name it in the sentence (e.g. ``the parcels``).

    Raises:
        UserInputError: the input reads from the network and that was not allowed.
    """
    if network_allowed():
        return
    text = str(path)
    if is_network_path(text):
        raise UserInputError(f"{text} ({what}) is a network source; idou reads local files "
                             f"only: {_HINT}.")
    reason = _network_reason(Path(text), 0)
    if reason:
        raise UserInputError(f"{text} ({what}) {reason}; idou reads local files only: {_HINT}.")


def _network_reason(path: Path, depth: int) -> str | None:
    """Why a local file leads to the network (VRT or service XML), or None."""
    root = _xml_root(path)
    if root is None:
        return None
    tag = root.tag.rsplit("}", 1)[-1]
    if tag == "OGRVRTDataSource":
        return "is an OGR VRT, which can read any data source, the network included"
    if tag in _SERVICE_ROOTS:
        return f"describes a network service ({tag})"
    if depth >= _MAX_DEPTH:
        return "nests VRTs too deeply"
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] not in _SOURCE_TAGS or not element.text:
            continue
        source = element.text.strip()
        if is_network_path(source):
            return f"reads its source {source} from the network"
        local = Path(source)
        if not local.is_absolute() and element.get("relativeToVRT", "0") == "1":
            local = path.parent / local
        if local.suffix.lower() in (".vrt", ".xml") and local.is_file():
            inner = _network_reason(local, depth + 1)
            if inner:
                return f"uses {local.name}, which {inner}"
    return None


def _xml_root(path: Path) -> Any:
    """The root element of a small XML file (parsed with defusedxml), else None."""
    from defusedxml import ElementTree
    from defusedxml.common import DefusedXmlException

    try:
        if not path.is_file() or path.stat().st_size > _MAX_XML_BYTES:
            return None
        with open(path, "rb") as fh:
            head = fh.read(512).lstrip(b"\xef\xbb\xbf \t\r\n")
            if not head.startswith(b"<"):
                return None
        return ElementTree.parse(path).getroot()
    except (OSError, DefusedXmlException):
        return None
    except Exception:  # noqa: BLE001 - not well-formed XML: GDAL's own error says it later
        return None
