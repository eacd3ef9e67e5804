"""Issue 16: no data lost or corrupted, one writer per output, no network, no exposed ports.

* ``--force`` replaces only files idou wrote (a provenance marker in each file type), for every
  output (GeoPackage, ``--prob`` COG, ``.qgz``, the ``.vrt`` beside the output, ``idou samples
  make``, ``idou export``), and never an input of the same run.
* A parcel's identity does not depend on row order; review edits follow the right parcel.
* A staff edit committed while a ``--force`` re-run writes is merged, not lost.
* A second run on the same output is refused while the first is alive; a dead one's lock is
  taken over.
* ``idou batch``'s local Dask cluster listens on 127.0.0.1 and serves no dashboard unless asked.
* Network sources (``/vsicurl/``, VRTs leading there, OGR VRTs) are refused before GDAL opens
  them: a local listener sees no connection.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest
from shapely.geometry import box

from ..gpkg_edits import staff_edit
from .conftest import GoodPair, error_line, parcels_frame, run_idou


def _detect(good: GoodPair, out: Path, *extra: str | Path, cwd: Path,
            before: Path | None = None, after: Path | None = None) -> object:
    return run_idou("detect", before or good.before, after or good.after, "-o", out, "--model",
                    good.model, "--quiet", "--threads", "1", *extra, cwd=cwd)


def _refused(run: object, name: str) -> str:
    assert run.returncode == 2, run.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in run.stderr  # type: ignore[attr-defined]
    sentence = error_line(run.stderr)  # type: ignore[attr-defined]
    assert name in sentence, sentence
    return sentence


# --- --force replaces only idou's own files, never an input ----------------------------------

def test_prob_with_force_never_replaces_the_after_flight(good: GoodPair, tmp_path: Path) -> None:
    after = tmp_path / "flight_2025.tif"
    shutil.copy(good.after, after)
    before = after.read_bytes()
    run = _detect(good, tmp_path / "changes.gpkg", "--prob", after, "--force", cwd=tmp_path,
                  after=after)
    assert "input" in _refused(run, "flight_2025.tif")
    assert after.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flight_2025.tif"]


def test_prob_with_force_never_replaces_a_reviewed_geopackage(good: GoodPair,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "changes.gpkg"
    assert _detect(good, out, cwd=tmp_path).returncode == 0  # type: ignore[attr-defined]
    reviewed = tmp_path / "reviewed.gpkg"
    shutil.copy(out, reviewed)
    before = reviewed.read_bytes()
    run = _detect(good, out, "--prob", reviewed, "--force", cwd=tmp_path)
    assert "not written by idou" in _refused(run, "reviewed.gpkg")
    assert reviewed.read_bytes() == before


def test_prob_with_force_replaces_only_its_own_cog(good: GoodPair, tmp_path: Path) -> None:
    """The positive control: idou's own COG is replaced; a user's GeoTIFF is not."""
    out, prob = tmp_path / "changes.gpkg", tmp_path / "prob.tif"
    assert _detect(good, out, "--prob", prob, cwd=tmp_path).returncode == 0  # type: ignore[attr-defined]
    assert _detect(good, out, "--prob", prob, "--force",  # type: ignore[attr-defined]
                   cwd=tmp_path).returncode == 0
    users = tmp_path / "users.tif"
    shutil.copy(good.before, users)
    before = users.read_bytes()
    run = _detect(good, out, "--prob", users, "--force", cwd=tmp_path)
    assert "not written by idou" in _refused(run, "users.tif")
    assert users.read_bytes() == before


def test_force_never_replaces_a_qgis_project_idou_did_not_write(good: GoodPair,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "changes.gpkg"
    assert _detect(good, out, cwd=tmp_path).returncode == 0  # type: ignore[attr-defined]
    project = tmp_path / "changes.qgz"
    with zipfile.ZipFile(project, "w") as archive:
        archive.writestr("changes.qgs", "<qgis projectname='the staff own project'/>")
    before = project.read_bytes()
    run = _detect(good, out, "--force", cwd=tmp_path)
    assert "not written by idou" in _refused(run, "changes.qgz")
    assert project.read_bytes() == before


def test_force_never_replaces_a_vrt_beside_the_output_idou_did_not_write(
        good: GoodPair, tmp_path: Path) -> None:
    """Sheets given as a list are mosaicked, and the mosaic VRT is kept beside the output."""
    listing = tmp_path / "sheets.txt"
    listing.write_text(f"{good.after}\n", encoding="utf-8")
    out = tmp_path / "changes.gpkg"
    assert _detect(good, out, cwd=tmp_path, after=listing).returncode == 0  # type: ignore[attr-defined]
    vrt = tmp_path / "changes.after.vrt"
    assert vrt.is_file()
    assert _detect(good, out, "--force", cwd=tmp_path,  # type: ignore[attr-defined]
                   after=listing).returncode == 0
    vrt.write_text("<VRTDataset rasterXSize='1' rasterYSize='1'/>\n", encoding="utf-8")
    before = vrt.read_bytes()
    run = _detect(good, out, "--force", cwd=tmp_path, after=listing)
    assert "not written by idou" in _refused(run, "changes.after.vrt")
    assert vrt.read_bytes() == before


def test_a_vrt_of_that_name_is_not_overwritten_without_force(good: GoodPair,
                                                             tmp_path: Path) -> None:
    listing = tmp_path / "sheets.txt"
    listing.write_text(f"{good.after}\n", encoding="utf-8")
    vrt = tmp_path / "changes.after.vrt"
    vrt.write_text("<VRTDataset rasterXSize='1' rasterYSize='1'/>\n", encoding="utf-8")
    run = _detect(good, tmp_path / "changes.gpkg", cwd=tmp_path, after=listing)
    assert "--force" in _refused(run, "changes.after.vrt")
    assert not (tmp_path / "changes.gpkg").exists()


def test_output_that_is_also_the_parcel_input_is_refused_even_when_idou_wrote_it(
        good: GoodPair, tmp_path: Path) -> None:
    out = tmp_path / "changes.gpkg"
    assert _detect(good, out, "--parcels", good.parcels,  # type: ignore[attr-defined]
                   cwd=tmp_path).returncode == 0
    before = out.read_bytes()
    run = _detect(good, out, "--parcels", out, "--force", cwd=tmp_path)
    assert "input" in _refused(run, "changes.gpkg")
    assert out.read_bytes() == before


def test_samples_make_never_overwrites_without_force_nor_foreign_files(tmp_path: Path) -> None:
    folder = tmp_path / "samples"
    folder.mkdir()
    flight = folder / "flight_2024.tif"
    flight.write_bytes(b"the city's own orthophoto")
    run = run_idou("samples", "make", folder, "--size", "256", cwd=tmp_path)
    assert "--force" in _refused(run, "flight_2024.tif")
    run = run_idou("samples", "make", folder, "--size", "256", "--force", cwd=tmp_path)
    assert "not written by idou" in _refused(run, "flight_2024.tif")
    assert flight.read_bytes() == b"the city's own orthophoto"
    assert sorted(p.name for p in folder.iterdir()) == ["flight_2024.tif"]
    flight.unlink()
    assert run_idou("samples", "make", folder, "--size", "256",  # type: ignore[attr-defined]
                    cwd=tmp_path).returncode == 0
    run = run_idou("samples", "make", folder, "--size", "256", cwd=tmp_path)
    assert "--force" in _refused(run, "flight_2024.tif")
    assert run_idou("samples", "make", folder, "--size", "256", "--force",  # type: ignore[attr-defined]
                    cwd=tmp_path).returncode == 0


def test_tune_never_writes_over_a_file_idou_did_not_write(good: GoodPair,
                                                          tmp_path: Path) -> None:
    users = tmp_path / "flight_2024.tif"
    shutil.copy(good.before, users)
    before = users.read_bytes()
    run = run_idou("tune", good.model, tmp_path, "--recall", "0.9", "-o", users, cwd=tmp_path)
    assert "not written by idou" in _refused(run, "flight_2024.tif")
    assert users.read_bytes() == before


def test_export_replaces_only_a_model_idou_exported(good: GoodPair, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from idou.errors import OutputConflict
    from idou.training.owned_models import check_model_targets

    ckpt = tmp_path / "best.ckpt"
    ckpt.write_bytes(b"checkpoint")
    users = tmp_path / "users.onnx"
    users.write_bytes(b"someone else's model")
    with pytest.raises(OutputConflict, match="already exists; pass --force"):
        check_model_targets(users, False, False, [ckpt])
    with pytest.raises(OutputConflict, match="not written by idou"):
        check_model_targets(users, True, False, [ckpt])
    with pytest.raises(OutputConflict, match="input of this run"):
        check_model_targets(ckpt, True, False, [ckpt])
    ours = tmp_path / "model.onnx"
    shutil.copy(good.model, ours)  # an idou model (its contract in the metadata) and its card
    for name in ("card.json", "card.md"):
        shutil.copy(good.model.with_name(f"model.{name}"), tmp_path / f"model.{name}")
    check_model_targets(ours, True, True, [ckpt])
    (tmp_path / "model.card.md").write_text("notes of the ML team\n", encoding="utf-8")
    with pytest.raises(OutputConflict, match=r"model\.card\.md was not written by idou"):
        check_model_targets(ours, True, True, [ckpt])


# --- parcels: identity by outline, never by row order -----------------------------------------

def _unnumbered_parcels(path: Path, reverse: bool) -> None:
    frame = parcels_frame()
    frame["地番"] = ""  # 地番 empty: the key 所在 repeats on every parcel
    (frame.iloc[::-1] if reverse else frame).to_file(path, driver="GPKG")


def test_review_follows_the_parcel_when_the_rows_come_in_another_order(
        good: GoodPair, tmp_path: Path) -> None:
    parcels = tmp_path / "parcels.gpkg"
    _unnumbered_parcels(parcels, reverse=False)
    out = tmp_path / "changes.gpkg"
    assert _detect(good, out, "--parcels", parcels, cwd=tmp_path).returncode == 0  # type: ignore[attr-defined]
    first = gpd.read_file(out, layer="candidate_parcels")
    assert len(first) >= 2 and first["parcel_id"].is_unique
    target = first.iloc[0]
    with staff_edit(out) as con:
        con.execute('UPDATE candidate_parcels SET "調査状況" = ?, "備考" = ? WHERE parcel_id = ?',
                    ("課税対象", "ここだけ", target["parcel_id"]))
    parcels.unlink()
    _unnumbered_parcels(parcels, reverse=True)
    assert _detect(good, out, "--parcels", parcels, "--force",  # type: ignore[attr-defined]
                   cwd=tmp_path).returncode == 0
    again = gpd.read_file(out, layer="candidate_parcels")
    edited = again[again["備考"] == "ここだけ"]
    assert len(edited) == 1
    assert edited.geometry.iloc[0].equals_exact(target.geometry, 1e-6)
    assert (again["備考"].fillna("") != "ここだけ").sum() == len(again) - 1


def test_a_key_match_far_away_does_not_carry_the_review() -> None:
    """Old files (ids numbered in row order): the same id 340 m away is another parcel."""
    from idou.geo.review.review_merge import merge_review

    old = gpd.GeoDataFrame({"parcel_id": ["A町", "A町#2"], "調査状況": ["課税対象", "未確認"],
                            "備考": ["ここ", None]},
                           geometry=[box(0, 0, 10, 10), box(340, 0, 350, 10)], crs=6677)
    new = gpd.GeoDataFrame({"parcel_id": ["A町", "A町#2"]},
                           geometry=[box(340, 0, 350, 10), box(0, 0, 10, 10)], crs=6677)
    merged, _ = merge_review(new, old, "parcel_id", match_by_overlap=True, min_iou=0.9,
                             key_min_iou=0.1)
    noted = merged[merged["備考"] == "ここ"]
    assert len(noted) == 1 and noted.geometry.iloc[0].equals(box(0, 0, 10, 10))


# --- an edit committed while a --force re-run writes is kept ----------------------------------

def test_staff_edit_committed_during_a_forced_rerun_is_kept(good: GoodPair, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    from idou.geo.review import gpkg_output
    from idou.inference.detect import DetectJob, run_detect

    out = tmp_path / "changes.gpkg"
    run_detect(DetectJob(good.before, good.after, out, parcels=good.parcels,
                         model=str(good.model), threads=1, write_project=False))
    original = gpkg_output._write_layers
    edits: list[str] = []

    def write_layers_while_staff_edit(path: Path, layers: object) -> None:
        if not edits:  # QGIS commits an edit while idou writes its temporary file
            with staff_edit(out) as con:
                con.execute('UPDATE candidate_parcels SET "備考" = ? WHERE fid = 1',
                            ("途中で保存",))
            edits.append("done")
        original(path, layers)  # type: ignore[arg-type]

    monkeypatch.setattr(gpkg_output, "_write_layers", write_layers_while_staff_edit)
    run_detect(DetectJob(good.before, good.after, out, parcels=good.parcels,
                         model=str(good.model), threads=1, write_project=False, force=True))
    notes = pyogrio.read_dataframe(out, layer="candidate_parcels")["備考"].tolist()
    assert "途中で保存" in notes


# --- one writer per output --------------------------------------------------------------------

def _lock_of(out: Path) -> Path:
    return out.with_name(f".{out.name}.idou.lock")


def test_a_second_run_on_the_same_output_is_refused(good: GoodPair, tmp_path: Path) -> None:
    """A live run (this test process) holds the output: the second run exits 2, writes nothing."""
    out = tmp_path / "changes.gpkg"
    _lock_of(out).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}),
                             encoding="utf-8")
    run = _detect(good, out, cwd=tmp_path)
    sentence = _refused(run, "changes.gpkg")
    assert f"pid {os.getpid()}" in sentence and "another idou run" in sentence
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [_lock_of(out).name]


def test_a_lock_left_by_a_dead_run_is_taken_over(good: GoodPair, tmp_path: Path) -> None:
    out = tmp_path / "changes.gpkg"
    _lock_of(out).write_text(json.dumps({"host": socket.gethostname(), "pid": _a_dead_pid()}),
                             encoding="utf-8")
    assert _detect(good, out, cwd=tmp_path).returncode == 0  # type: ignore[attr-defined]
    assert out.is_file() and not _lock_of(out).exists()


def _a_dead_pid() -> int:
    """The pid of a process that has finished."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_concurrent_detect_runs_into_one_output_leave_one_winner(good: GoodPair,
                                                                 tmp_path: Path) -> None:
    """Two real runs started together: never both exit 0 into the same output."""
    import subprocess
    import sys

    from .conftest import idou_env

    out = tmp_path / "changes.gpkg"
    args = [sys.executable, "-m", "idou.cli", "detect", str(good.before), str(good.after), "-o",
            str(out), "--model", str(good.model), "--quiet", "--threads", "1"]
    procs = [subprocess.Popen(args, cwd=tmp_path, env=idou_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    codes = sorted(p.wait(timeout=180) for p in procs)
    assert codes == [0, 2], [p.stderr.read() for p in procs if p.stderr]  # type: ignore[union-attr]
    assert not _lock_of(out).exists()


# --- idou batch's local cluster ---------------------------------------------------------------

def _bound_addresses(server: object) -> set[str]:
    """The addresses a tornado HTTP server listens on (none when there is no server)."""
    sockets = getattr(server, "_sockets", {}) if server is not None else {}
    return {s.getsockname()[0] for s in sockets.values()}


def _status_page(server: object) -> int:
    """HTTP status of the dashboard's /status page on ``server``."""
    import urllib.error
    import urllib.request

    port = next(iter(server._sockets.values())).getsockname()[1]  # type: ignore[attr-defined]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.mark.parametrize(("workers", "dashboard"), [(1, None), (2, None), (1, "127.0.0.1:0")])
def test_local_dask_cluster_listens_on_loopback_and_has_no_dashboard_unless_asked(
        workers: int, dashboard: str | None) -> None:
    pytest.importorskip("distributed")
    from idou.inference.batch_dask import _client

    with _client(workers, None, dashboard) as client:
        cluster = client.cluster
        scheduler = cluster.scheduler
        assert scheduler.address.startswith("tcp://127.0.0.1:")
        assert len(scheduler.workers) == workers
        assert all(w.startswith("tcp://127.0.0.1:") for w in scheduler.workers)
        servers = [scheduler.http_server] + [getattr(w, "http_server", None)
                                             for w in cluster.workers.values()]
        for server in servers:
            assert _bound_addresses(server) <= {"127.0.0.1"}
        assert _status_page(scheduler.http_server) == (404 if dashboard is None else 200)


def test_flight_toml_dashboard_key(tmp_path: Path) -> None:
    from idou.errors import InvalidOption
    from idou.inference.batch_config import _dashboard

    assert _dashboard({}, "f.toml") is None
    assert _dashboard({"dashboard": 8787}, "f.toml") == "127.0.0.1:8787"
    assert _dashboard({"dashboard": "127.0.0.1:8787"}, "f.toml") == "127.0.0.1:8787"
    with pytest.raises(InvalidOption, match="dashboard must be an address"):
        _dashboard({"dashboard": ":8787"}, "f.toml")


# --- network sources are refused before anything connects ------------------------------------

@pytest.fixture
def listener() -> Iterator[tuple[int, list[object]]]:
    """A local TCP port that records every connection made to it."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    seen: list[object] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, addr = server.accept()
            except OSError:
                continue
            seen.append(addr)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], seen
    stop.set()
    thread.join(2)
    server.close()


def _network_vrt(path: Path, url: str) -> Path:
    """An RGB VRT on the good pair's grid whose bands are read from ``url``."""
    from .conftest import CRS, transform

    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><ColorInterp>{ci}</ColorInterp>'
        f'<SimpleSource><SourceFilename relativeToVRT="0">{url}</SourceFilename>'
        f'<SourceBand>{b}</SourceBand></SimpleSource></VRTRasterBand>\n'
        for b, ci in enumerate(("Red", "Green", "Blue"), start=1))
    path.write_text(
        f'<VRTDataset rasterXSize="256" rasterYSize="256"><SRS>{CRS}</SRS>'
        f'<GeoTransform>{", ".join(map(str, transform().to_gdal()))}</GeoTransform>\n'
        f'{bands}</VRTDataset>\n', encoding="utf-8")
    return path


def _ogr_vrt(path: Path, source: str) -> Path:
    path.write_text(f'<OGRVRTDataSource><OGRVRTLayer name="parcels"><SrcDataSource>{source}'
                    '</SrcDataSource></OGRVRTLayer></OGRVRTDataSource>\n', encoding="utf-8")
    return path


def _network_cases(d: Path, url: str, good: GoodPair) -> dict[str, tuple[list[str], str]]:
    _network_vrt(d / "inner.vrt", f"/vsicurl/{url}")
    outer = d / "outer.vrt"
    outer.write_text(
        '<VRTDataset rasterXSize="256" rasterYSize="256"><VRTRasterBand dataType="Byte" '
        'band="1"><SimpleSource><SourceFilename relativeToVRT="1">inner.vrt</SourceFilename>'
        '<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>\n',
        encoding="utf-8")
    listing = d / "sheets.txt"
    listing.write_text(f"/vsicurl/{url}\n", encoding="utf-8")
    ogr = _ogr_vrt(d / "parcels.vrt", f"/vsicurl/{url}")
    local_ogr = _ogr_vrt(d / "aoi.vrt", str(good.parcels))
    return {
        "vsicurl_argument": ([str(good.before), f"/vsicurl/{url}"], "/vsicurl/"),
        "vrt_with_vsicurl_source": ([str(good.before), str(_network_vrt(
            d / "flight.vrt", f"/vsicurl/{url}"))], "flight.vrt"),
        "vrt_with_http_source": ([str(good.before), str(_network_vrt(d / "http.vrt", url))],
                                 "http.vrt"),
        "vrt_nesting_a_network_vrt": ([str(good.before), str(outer)], "outer.vrt"),
        "sheet_list_naming_a_url": ([str(good.before), str(listing)], "sheets.txt"),
        "ogr_vrt_as_parcels": ([str(good.before), str(good.after), "--parcels", str(ogr)],
                               "parcels.vrt"),
        "ogr_vrt_as_buildings": ([str(good.before), str(good.after), "--buildings", str(ogr)],
                                 "parcels.vrt"),
        "ogr_vrt_as_aoi": ([str(good.before), str(good.after), "--aoi", str(local_ogr)],
                           "aoi.vrt"),
    }


NETWORK_CASES = ["vsicurl_argument", "vrt_with_vsicurl_source", "vrt_with_http_source",
                 "vrt_nesting_a_network_vrt", "sheet_list_naming_a_url", "ogr_vrt_as_parcels",
                 "ogr_vrt_as_buildings", "ogr_vrt_as_aoi"]


@pytest.mark.parametrize("case", NETWORK_CASES)
def test_network_sources_are_refused_without_connecting(
        case: str, good: GoodPair, tmp_path: Path,
        listener: tuple[int, list[object]]) -> None:
    port, seen = listener
    url = f"http://127.0.0.1:{port}/ortho.tif"
    args, name = _network_cases(tmp_path, url, good)[case]
    flights, rest = args[:2], args[2:]
    out = tmp_path / "out"
    out.mkdir()
    run = run_idou("detect", *flights, "-o", out / "changes.gpkg", "--model", good.model,
                   "--quiet", "--threads", "1", *rest, cwd=tmp_path)
    sentence = _refused(run, name)
    assert "--allow-network" in sentence and "local" in sentence
    assert seen == []
    assert sorted(p.name for p in out.iterdir()) == []


def test_allow_network_lifts_the_refusal(good: GoodPair, tmp_path: Path,
                                         listener: tuple[int, list[object]]) -> None:
    """With --allow-network GDAL does reach the source (here a port that answers nothing)."""
    port, seen = listener
    vrt = _network_vrt(tmp_path / "flight.vrt", f"/vsicurl/http://127.0.0.1:{port}/o.tif")
    env_extra = {"GDAL_HTTP_TIMEOUT": "2", "GDAL_HTTP_MAX_RETRY": "0"}
    from .conftest import idou_env

    run = run_idou("detect", good.before, vrt, "-o", tmp_path / "changes.gpkg", "--model",
                   good.model, "--quiet", "--allow-network", cwd=tmp_path,
                   env=idou_env(**env_extra))
    assert run.returncode != 0
    assert "--allow-network" not in run.stderr
    assert seen, "the allowed source was never contacted"


def test_batch_check_refuses_a_network_vrt_unless_the_flight_allows_it(
        good: GoodPair, tmp_path: Path, listener: tuple[int, list[object]]) -> None:
    from idou.geo.errors import UserInputError
    from idou.inference.batch_check import check_flight
    from idou.inference.batch_config import load_flight_config

    port, seen = listener
    _ogr_vrt(tmp_path / "parcels.vrt", f"/vsicurl/http://127.0.0.1:{port}/p.gpkg")
    toml = tmp_path / "flight.toml"
    toml.write_text(f'output = "run"\nmodel = "{good.model}"\nparcels = "parcels.vrt"\n'
                    f'[before]\npath = "{good.before}"\n[after]\npath = "{good.after}"\n',
                    encoding="utf-8")
    with pytest.raises(UserInputError, match=r"parcels\.vrt .*OGR VRT.*allow_network"):
        check_flight(load_flight_config(toml))
    assert seen == []
    assert load_flight_config(toml).allow_network is False
    text = toml.read_text(encoding="utf-8").replace('parcels = "parcels.vrt"\n',
                                                    'parcels = "parcels.vrt"\n'
                                                    'allow_network = true\n')
    toml.write_text(text, encoding="utf-8")
    assert load_flight_config(toml).allow_network is True


def test_the_marker_check_leaves_a_foreign_geopackage_untouched(tmp_path: Path) -> None:
    """The marker check reads a user's GeoPackage read-only: it is byte-identical after."""
    from idou.geo.files.owned_outputs import written_by_idou

    path = tmp_path / "parcels.gpkg"
    parcels_frame().to_file(path, driver="GPKG")
    before = path.read_bytes()
    assert not written_by_idou(path)
    assert path.read_bytes() == before
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0
