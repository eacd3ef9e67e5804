"""法務省 登記所備付地図データ (地図XML) → parcel polygons.

Reads ``.xml`` files and ``.zip`` archives of them (nested zips one level deep, as the
法務省 distribution ships them). Each 筆 (parcel) becomes one polygon with 地番, 大字名,
丁目名, 小字名, 精度区分 and 座標値種別.

Decisions:

* Parsing is hardened: ``defusedxml`` refuses any DOCTYPE, entity declaration and external
  reference outright (nothing is resolved, nothing is fetched; 地図XML has no DTD), and zip
  members are read
  with a per-member and a total size limit so a zip bomb stops early.
* 座標系 公共座標1系–19系 map to JGD2011 plane zones EPSG:6669–6687. In 地図XML ``X`` is
  northing and ``Y`` easting, so shapely points are built as ``(Y, X)``.
* 任意座標系 (an arbitrary local grid) is refused: such a file cannot be placed on a map.
  When several documents are read at once (a municipality's zip), 任意座標系 documents are
  skipped and named in ``MojFile.dropped`` / :func:`read_mojxml`'s ``skipped`` list, and only
  an input where every document is 任意座標系 is refused.
* 地区外 parcels (地番 starting with ``地区外``: land outside the surveyed district, drawn
  only to close the map, with no real 地番) are skipped and counted in ``dropped``.
* 別図 parcels (地番 starting with ``別図``: drawn on a separate sheet) are kept, with
  ``注記 = "別図"`` so staff see that the outline is approximate.
"""

from __future__ import annotations

import contextlib
import io
import math
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException
from shapely import make_valid, polygonize, union_all
from shapely.geometry import LineString, MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from idou.errors import InputNotFound, UnreadableInput, UnusableCRS, UserInputError

NS = {"t": "http://www.moj.go.jp/MINJI/tizuxml", "z": "http://www.moj.go.jp/MINJI/tizuzumen"}
_T = "{http://www.moj.go.jp/MINJI/tizuxml}"
_Z = "{http://www.moj.go.jp/MINJI/tizuzumen}"

#: Largest XML file (plain or one zip member) read, in bytes.
MAX_XML_BYTES = 512 * 1024 * 1024
#: Largest total of uncompressed bytes read out of one zip archive (nested ones included).
MAX_ZIP_TOTAL_BYTES = 4 * 1024 * 1024 * 1024

_ZONE_DIGITS = {
    "1": 1, "2": 2, "3": 3, "4": 4, "5": 5, "6": 6, "7": 7, "8": 8, "9": 9, "10": 10,
    "11": 11, "12": 12, "13": 13, "14": 14, "15": 15, "16": 16, "17": 17, "18": 18, "19": 19,
}
_FULLWIDTH = str.maketrans("０１２３４５６７８９", "0123456789")

OUTSIDE_PREFIX = "地区外"
SEPARATE_SHEET_PREFIX = "別図"


@dataclass
class MojParcel:
    """One 筆 read from a 地図XML file."""

    chiban: str
    oaza: str
    chome: str
    koaza: str
    accuracy: str
    coord_kind: str
    note: str
    geometry: BaseGeometry
    source: str


@dataclass
class MojFile:
    """The parcels of one 地図XML document and what was left out."""

    name: str
    epsg: int
    municipality: str
    parcels: list[MojParcel]
    dropped: Counter[str] = field(default_factory=Counter)


class ArbitraryCoordinateSystemError(UnusableCRS):
    """A 地図XML document in 任意座標系: it cannot be placed on a map."""


def zone_to_epsg(zahyokei: str, source: str) -> int:
    """Map a 座標系 value (``公共座標9系``) to its JGD2011 EPSG code (``6677``).

    Raises:
        UserInputError: for 任意座標系 or an unknown value.
    """
    text = zahyokei.strip().translate(_FULLWIDTH)
    if "任意" in text:
        raise ArbitraryCoordinateSystemError(
            f"{source} uses 任意座標系 (a local grid with no link to real coordinates), so its "
            "parcels cannot be placed on a map; use a 地図XML in 公共座標 or another parcel file."
        )
    if text.startswith("公共座標") and text.endswith("系"):
        number = text[len("公共座標"):-1]
        if number in _ZONE_DIGITS:
            return 6668 + _ZONE_DIGITS[number]
    raise UnusableCRS(
        f"{source} has 座標系 '{zahyokei}', which idou does not know; expected 公共座標1系–19系."
    )


