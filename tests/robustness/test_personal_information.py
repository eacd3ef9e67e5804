"""Personal information (個人情報): owners' names and addresses in the inputs reach no output.

The real ``idou detect --parcels --buildings`` and ``idou batch`` run on parcels and buildings
that carry owner columns; every file they write (GeoPackage bytes, the .qgz project unpacked,
the probability COG, batch's journal, status, log and HTML summary) and everything they print
(stdout, stderr) must be free of those values, in UTF-8 and in Shift_JIS (CP932).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import geopandas as gpd

from .conftest import GoodPair, parcels_frame, run_idou

OWNER_VALUES = ("山田太郎", "前橋市大手町1-1-1", "鈴木花子", "高崎市八島町2-2")


def _searchable(path: Path) -> list[tuple[str, bytes]]:
    """(name, bytes) of a file and, for zip files (.qgz), of every member."""
    data = path.read_bytes()
    out = [(path.name, data)]
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            out += [(f"{path.name}:{n}", archive.read(n)) for n in archive.namelist()]
    return out


def _inputs_with_owners(folder: Path) -> tuple[Path, Path]:
    """Parcels and buildings files whose rows carry owners' names and addresses."""
    folder.mkdir()
    parcels = parcels_frame()
    parcels["所有者"] = ["山田太郎", "鈴木花子", "山田太郎", "鈴木花子"]
    parcels["氏名"] = parcels["所有者"]
    parcels["住所"] = ["前橋市大手町1-1-1", "高崎市八島町2-2"] * 2
    parcels_path = folder / "parcels_with_owners.gpkg"
    parcels.to_file(parcels_path, driver="GPKG")
    buildings = gpd.GeoDataFrame(
        {"家屋番号": ["B1", "B2"], "所有者": ["山田太郎", "鈴木花子"],
         "住所": ["前橋市大手町1-1-1", "高崎市八島町2-2"]},
        geometry=list(parcels_frame().geometry.buffer(-1.0)[:2]), crs=parcels.crs)
    buildings_path = folder / "buildings_with_owners.gpkg"
    buildings.to_file(buildings_path, driver="GPKG")
    return parcels_path, buildings_path


def _assert_nowhere(haystacks: list[tuple[str, bytes]]) -> None:
    for value in OWNER_VALUES:
        for encoding in ("utf-8", "cp932"):
            needle = value.encode(encoding)
            found = [name for name, data in haystacks if needle in data]
            assert not found, f"{value!r} ({encoding}) found in {found}"


def test_owner_columns_reach_no_output_or_log(good: GoodPair, tmp_path: Path) -> None:
    parcels_path, buildings_path = _inputs_with_owners(tmp_path / "inputs")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    run = run_idou("detect", good.before, good.after, "-o", out_dir / "changes.gpkg",
                   "--model", good.model, "--parcels", parcels_path, "--buildings",
                   buildings_path, "--prob", out_dir / "prob.tif", "--threads", "1",
                   cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    written = sorted(p for p in out_dir.rglob("*") if p.is_file())
    assert {p.name for p in written} >= {"changes.gpkg", "changes.qgz", "prob.tif"}
    candidates = gpd.read_file(out_dir / "changes.gpkg", layer="candidate_parcels")
    assert len(candidates) > 0  # the parcels were used: the check below is not vacuous

    haystacks = [("stdout", run.stdout.encode()), ("stderr", run.stderr.encode())]
    for path in written:
        haystacks += _searchable(path)
    _assert_nowhere(haystacks)
    # the survey columns themselves are there
    assert set(candidates["地番"]) <= {"1-1", "1-2", "1-3", "1-4"}
    assert any(b"\xe5\xa4\xa7\xe6\x89\x8b\xe7\x94\xba" in data  # 大手町 (所在) is kept
               for name, data in haystacks if name == "changes.gpkg")


def test_owner_columns_reach_no_batch_output_or_report(good: GoodPair, tmp_path: Path) -> None:
    """``idou batch``: journal, status, summary reports and GeoPackage are free of them too."""
    parcels_path, buildings_path = _inputs_with_owners(tmp_path / "inputs")
    flight = tmp_path / "flight.toml"
    flight.write_text(f"""
output = "run"
model = "{good.model}"
parcels = "{parcels_path}"
buildings = "{buildings_path}"
threads = 1
workers = 1

[before]
path = "{good.before}"

[after]
path = "{good.after}"
""", encoding="utf-8")
    run = run_idou("batch", flight, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    written = sorted(p for p in (tmp_path / "run").rglob("*") if p.is_file())
    assert {".gpkg", ".qgz", ".html", ".log", ".json"} <= {p.suffix for p in written}, written
    haystacks = [("stdout", run.stdout.encode()), ("stderr", run.stderr.encode())]
    for path in written:
        haystacks += _searchable(path)
    _assert_nowhere(haystacks)
