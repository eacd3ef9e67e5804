"""QGIS styles for the review GeoPackage, stored in its ``layer_styles`` table.

The styles live as QML files in ``geo/review/styles/<layer>.qml`` (package data); edit them in QGIS
(Layer Properties → Style → Save Style → QML) or regenerate them from :data:`LAYER_STYLES`
with ``python -m idou.geo.review.qgis_styles``. Each carries colours by 異動区分, labels with 地番,
a drop-down (ValueMap) for 調査状況, a calendar (DateTime) for 調査日, Japanese aliases,
default values and read-only detection fields. Candidate parcels show the survey's progress:
reviewed ones (課税対象, 対象外, 誤検出) are drawn muted, 要再調査 stands out, and unreviewed
ones are labelled with their route rank (``[priority] 地番``). Labels name fonts found on
Japanese Windows (游ゴシック, メイリオ, MS ゴシック), then Noto Sans CJK JP and IPAexGothic
for Linux.

:func:`write_layer_styles` stores them in QGIS's own ``layer_styles`` schema with
``useAsDefault = 1`` so QGIS applies them when a layer is opened from the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from xml.sax.saxutils import quoteattr

from idou.geo.review.gpkg_sqlite import connect
from idou.geo.review.review_fields import (
    ALIASES,
    CLASS_COLOURS,
    DETECTION,
    MAIN_CLASS,
    NOTE,
    OTHER_CLASS_JA,
    OTHER_COLOUR,
    STATUS,
    STATUS_FALSE_ALARM,
    STATUS_NOT_TAXABLE,
    STATUS_RECHECK,
    STATUS_TAXABLE,
    STATUS_UNCHECKED,
    STATUS_VALUES,
    SURVEY_DATE,
    SURVEYOR,
    UNMAPPED_LAYER,
)

QGIS_VERSION = "3.22.16-Białowieża"
STYLE_NAME = "idou"


@dataclass(frozen=True)
class Category:
    """One class of a categorized renderer."""

    value: str
    label: str
    fill: str  # "r,g,b,a"
    outline: str
    outline_width: float = 0.5
    outline_style: str = "solid"
    fill_style: str = "solid"


@dataclass(frozen=True)
class LayerStyle:
    """What a layer's QML holds."""

    layer: str
    category_field: str | None
    categories: tuple[Category, ...]
    default_symbol: Category
    label_field: str | None = None
    value_maps: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    date_fields: tuple[str, ...] = ()
    defaults: dict[str, str] = field(default_factory=dict)
    read_only: tuple[str, ...] = ()
    aliases: dict[str, str] = field(default_factory=dict)
    label_expression: str | None = None  # a QGIS expression labelled instead of label_field


def _rgba(hex_colour: str, alpha: int) -> str:
    hex_colour = hex_colour.lstrip("#")
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (0, 2, 4))
    return f"{r},{g},{b},{alpha}"


def _class_categories(width: float, fill_alpha: int) -> tuple[Category, ...]:
    return tuple(Category(name, name, _rgba(colour, fill_alpha), _rgba(colour, 255), width)
                 for name, colour in CLASS_COLOURS.items())


_STATUS_MAP = tuple((v, v) for v in STATUS_VALUES)
_REVIEW_ALIASES = {STATUS: STATUS, SURVEYOR: SURVEYOR, SURVEY_DATE: SURVEY_DATE, NOTE: NOTE}
_DETECTION_FIELDS = ("change_id", "channel", "change_type", "異動区分", "area_m2", "score_max",
                     "score_mean", "地番", "所在", "地区", "parcel_ids", "building_ids",
                     DETECTION)
_PARCEL_FIELDS = ("parcel_id", "地番", "所在", "地区", "異動区分", MAIN_CLASS, "n_changes",
                  "changed_area_m2", "score_max", "priority", "shares", "change_ids", DETECTION)
_GREY = Category("", "その他", "200,200,200,90", "90,90,90,255")
STATUS_DONE = (STATUS_TAXABLE, STATUS_NOT_TAXABLE, STATUS_FALSE_ALARM)
DONE_CLASS = "調査済"
_DONE_LIST = ", ".join(f"'{v}'" for v in STATUS_DONE)
PARCEL_PROGRESS = (f'CASE WHEN "{STATUS}" IN ({_DONE_LIST}) THEN \'{DONE_CLASS}\' '
                   f'WHEN "{STATUS}" = \'{STATUS_RECHECK}\' THEN \'{STATUS_RECHECK}\' '
                   f'ELSE "{MAIN_CLASS}" END')
PARCEL_LABEL = (f'CASE WHEN "{STATUS}" IN ({_DONE_LIST}) THEN "地番" '
                f'ELSE \'[\' || "priority" || \'] \' || "地番" END')