def read_mojxml(paths: Path | Sequence[Path], skipped: list[str] | None = None
                ) -> list[MojFile]:
    """Read 地図XML files and zip archives of them.

    Args:
        paths: ``.xml`` or ``.zip`` files (one or many).
        skipped: if given, receives one sentence per 任意座標系 document left out.

    Returns:
        One :class:`MojFile` per XML document in a public coordinate system, in input order.

    Raises:
        UserInputError: malformed XML, entities, oversize members, empty input, or every
            document in 任意座標系.
    """
    items = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    files: list[MojFile] = []
    arbitrary: list[ArbitraryCoordinateSystemError] = []
    for path in items:
        if not path.is_file():
            raise InputNotFound(f"{path} does not exist; check the parcel file path.")
        for name, data in _xml_documents(path):
            try:
                files.append(parse_mojxml_bytes(data, name))
            except ArbitraryCoordinateSystemError as exc:
                arbitrary.append(exc)
    if arbitrary and not files:
        if len(arbitrary) == 1:
            raise arbitrary[0]
        raise ArbitraryCoordinateSystemError(
            f"all {len(arbitrary)} 地図XML documents in {items[0].name}"
            f"{' and the other inputs' if len(items) > 1 else ''} use 任意座標系, so their "
            "parcels cannot be placed on a map; use 地図XML in 公共座標 or another parcel file.")
    if skipped is not None:
        skipped.extend(str(exc) for exc in arbitrary)
    if not files:
        raise UserInputError(f"{items[0] if items else 'input'} holds no 地図XML file; "
                             "pass .xml files or a .zip of them.")
    return files


def _xml_documents(path: Path) -> Iterator[tuple[str, bytes]]:
    if zipfile.is_zipfile(path):
        budget = [MAX_ZIP_TOTAL_BYTES]
        with _zip_errors(path.name), zipfile.ZipFile(path) as archive:
            yield from _zip_documents(archive, path.name, budget, depth=0)
        return
    size = path.stat().st_size
    if size > MAX_XML_BYTES:
        raise UserInputError(f"{path} is {size / 2**20:.0f} MiB, over idou's "
                             f"{MAX_XML_BYTES / 2**20:.0f} MiB limit for one 地図XML file; "
                             "split it or pass the zip from 法務省 as is.")
    yield path.name, path.read_bytes()


def _zip_documents(archive: zipfile.ZipFile, label: str, budget: list[int], depth: int
                   ) -> Iterator[tuple[str, bytes]]:
    for info in archive.infolist():
        if info.is_dir():
            continue
        lower = info.filename.lower()
        if not (lower.endswith(".xml") or lower.endswith(".zip")):
            continue
        name = f"{label}:{info.filename}"
        with _zip_errors(name):
            data = _read_member_limited(archive, info, name, budget)
        if lower.endswith(".zip"):
            if depth >= 1:
                raise UserInputError(f"{name} nests zip files more than two levels deep; "
                                     "unpack it and pass the inner files.")
            with _zip_errors(name), zipfile.ZipFile(io.BytesIO(data)) as inner:
                yield from _zip_documents(inner, name, budget, depth + 1)
        else:
            yield name, data


@contextlib.contextmanager
def _zip_errors(name: str) -> Iterator[None]:
    """A damaged zip (bad CRC, truncated, not a zip) or one packed with a method Python cannot
    unpack (Deflate64, as Windows Explorer packs large folders) → one sentence."""
    try:
        yield
    except NotImplementedError as exc:
        raise UnreadableInput(
            f"{name} is packed with a compression method idou cannot unpack ({exc}; Windows "
            "Explorer uses Deflate64 for large folders); unpack it with 7-Zip or Explorer and "
            "pass the .xml files, or zip them again.") from exc
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error) as exc:
        raise UnreadableInput(f"{name} is a damaged zip ({exc}); download the 地図XML zip from "
                              "法務省 again.") from exc


