"""地図XML reader: real 法務省 samples, a hand-made file, and hostile or broken input."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from pyproj import Transformer

from idou.errors import UnreadableInput, UnusableCRS, UserInputError
from idou.geo.vector import mojxml
from idou.geo.vector.mojxml import read_mojxml, zone_to_epsg

from ..mojxml_builder import moj_xml


def write(tmp_path: Path, text: str, name: str = "map.xml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_handmade_parcel_uses_x_as_northing_and_zone_epsg(tmp_path: Path) -> None:
    [moj] = read_mojxml(write(tmp_path, moj_xml()))
    assert moj.epsg == 6677
    [parcel] = moj.parcels
    assert parcel.chiban == "12-3"
    assert (parcel.oaza, parcel.chome, parcel.accuracy) == ("作草部町", "一丁目", "甲一")
    assert parcel.geometry.area == pytest.approx(200.0)
    # X (north) spans 1000..1020, Y (east) 500..510 → shapely x = easting
    assert parcel.geometry.bounds == pytest.approx((500.0, 1000.0, 510.0, 1020.0))


def test_ring_whose_curves_do_not_quite_meet_is_still_read(tmp_path: Path) -> None:
    # move one end of curve C3 by 2 mm: the curves no longer share that point
    text = moj_xml().replace(
        '<zmn:GM_Curve id="C3"><zmn:GM_Curve.segment><zmn:GM_LineString>'
        "<zmn:GM_LineString.controlPoint>"
        '<zmn:GM_PointArray.column><zmn:GM_Position.indirect><zmn:GM_PointRef.point '
        'idref="P2"/></zmn:GM_Position.indirect></zmn:GM_PointArray.column>',
        '<zmn:GM_Curve id="C3"><zmn:GM_Curve.segment><zmn:GM_LineString>'
        "<zmn:GM_LineString.controlPoint>"
        "<zmn:GM_PointArray.column><zmn:GM_Position.direct><zmn:X>1000.002</zmn:X>"
        "<zmn:Y>510.0</zmn:Y></zmn:GM_Position.direct></zmn:GM_PointArray.column>")
    assert "1000.002" in text
    [moj] = read_mojxml(write(tmp_path, text))
    assert moj.parcels[0].geometry.area == pytest.approx(200.0, abs=0.1)


@pytest.mark.parametrize(("zone", "epsg"), [("公共座標1系", 6669), ("公共座標9系", 6677),
                                            ("公共座標１９系", 6687), ("公共座標2系", 6670)])
def test_zone_mapping(zone: str, epsg: int) -> None:
    assert zone_to_epsg(zone, "x.xml") == epsg


def test_arbitrary_coordinate_system_is_refused_with_a_sentence(tmp_path: Path) -> None:
    path = write(tmp_path, moj_xml(zone="任意座標系"), "local.xml")
    with pytest.raises(UnusableCRS, match=r"local\.xml.*任意座標系.*cannot be placed on a map"):
        read_mojxml(path)


def test_arbitrary_documents_in_a_batch_are_skipped_and_named(tmp_path: Path) -> None:
    archive = tmp_path / "city.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a.xml", moj_xml())
        z.writestr("b.xml", moj_xml(zone="任意座標系"))
    skipped: list[str] = []
    files = read_mojxml(archive, skipped=skipped)
    assert [f.name for f in files] == ["city.zip:a.xml"]
    assert len(skipped) == 1 and "city.zip:b.xml uses 任意座標系" in skipped[0]


def test_a_batch_of_only_arbitrary_documents_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "local.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a.xml", moj_xml(zone="任意座標系"))
        z.writestr("b.xml", moj_xml(zone="任意座標系"))
    with pytest.raises(UnusableCRS, match="all 2 地図XML documents .* cannot be placed"):
        read_mojxml(archive)


def test_outside_district_is_skipped_and_separate_sheet_flagged(tmp_path: Path) -> None:
    extra = ('<筆 id="H2"><地番>地区外-1</地番><形状 idref="F1"/></筆>'
             '<筆 id="H3"><大字名>作草部町</大字名><地番>別図-5</地番><形状 idref="F1"/></筆>'
             '<筆 id="H4"><大字名>作草部町</大字名><地番>99</地番></筆>')
    [moj] = read_mojxml(write(tmp_path, moj_xml(extra_fude=extra)))
    assert [p.chiban for p in moj.parcels] == ["12-3", "別図-5"]
    assert [p.note for p in moj.parcels] == ["", "別図"]
    assert moj.dropped == {"地区外": 1, "no geometry in 地図XML": 1}


def test_malformed_xml_is_one_sentence(tmp_path: Path) -> None:
    path = write(tmp_path, moj_xml()[:-40], "cut.xml")
    with pytest.raises(UnreadableInput, match=r"cut\.xml is not well-formed XML"):
        read_mojxml(path)


def test_external_entity_is_never_resolved(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-TOKEN", encoding="utf-8")
    doctype = f'<!DOCTYPE 地図 [<!ENTITY xxe SYSTEM "file://{secret}">]>'
    text = moj_xml(doctype=doctype, chiban="&xxe;")
    path = write(tmp_path, text, "xxe.xml")
    with pytest.raises(UserInputError, match=r"xxe\.xml declares a DTD or XML entities") as info:
        read_mojxml(path)
    assert "TOP-SECRET-TOKEN" not in str(info.value)


def test_external_dtd_is_refused_not_fetched(tmp_path: Path) -> None:
    path = write(tmp_path, moj_xml(doctype='<!DOCTYPE 地図 SYSTEM "http://127.0.0.1:9/x.dtd">'),
                 "dtd.xml")
    with pytest.raises(UserInputError, match=r"dtd\.xml declares a DTD"):
        read_mojxml(path)


def test_zip_of_xml_and_nested_zip_are_read(tmp_path: Path) -> None:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr("b.xml", moj_xml(chiban="2"))
    outer = tmp_path / "bundle.zip"
    with zipfile.ZipFile(outer, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.xml", moj_xml(chiban="1"))
        z.writestr("inner.zip", inner.getvalue())
        z.writestr("readme.txt", "ignored")
    files = read_mojxml(outer)
    assert [f.parcels[0].chiban for f in files] == ["1", "2"]


def test_zip_bomb_stops_at_the_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    monkeypatch.setattr(mojxml, "MAX_XML_BYTES", 64 * 1024)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("huge.xml", b"<a>" + b" " * (8 * 1024 * 1024) + b"</a>")
    assert bomb.stat().st_size < 64 * 1024  # highly compressed
    with pytest.raises(UnreadableInput, match=r"bomb\.zip:huge\.xml unpacks to more than"):
        read_mojxml(bomb)


def test_zip_total_limit_counts_all_members(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    monkeypatch.setattr(mojxml, "MAX_ZIP_TOTAL_BYTES", len(moj_xml().encode()) + 10)
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a.xml", moj_xml())
        z.writestr("b.xml", moj_xml())
    with pytest.raises(UnreadableInput, match="size limit"):
        read_mojxml(archive)


def test_real_samples(shared_data: Path) -> None:
    folder = shared_data / "mojxml"
    chiba, yakushima_1, yakushima_102 = read_mojxml(
        [folder / "12103-0400-76.xml", folder / "46505-3411-1.xml",
         folder / "46505-3411-102.xml"])
    assert (chiba.epsg, len(chiba.parcels)) == (6677, 1)
    assert chiba.parcels[0].chiban == "194-1" and chiba.parcels[0].oaza == "作草部町"
    assert yakushima_1.epsg == 6670
    assert len(yakushima_1.parcels) == 3 and yakushima_1.dropped["地区外"] == 5
    assert len(yakushima_102.parcels) == 169
    assert all(p.geometry.is_valid and p.geometry.area > 0 for p in yakushima_102.parcels)
    # the Chiba parcel lies in 稲毛区 (about 35.6 N, 140.1 E): axis order is right
    lon, lat = Transformer.from_crs(6677, 4326, always_xy=True).transform(
        *chiba.parcels[0].geometry.centroid.coords[0])
    assert 35.5 < lat < 35.8 and 140.0 < lon < 140.2