_PROGRESS_CATEGORIES = (
    Category(STATUS_RECHECK, f"{STATUS_RECHECK}（現地で確認）", "255,221,0,60", "200,150,0,255",
             1.2, "dash"),
    Category(DONE_CLASS, f"{DONE_CLASS}（課税対象・対象外・誤検出）", "160,160,160,40",
             "150,150,150,150", 0.3, "solid", "no"),
)
LABEL_FONTS = ("Yu Gothic", "Meiryo", "MS Gothic", "Noto Sans CJK JP", "IPAexGothic",
               "Sans Serif")

# building map (--buildings): change the map does not support, kept but not a candidate
_OTHER_CHANGE = Category(OTHER_CLASS_JA, "その他の変化（候補外）", _rgba(OTHER_COLOUR, 60),
                         _rgba(OTHER_COLOUR, 255), 0.4, "dash")

LAYER_STYLES: dict[str, LayerStyle] = {
    "candidate_parcels": LayerStyle(
        layer="candidate_parcels", category_field=PARCEL_PROGRESS,
        categories=(*_class_categories(0.8, 25), _OTHER_CHANGE, *_PROGRESS_CATEGORIES),
        default_symbol=_GREY,
        label_field="地番", label_expression=PARCEL_LABEL,
        value_maps={STATUS: _STATUS_MAP}, date_fields=(SURVEY_DATE,),
        defaults={STATUS: STATUS_UNCHECKED}, read_only=_PARCEL_FIELDS,
        aliases={**ALIASES, **_REVIEW_ALIASES, MAIN_CLASS: MAIN_CLASS}),
    "changes": LayerStyle(
        layer="changes", category_field="異動区分",
        categories=(*_class_categories(0.4, 110), _OTHER_CHANGE),
        default_symbol=_GREY, label_field=None,
        value_maps={STATUS: _STATUS_MAP}, date_fields=(SURVEY_DATE,),
        defaults={STATUS: STATUS_UNCHECKED}, read_only=_DETECTION_FIELDS,
        aliases={**ALIASES, **_REVIEW_ALIASES, "parcel_ids": "筆ID一覧"}),
    "existing_buildings": LayerStyle(
        layer="existing_buildings", category_field=None, categories=(),
        default_symbol=Category("", "既存家屋", "0,0,0,0", "255,235,60,230", 0.3, "dash"),
        aliases={"building_id": "家屋ID"}),
    UNMAPPED_LAYER: LayerStyle(
        layer=UNMAPPED_LAYER, category_field=None, categories=(),
        default_symbol=Category("", "未評価家屋の候補（家屋現況図にない建物）", "255,255,0,60",
                                "230,0,180,255", 0.8, "dot"),
        read_only=("candidate_id", "area_m2", "score_max", "score_mean", "判定理由"),
        aliases={"candidate_id": "候補ID", "area_m2": "面積㎡", "score_max": "確信度",
                 "score_mean": "平均確信度", "判定理由": "判定理由"}),
    "coverage": LayerStyle(
        layer="coverage", category_field="status",
        categories=(
            Category("processed", "判読済み", "0,0,0,0", "31,120,180,255", 0.4, "dash"),
            Category("nodata", "画像なし（未判読）", "120,120,120,110", "80,80,80,255", 0.3,
                     "solid", "b_diagonal"),
            Category("skipped", "対象外（未判読）", "120,120,120,110", "80,80,80,255", 0.3,
                     "solid", "b_diagonal"),
        ),
        default_symbol=Category("", "その他", "120,120,120,60", "80,80,80,255", 0.3),
        read_only=("status",), aliases={"status": "処理状況"}),
    "missed": LayerStyle(
        layer="missed", category_field="channel",
        categories=(
            Category("new", "見逃し（新築）", "255,0,255,70", "255,0,255,255", 0.8, "dash"),
            Category("demolished", "見逃し（滅失）", "0,200,200,70", "0,160,160,255", 0.8,
                     "dash"),
        ),
        default_symbol=Category("", "見逃し", "255,0,255,70", "255,0,255,255", 0.8, "dash"),
        value_maps={"channel": (("新築（新しくできた家屋）", "new"),
                                ("滅失（なくなった家屋）", "demolished"))},
        date_fields=(SURVEY_DATE,), defaults={"channel": "new"},
        aliases={"channel": "見逃しの種別", SURVEYOR: SURVEYOR, SURVEY_DATE: SURVEY_DATE,
                 NOTE: NOTE}),
}


