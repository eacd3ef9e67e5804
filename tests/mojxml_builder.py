"""A tiny 法務省 地図XML document, built as text, for the reader tests and the corpus."""

from __future__ import annotations

# the default parcel: 10 m x 20 m (X north 1000..1020, Y east 500..510)
_POINTS = {"P1": (1000.0, 500.0), "P2": (1000.0, 510.0), "P3": (1020.0, 510.0),
           "P4": (1020.0, 500.0)}
# its boundary curves in scrambled order and one reversed, as real files have them
_CURVES = {"C1": ("P2", "P1"), "C2": ("P3", "P4"), "C3": ("P2", "P3"), "C4": ("P4", "P1")}


def moj_xml(points: dict[str, tuple[float, float]] | None = None, *,
            zone: str = "公共座標9系", doctype: str = "", chiban: str = "12-3",
            extra_fude: str = "") -> str:
    """One parcel (作草部町 一丁目, 甲一) whose corners are ``points`` (id → (X northing, Y
    easting)), by default the 10 m x 20 m parcel above.

    ``doctype`` is inserted after the XML declaration (for entity attacks); ``chiban`` is
    inserted as is (so it may reference an entity); ``extra_fude`` adds 筆 elements.
    """
    if points is None:
        points, curves = _POINTS, _CURVES
    else:
        ids = list(points)
        curves = {f"C{i + 1}": (ids[i], ids[(i + 1) % len(ids)]) for i in range(len(ids))}
    point_xml = "".join(
        f'<zmn:GM_Point id="{k}"><zmn:GM_Point.position><zmn:DirectPosition>'
        f"<zmn:X>{x!r}</zmn:X><zmn:Y>{y!r}</zmn:Y></zmn:DirectPosition>"
        "</zmn:GM_Point.position></zmn:GM_Point>" for k, (x, y) in points.items())
    curve_xml = "".join(
        f'<zmn:GM_Curve id="{k}"><zmn:GM_Curve.segment><zmn:GM_LineString>'
        "<zmn:GM_LineString.controlPoint>"
        + "".join('<zmn:GM_PointArray.column><zmn:GM_Position.indirect><zmn:GM_PointRef.point '
                  f'idref="{p}"/></zmn:GM_Position.indirect></zmn:GM_PointArray.column>'
                  for p in pair)
        + "</zmn:GM_LineString.controlPoint></zmn:GM_LineString></zmn:GM_Curve.segment>"
        "</zmn:GM_Curve>" for k, pair in curves.items())
    surface = (
        '<zmn:GM_Surface id="F1"><zmn:GM_Surface.patch><zmn:GM_Polygon>'
        "<zmn:GM_Polygon.boundary><zmn:GM_SurfaceBoundary><zmn:GM_SurfaceBoundary.exterior>"
        "<zmn:GM_Ring>"
        + "".join(f'<zmn:GM_CompositeCurve.generator idref="{c}"/>' for c in curves)
        + "</zmn:GM_Ring></zmn:GM_SurfaceBoundary.exterior></zmn:GM_SurfaceBoundary>"
        "</zmn:GM_Polygon.boundary></zmn:GM_Polygon></zmn:GM_Surface.patch></zmn:GM_Surface>")
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>{doctype}'
        '<地図 xmlns="http://www.moj.go.jp/MINJI/tizuxml" '
        'xmlns:zmn="http://www.moj.go.jp/MINJI/tizuzumen">'
        "<version>ver1.0</version><地図名>test</地図名><市区町村コード>12103</市区町村コード>"
        f"<市区町村名>千葉市稲毛区</市区町村名><座標系>{zone}</座標系>"
        f"<空間属性>{point_xml}{curve_xml}{surface}</空間属性>"
        "<主題属性>"
        f'<筆 id="H1"><大字コード>015</大字コード><大字名>作草部町</大字名><丁目名>一丁目</丁目名>'
        f'<地番>{chiban}</地番><形状 idref="F1"/><精度区分>甲一</精度区分>'
        f"<座標値種別>測量成果</座標値種別></筆>{extra_fude}"
        "</主題属性></地図>")