def _read_member_limited(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str,
                         budget: list[int]) -> bytes:
    """Read one member, stopping as soon as it exceeds the member or the total limit.

    The sizes declared in the zip header can lie, so the limit is enforced on the bytes read.
    """
    limit = min(MAX_XML_BYTES, budget[0])
    if info.file_size > limit:
        raise _too_big(name, limit)
    chunks: list[bytes] = []
    read = 0
    with archive.open(info) as stream:
        while True:
            chunk = stream.read(1 << 20)
            if not chunk:
                break
            read += len(chunk)
            if read > limit:
                raise _too_big(name, limit)
            chunks.append(chunk)
    budget[0] -= read
    return b"".join(chunks)


def _too_big(name: str, limit: int) -> UserInputError:
    return UnreadableInput(
        f"{name} unpacks to more than {limit / 2**20:.0f} MiB, over idou's size limit for "
        "地図XML (a damaged or malicious zip); check the file or unpack it yourself."
    )


def parse_mojxml_bytes(data: bytes, name: str) -> MojFile:
    """Parse one 地図XML document (bytes) into parcels.

    Raises:
        UserInputError: malformed XML, DTD entities, 任意座標系, not a 地図XML document.
    """
    try:
        root = SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True,
                                 forbid_external=True)
    except DefusedXmlException as exc:
        raise UserInputError(
            f"{name} declares a DTD or XML entities ({type(exc).__name__}), which idou "
            "refuses for safety; use the 地図XML file as published by 法務省."
        ) from exc
    except ParseError as exc:
        raise UnreadableInput(f"{name} is not well-formed XML ({exc}); "
                              "re-download the 地図XML file.") from exc
    if root.tag != f"{_T}地図":
        raise UserInputError(f"{name} is not a 法務省 地図XML file (its root element is "
                             f"{root.tag!r}); pass the 地図XML .xml or .zip.")
    zahyokei = root.findtext("t:座標系", default="", namespaces=NS)
    epsg = zone_to_epsg(zahyokei, name)
    municipality = root.findtext("t:市区町村名", default="", namespaces=NS).strip()
    space = root.find("t:空間属性", NS)
    themes = root.find("t:主題属性", NS)
    result = MojFile(name=name, epsg=epsg, municipality=municipality, parcels=[])
    if space is None or themes is None:
        return result
    try:
        _read_parcels(_Geometry(space), themes, name, result)
    except ValueError as exc:
        raise UnreadableInput(f"{name} is damaged: a {exc}; re-download the 地図XML file "
                              "from 法務省.") from exc
    return result


def _read_parcels(geometry: _Geometry, themes: Element, name: str, result: MojFile) -> None:
    """Append the 筆 of ``themes`` to ``result`` (地区外 and shapeless ones counted as dropped)."""
    for fude in themes.findall("t:筆", NS):
        chiban = (fude.findtext("t:地番", default="", namespaces=NS) or "").strip()
        if chiban.startswith(OUTSIDE_PREFIX):
            result.dropped["地区外"] += 1
            continue
        shape_ref = fude.find("t:形状", NS)
        ref = shape_ref.get("idref") if shape_ref is not None else None
        polygon = geometry.surface(ref) if ref else None
        if polygon is None or polygon.is_empty:
            result.dropped["no geometry in 地図XML"] += 1
            continue
        result.parcels.append(MojParcel(
            chiban=chiban,
            oaza=_text(fude, "大字名"),
            chome=_text(fude, "丁目名"),
            koaza=_text(fude, "小字名"),
            accuracy=_text(fude, "精度区分"),
            coord_kind=_text(fude, "座標値種別"),
            note=SEPARATE_SHEET_PREFIX if chiban.startswith(SEPARATE_SHEET_PREFIX) else "",
            geometry=polygon,
            source=name,
        ))


def _text(element: Element, tag: str) -> str:
    return (element.findtext(f"t:{tag}", default="", namespaces=NS) or "").strip()