def _symbol(name: str, cat: Category) -> str:
    props = {
        "color": cat.fill, "outline_color": cat.outline, "outline_style": cat.outline_style,
        "outline_width": f"{cat.outline_width}", "outline_width_unit": "MM",
        "style": cat.fill_style, "joinstyle": "miter", "offset": "0,0", "offset_unit": "MM",
    }
    options = "".join(f'<Option name={quoteattr(k)} type="QString" value={quoteattr(v)}/>'
                      for k, v in props.items())
    legacy = "".join(f"<prop k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in props.items())
    return (f'<symbol name={quoteattr(name)} type="fill" alpha="1" clip_to_extent="1" '
            f'force_rhr="0"><layer class="SimpleFill" enabled="1" locked="0" pass="0">'
            f'<Option type="Map">{options}</Option>{legacy}</layer></symbol>')


def _renderer(style: LayerStyle) -> str:
    if style.category_field is None:
        return (f'<renderer-v2 type="singleSymbol" symbollevels="0" forceraster="0" '
                f'enableorderby="0"><symbols>{_symbol("0", style.default_symbol)}</symbols>'
                f"<rotation/><sizescale/></renderer-v2>")
    categories = list(style.categories) + [style.default_symbol]
    cats = "".join(
        f'<category render="true" symbol="{i}" value={quoteattr(c.value)} '
        f"label={quoteattr(c.label)}/>" for i, c in enumerate(categories))
    symbols = "".join(_symbol(str(i), c) for i, c in enumerate(categories))
    return (f'<renderer-v2 type="categorizedSymbol" attr={quoteattr(style.category_field)} '
            f'symbollevels="0" forceraster="0" enableorderby="0"><categories>{cats}</categories>'
            f"<symbols>{symbols}</symbols>"
            f'<source-symbol>{_symbol("0", style.default_symbol)}</source-symbol>'
            f"<rotation/><sizescale/></renderer-v2>")


def _labeling(field_name: str, is_expression: bool = False) -> str:
    families = "".join(f"<family name={quoteattr(f)}/>" for f in LABEL_FONTS)
    return (
        '<labeling type="simple"><settings calloutType="simple">'
        f'<text-style fieldName={quoteattr(field_name)} isExpression="{int(is_expression)}" '
        f'fontSize="9" fontSizeUnit="Point" fontFamily={quoteattr(LABEL_FONTS[0])} '
        'namedStyle="Regular" '
        'fontWeight="50" textColor="20,20,20,255" textOpacity="1" fontItalic="0" '
        'fontUnderline="0" fontStrikeout="0" capitalization="0" multilineHeight="1" '
        'blendMode="0" allowHtml="0" previewBkgrdColor="255,255,255,255">'
        f'<families>{families}</families>'
        '<text-buffer bufferDraw="1" bufferSize="1" bufferSizeUnits="MM" '
        'bufferColor="255,255,255,255" bufferOpacity="1" bufferNoFill="1" '
        'bufferJoinStyle="128" bufferBlendMode="0"/>'
        '</text-style>'
        '<text-format wrapChar="" multilineAlign="3" formatNumbers="0" decimals="3" '
        'plussign="0" addDirectionSymbol="0"/>'
        '<placement placement="1" polygonPlacementFlags="2" centroidWhole="0" '
        'centroidInside="1" fitInPolygonOnly="0" dist="0" distUnits="MM" offsetType="0" '
        'quadOffset="4" xOffset="0" yOffset="0" offsetUnits="MM" priority="5" '
        'placementFlags="10" layerType="PolygonGeometry"/>'
        '<rendering drawLabels="1" obstacle="1" obstacleType="1" obstacleFactor="1" '
        'displayAll="0" scaleVisibility="1" scaleMin="0" scaleMax="25000" '
        'upsidedownLabels="0" labelPerPart="0" mergeLines="0" minFeatureSize="0" '
        'limitNumLabels="0" maxNumLabels="2000" fontLimitPixelSize="0" zIndex="0" '
        'unplacedVisibility="0"/>'
        "</settings></labeling>")


def _field_configuration(style: LayerStyle) -> str:
    fields = []
    for name, pairs in style.value_maps.items():
        entries = "".join(
            f'<Option type="Map"><Option name={quoteattr(label)} type="QString" '
            f"value={quoteattr(value)}/></Option>" for label, value in pairs)
        fields.append(
            f'<field name={quoteattr(name)} configurationFlags="None">'
            f'<editWidget type="ValueMap"><config><Option type="Map">'
            f'<Option name="map" type="List">{entries}</Option></Option></config>'
            f"</editWidget></field>")
    for name in style.date_fields:
        fields.append(
            f'<field name={quoteattr(name)} configurationFlags="None">'
            '<editWidget type="DateTime"><config><Option type="Map">'
            '<Option name="allow_null" type="bool" value="true"/>'
            '<Option name="calendar_popup" type="bool" value="true"/>'
            '<Option name="display_format" type="QString" value="yyyy-MM-dd"/>'
            '<Option name="field_format" type="QString" value="yyyy-MM-dd"/>'
            '<Option name="field_iso_format" type="bool" value="false"/>'
            "</Option></config></editWidget></field>")
    return f"<fieldConfiguration>{''.join(fields)}</fieldConfiguration>"


def render_qml(style: LayerStyle) -> str:
    """The QML document of one layer style."""
    aliases = "".join(f"<alias field={quoteattr(k)} name={quoteattr(v)}/>"
                      for k, v in style.aliases.items())
    defaults = "".join(
        f"<default field={quoteattr(k)} expression={quoteattr(repr_qgis(v))} "
        'applyOnUpdate="0"/>' for k, v in style.defaults.items())
    editable = "".join(f'<field name={quoteattr(k)} editable="0"/>' for k in style.read_only)
    labels = (_labeling(style.label_expression, True) if style.label_expression
              else _labeling(style.label_field) if style.label_field else "")
    labels_enabled = "1" if style.label_field else "0"
    preview = f'"{style.label_field}"' if style.label_field else ""
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        f'<qgis version="{QGIS_VERSION}" styleCategories="AllStyleCategories" '
        f'labelsEnabled="{labels_enabled}" readOnly="0" hasScaleBasedVisibilityFlag="0" '
        'minScale="100000000" maxScale="0" simplifyDrawingHints="1" simplifyDrawingTol="1" '
        'simplifyLocal="1" simplifyAlgorithm="0" simplifyMaxScale="1">\n'
        f"{_renderer(style)}\n{labels}\n{_field_configuration(style)}\n"
        f"<aliases>{aliases}</aliases>\n<defaults>{defaults}</defaults>\n"
        f"<editable>{editable}</editable>\n"
        f"<previewExpression>{preview}</previewExpression>\n"
        "<layerGeometryType>2</layerGeometryType>\n</qgis>\n")


