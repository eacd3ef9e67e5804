"""The packaged QML styles: up to date with their definition and holding what staff need."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from idou.geo.review.qgis_styles import LAYER_STYLES, load_qml, pretty_qml, render_qml


@pytest.mark.parametrize("layer", sorted(LAYER_STYLES))
def test_packaged_qml_matches_its_definition(layer: str) -> None:
    assert load_qml(layer) == pretty_qml(render_qml(LAYER_STYLES[layer])), (
        f"geo/review/styles/{layer}.qml is stale; run python -m idou.geo.review.qgis_styles")


def test_review_layers_have_dropdown_calendar_aliases_and_read_only_fields() -> None:
    for layer in ("candidate_parcels", "changes"):
        root = ET.fromstring(load_qml(layer).split("\n", 1)[1])
        widgets = {f.get("name"): f.find("editWidget").get("type")  # type: ignore[union-attr]
                   for f in root.iter("field") if f.find("editWidget") is not None}
        assert widgets == {"調査状況": "ValueMap", "調査日": "DateTime"}
        values = [o.get("value") for o in root.iter("Option") if o.get("type") == "QString"
                  and o.get("name") == o.get("value")]
        assert values == ["未確認", "課税対象", "対象外", "誤検出", "要再調査"]
        aliases = {a.get("field"): a.get("name") for a in root.iter("alias")}
        assert aliases["area_m2" if layer == "changes" else "changed_area_m2"].endswith("㎡")
        read_only = {f.get("name") for f in root.find("editable")}  # type: ignore[union-attr]
        assert "調査状況" not in read_only and "地番" in read_only
        renderer = root.find("renderer-v2")
        assert renderer is not None and renderer.get("type") == "categorizedSymbol"


def test_styles_folder_is_package_data() -> None:
    folder = Path(__file__).parents[2] / "geo" / "review" / "styles"
    assert sorted(p.stem for p in folder.glob("*.qml")) == sorted(LAYER_STYLES)
