"""Parcel readers: formats, Japanese encodings, CRS, repairs, and no personal data kept."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest
from shapely.geometry import Polygon, box

from idou.errors import UnusableCRS, UserInputError
from idou.geo.vector.parcels import district_of, read_parcels


def frame(crs: str = "EPSG:6677") -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"地番": ["1-1", "1-2", "2"], "大字名": ["作草部町"] * 3, "丁目名": ["一丁目"] * 3,
         "所有者": ["山田太郎", "佐藤花子", "鈴木一郎"], "住所": ["千葉市..."] * 3},
        geometry=[box(0, 0, 10, 10), box(10, 0, 20, 10), box(0, 10, 20, 20)], crs=crs)


def test_geopackage_keeps_only_survey_columns(tmp_path: Path) -> None:
    path = tmp_path / "parcels.gpkg"
    frame().to_file(path, layer="fude")
    parcels = read_parcels(path, "EPSG:6677")
    assert list(parcels.frame.columns) == ["parcel_id", "地番", "所在", "地区", "geometry"]
    assert parcels.frame["所在"].tolist() == ["作草部町一丁目"] * 3
    assert parcels.frame["地区"].tolist() == ["作草部町一丁目"] * 3
    assert parcels.frame["parcel_id"].tolist() == ["作草部町一丁目 1-1", "作草部町一丁目 1-2",
                                                   "作草部町一丁目 2"]
    assert "山田太郎" not in parcels.frame.to_string()


def test_keep_columns_names_extra_columns_on_purpose(tmp_path: Path) -> None:
    path = tmp_path / "parcels.gpkg"
    frame().to_file(path)
    parcels = read_parcels(path, "EPSG:6677", keep_columns=["所有者"])
    assert parcels.frame["所有者"].tolist()[0] == "山田太郎"


def test_cp932_shapefile_without_cpg_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "fude.shp"
    pyogrio.write_dataframe(frame(), path, encoding="cp932")
    path.with_suffix(".cpg").unlink(missing_ok=True)
    assert "作草部町".encode("cp932") in path.with_suffix(".dbf").read_bytes()
    parcels = read_parcels(path, "EPSG:6677")
    assert parcels.frame["所在"].iloc[0] == "作草部町一丁目"
    assert parcels.frame["地番"].tolist() == ["1-1", "1-2", "2"]


def test_encoding_argument_overrides_detection(tmp_path: Path) -> None:
    path = tmp_path / "fude.shp"
    pyogrio.write_dataframe(frame(), path, encoding="cp932")
    path.with_suffix(".cpg").unlink(missing_ok=True)
    assert read_parcels(path, None, encoding="shift_jis").frame["所在"].iloc[0] == \
        "作草部町一丁目"


def test_geojson_in_another_crs_is_reprojected(tmp_path: Path) -> None:
    path = tmp_path / "fude.geojson"
    original = frame()
    original.to_crs(4326).to_file(path, driver="GeoJSON")
    parcels = read_parcels(path, "EPSG:6677")
    assert parcels.frame.crs.to_epsg() == 6677
    assert parcels.frame.geometry.iloc[0].area == pytest.approx(100.0, rel=1e-3)


def test_invalid_geometries_are_repaired_and_counted(tmp_path: Path) -> None:
    bowtie = Polygon([(0, 0), (10, 10), (10, 0), (0, 10), (0, 0)])
    broken = gpd.GeoDataFrame({"地番": ["1", "2", "3", "4"]},
                              geometry=[bowtie, box(20, 0, 30, 10), None, Polygon()],
                              crs="EPSG:6677")
    path = tmp_path / "broken.gpkg"
    broken.to_file(path)
    parcels = read_parcels(path, "EPSG:6677")
    assert parcels.repaired == 1
    assert parcels.frame["地番"].tolist() == ["1", "2"]
    assert parcels.frame.geometry.is_valid.all()
    assert parcels.frame.geometry.iloc[0].area == pytest.approx(50.0)
    assert parcels.n_dropped == 2


def test_no_chiban_column_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nochiban.gpkg"
    frame().rename(columns={"地番": "番号"}).to_file(path)
    with pytest.raises(UserInputError, match=r"nochiban\.gpkg has no 地番 column"):
        read_parcels(path, None)
    assert read_parcels(path, None, chiban_column="番号").frame["地番"].iloc[0] == "1-1"


def test_shapefile_without_prj_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "noprj.shp"
    pyogrio.write_dataframe(frame(), path, encoding="utf-8")
    path.with_suffix(".prj").unlink()
    with pytest.raises(UnusableCRS, match=r"noprj\.shp has no CRS"):
        read_parcels(path, "EPSG:6677")


def test_duplicate_keys_get_a_stable_suffix(tmp_path: Path) -> None:
    path = tmp_path / "dup.gpkg"
    gpd.GeoDataFrame({"地番": ["5", "5"], "所在": ["A町", "A町"]},
                     geometry=[box(0, 0, 1, 1), box(1, 0, 2, 1)], crs=6677).to_file(path)
    assert read_parcels(path, None).frame["parcel_id"].tolist() == ["A町 5@0.5,0.5",
                                                                    "A町 5@1.5,0.5"]


def test_parcel_ids_do_not_depend_on_row_order(tmp_path: Path) -> None:
    """Empty 地番 (the key repeats): each parcel keeps its id when the file's rows are
    re-ordered, so a re-run carries a review to the same parcel (issue 16)."""
    rows = gpd.GeoDataFrame({"地番": ["", "", "", "7"], "所在": ["A町"] * 4},
                            geometry=[box(0, 0, 10, 10), box(340, 0, 350, 10),
                                      box(0, 0, 10, 10), box(20, 0, 30, 10)], crs=6677)
    ids = {}
    for name, frame in (("a", rows), ("b", rows.iloc[::-1])):
        path = tmp_path / f"{name}.gpkg"
        frame.to_file(path)
        parcels = read_parcels(path, None).frame
        ids[name] = dict(zip(parcels["parcel_id"], parcels.geometry.centroid.x, strict=True))
        assert parcels["parcel_id"].is_unique
    assert ids["a"] == ids["b"]
    assert ids["a"]["A町 7"] == 25.0


def test_mojxml_through_read_parcels(shared_data: Path) -> None:
    folder = shared_data / "mojxml"
    parcels = read_parcels([folder / "46505-3411-1.xml", folder / "12103-0400-76.xml"],
                           "EPSG:6670")
    assert parcels.dropped["地区外"] == 5
    assert list(parcels.frame.columns) == ["parcel_id", "地番", "所在", "地区", "精度区分",
                                           "注記", "geometry"]
    assert "安房 2740-1" in parcels.frame["parcel_id"].tolist()
    assert parcels.attribution is not None and "登記所備付地図データ" in parcels.attribution
    assert parcels.frame.attrs["attribution"] == parcels.attribution
    assert parcels.frame.crs.to_epsg() == 6670


def test_a_folder_of_mojxml_files(tmp_path: Path, shared_data: Path) -> None:
    folder = tmp_path / "moj"
    folder.mkdir()
    for name in ("12103-0400-76.xml", "46505-3411-102.xml"):
        (folder / name).symlink_to(shared_data / "mojxml" / name)
    (folder / "notes.txt").write_text("not a parcel file")
    parcels = read_parcels(folder, "EPSG:6677")
    assert len(parcels.frame) == 1 + 169


def test_an_empty_folder_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="holds no parcel file"):
        read_parcels(tmp_path, None)


@pytest.mark.parametrize(("shozai", "district"), [
    ("大字小相木町字天神", "大字小相木町"), ("大字小相木町", "大字小相木町"),
    ("作草部町一丁目", "作草部町一丁目"), ("安房字春牧", "安房"), ("", "")])
def test_district_drops_the_koaza(shozai: str, district: str) -> None:
    assert district_of(shozai) == district


def test_district_from_shozai_when_no_oaza_column(tmp_path: Path) -> None:
    path = tmp_path / "p.gpkg"
    gpd.GeoDataFrame({"地番": ["1"], "所在": ["大字江木町字東"]}, geometry=[box(0, 0, 1, 1)],
                     crs=6677).to_file(path)
    assert read_parcels(path, None).frame["地区"].tolist() == ["大字江木町"]