def pretty_qml(qml: str) -> str:
    """Indent a QML document so that a diff of it can be read."""
    from xml.dom import minidom

    body = qml.split("\n", 1)[1]
    document = minidom.parseString(body.replace("\n", "")).documentElement
    assert document is not None
    pretty = document.toprettyxml(indent=" ")
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + pretty


def repr_qgis(value: str) -> str:
    """A QGIS expression string literal."""
    return "'" + value.replace("'", "''") + "'"


def load_qml(layer: str) -> str:
    """The packaged QML of ``layer`` (``geo/review/styles/<layer>.qml``)."""
    return resources.files("idou.geo.review").joinpath("styles", f"{layer}.qml").read_text("utf-8")


_CREATE_LAYER_STYLES = """
CREATE TABLE IF NOT EXISTS layer_styles (
  id INTEGER PRIMARY KEY AUTOINCREMENT, f_table_catalog TEXT(256), f_table_schema TEXT(256),
  f_table_name TEXT(256), f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT,
  styleSLD TEXT, useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30),
  update_time DATETIME DEFAULT CURRENT_TIMESTAMP)
"""


def write_layer_styles(gpkg: Path, layers: dict[str, str]) -> None:
    """Store the default style of each layer in ``gpkg``'s ``layer_styles`` table.

    Args:
        gpkg: the GeoPackage (layers already written).
        layers: layer name → geometry column name.
    """
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    with connect(gpkg) as con:
        con.execute(_CREATE_LAYER_STYLES)
        registered = con.execute(
            "SELECT 1 FROM gpkg_contents WHERE table_name = 'layer_styles'").fetchone()
        if registered is None:
            con.execute("INSERT INTO gpkg_contents (table_name, data_type, identifier, "
                        "description, last_change) VALUES ('layer_styles', 'attributes', "
                        "'layer_styles', '', ?)", (now,))
        for layer, geometry_column in layers.items():
            if layer not in LAYER_STYLES:
                continue
            con.execute("DELETE FROM layer_styles WHERE f_table_name = ?", (layer,))
            con.execute(
                "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, "
                "f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, description, "
                "owner, ui, update_time) VALUES ('', '', ?, ?, ?, ?, '', 1, ?, '', '', ?)",
                (layer, geometry_column, STYLE_NAME, load_qml(layer),
                 "idou review style (異動判読)", now))


def write_qml_files(folder: Path) -> list[Path]:
    """Regenerate ``folder/<layer>.qml`` from :data:`LAYER_STYLES`."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, style in LAYER_STYLES.items():
        target = folder / f"{name}.qml"
        target.write_text(pretty_qml(render_qml(style)), encoding="utf-8")
        written.append(target)
    return written


if __name__ == "__main__":
    for written_path in write_qml_files(Path(__file__).with_name("styles")):
        print(written_path)