class _Geometry:
    """Resolves the id-linked point / curve / surface graph of a 地図XML 空間属性."""

    def __init__(self, space: Element) -> None:
        self.points: dict[str, tuple[float, float]] = {}
        self.curves: dict[str, Element] = {}
        self.surfaces: dict[str, Element] = {}
        self._curve_cache: dict[str, list[tuple[float, float]]] = {}
        for element in space:
            ident = element.get("id")
            if ident is None:
                continue
            if element.tag == f"{_Z}GM_Point":
                position = element.find("z:GM_Point.position/z:DirectPosition", NS)
                if position is not None:
                    self.points[ident] = _xy(position)
            elif element.tag == f"{_Z}GM_Curve":
                self.curves[ident] = element
            elif element.tag == f"{_Z}GM_Surface":
                self.surfaces[ident] = element

    def curve(self, ident: str) -> list[tuple[float, float]]:
        if ident not in self._curve_cache:
            element = self.curves.get(ident)
            coords: list[tuple[float, float]] = []
            if element is not None:
                for column in element.iterfind(".//z:GM_PointArray.column", NS):
                    direct = column.find("z:GM_Position.direct", NS)
                    if direct is not None:
                        coords.append(_xy(direct))
                        continue
                    ref = column.find("z:GM_Position.indirect/z:GM_PointRef.point", NS)
                    point = self.points.get(ref.get("idref", "")) if ref is not None else None
                    if point is not None:
                        coords.append(point)
            self._curve_cache[ident] = coords
        return self._curve_cache[ident]

    def ring(self, ring: Element) -> Polygon | None:
        """Polygonize the ring's curves (robust to their order and orientation)."""
        lines = []
        for generator in ring.findall("z:GM_CompositeCurve.generator", NS):
            coords = self.curve(generator.get("idref", ""))
            if len(coords) >= 2:
                lines.append(LineString(coords))
        if not lines:
            return None
        pieces = [g for g in polygonize(lines).geoms if not g.is_empty]
        if not pieces:
            return _chained_ring(lines)
        merged = union_all(pieces)
        if isinstance(merged, Polygon):
            return Polygon(merged.exterior)
        if isinstance(merged, MultiPolygon):
            largest = max(merged.geoms, key=lambda g: g.area)
            return Polygon(largest.exterior)
        return None

    def surface(self, ident: str) -> BaseGeometry | None:
        element = self.surfaces.get(ident)
        if element is None:
            return None
        parts: list[BaseGeometry] = []
        for polygon in element.iterfind(".//z:GM_Polygon", NS):
            exterior_ring = polygon.find(
                "z:GM_Polygon.boundary/z:GM_SurfaceBoundary/z:GM_SurfaceBoundary.exterior/"
                "z:GM_Ring", NS)
            if exterior_ring is None:
                continue
            shell = self.ring(exterior_ring)
            if shell is None:
                continue
            for interior in polygon.iterfind(
                    "z:GM_Polygon.boundary/z:GM_SurfaceBoundary/"
                    "z:GM_SurfaceBoundary.interior/z:GM_Ring", NS):
                hole = self.ring(interior)
                if hole is not None:
                    shell = shell.difference(hole)
            parts.append(shell)
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else union_all(parts)


def _chained_ring(lines: list[LineString]) -> Polygon | None:
    """Fallback for rings whose curves do not meet exactly: chain them end to end and close."""
    remaining = [list(line.coords) for line in lines]
    chain = remaining.pop(0)
    while remaining:
        end = chain[-1]
        best = min(range(len(remaining)), key=lambda i: min(
            _dist2(end, remaining[i][0]), _dist2(end, remaining[i][-1])))
        part = remaining.pop(best)
        if _dist2(end, part[-1]) < _dist2(end, part[0]):
            part.reverse()
        chain.extend(part)
    if len(chain) < 3:
        return None
    repaired = make_valid(Polygon(chain))
    polygons = [g for g in getattr(repaired, "geoms", [repaired]) if isinstance(g, Polygon)]
    return max(polygons, key=lambda g: g.area) if polygons else None


def _dist2(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2


def _xy(position: Element) -> tuple[float, float]:
    """(easting, northing) from a 地図XML position: X is northing, Y is easting.

    Raises:
        ValueError: an empty, missing or non-numeric coordinate (told to the user by
            :func:`parse_mojxml_bytes`).
    """
    x = _number(position.findtext("z:X", default=None, namespaces=NS), "X")
    y = _number(position.findtext("z:Y", default=None, namespaces=NS), "Y")
    return (y, x)


def _number(text: str | None, axis: str) -> float:
    value = float("nan")
    with contextlib.suppress(ValueError):
        value = float((text or "").strip())
    if not math.isfinite(value):
        raise ValueError(f"coordinate {axis} = {(text or '').strip()!r} is not a number")
    return value
