"""`idou batch` end to end on a tiny flight: sheets vs mosaic, kill -9 and resume, Dask, --check.

The flight is 384 x 320 px at 0.2 m (EPSG:6677), cut into 128 px sheets; the model is a tiny
ONNX graph built here (mean colour difference, smoothed, through a sigmoid) that honours the
contract; blocks are 96 px (two tile strides), so the run has 16 blocks.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import pyogrio
import pytest
import rasterio
from affine import Affine
from onnx import TensorProto, helper
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window
from shapely.geometry import box

from idou.errors import OutputConflict, UnusableCRS, UserInputError
from idou.inference.batch import EXIT_OK, run_batch
from idou.inference.batch_check import check_flight
from idou.inference.batch_config import load_flight_config
from idou.inference.batch_report import read_status
from idou.inference.contract import ModelContract

from ..onnx_builders import contract_model, save_with_card

CRS = "EPSG:6677"
GSD = 0.2
WIDTH, HEIGHT = 384, 320
SHEET = 128
ORIGIN = (-30000.0, 12000.0)
TRANSFORM = Affine(GSD, 0, ORIGIN[0], 0, -GSD, ORIGIN[1])
NEW = [(30, 40, 60, 50), (100, 180, 40, 40), (200, 88, 70, 30), (250, 250, 50, 45)]
GONE = [(60, 300, 40, 50), (150, 20, 30, 70)]


# --- tiny data --------------------------------------------------------------------------------


def tiny_model(path: Path, contract: ModelContract) -> Path:
    """An ONNX change model: new = sigmoid(3 (smoothed mean(after - before) - 1)), and back."""
    consts = [helper.make_tensor("k", TensorProto.FLOAT, [], [3.0]),
              helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
              helper.make_tensor("minus", TensorProto.FLOAT, [], [-1.0])]
    nodes = [
        helper.make_node("Sub", ["after", "before"], ["d"]),
        helper.make_node("ReduceMean", ["d"], ["m"], axes=[1], keepdims=1),
        helper.make_node("AveragePool", ["m"], ["s"], kernel_shape=[5, 5], pads=[2, 2, 2, 2]),
        helper.make_node("Sub", ["s", "one"], ["a"]),
        helper.make_node("Mul", ["a", "k"], ["za"]),
        helper.make_node("Sigmoid", ["za"], ["pn"]),
        helper.make_node("Mul", ["s", "minus"], ["ns"]),
        helper.make_node("Sub", ["ns", "one"], ["b"]),
        helper.make_node("Mul", ["b", "k"], ["zb"]),
        helper.make_node("Sigmoid", ["zb"], ["pd"]),
        helper.make_node("Concat", ["pn", "pd"], ["probabilities"], axis=1),
    ]
    model = contract_model(nodes, consts, contract, name="tiny_change")
    onnx.checker.check_model(model)
    return save_with_card(model, path, contract, name=contract.model_name,
                          version=contract.model_version, trained_on="")


def _scenes(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ground = rng.integers(70, 110, size=(3, HEIGHT, WIDTH), dtype=np.uint8)
    before, after = ground.copy(), ground.copy()
    after[:, 2:] = np.clip(after[:, 2:].astype(int) + rng.integers(-6, 7, (3, HEIGHT - 2, WIDTH)),
                           0, 255).astype(np.uint8)
    for r, c, h, w in NEW:
        after[:, r:r + h, c:c + w] = np.array([210, 200, 190], dtype=np.uint8)[:, None, None]
    for r, c, h, w in GONE:
        before[:, r:r + h, c:c + w] = np.array([220, 215, 205], dtype=np.uint8)[:, None, None]
    return before, after


def _write(path: Path, data: np.ndarray, transform: Affine, crs: str | None) -> None:
    profile = {"driver": "GTiff", "dtype": "uint8", "count": 3, "height": data.shape[1],
               "width": data.shape[2], "tiled": True, "blockxsize": 64, "blockysize": 64}
    if crs:
        profile.update(crs=crs, transform=transform)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
    if crs is None:  # a TIFF + world file, as sheets are often delivered
        path.with_suffix(".tfw").write_text("\n".join(
            str(v) for v in (transform.a, 0.0, 0.0, transform.e, transform.c + transform.a / 2,
                             transform.f + transform.e / 2)) + "\n")


def _sheets(folder: Path, data: np.ndarray, crs: str | None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for r in range(0, HEIGHT, SHEET):
        for c in range(0, WIDTH, SHEET):
            part = data[:, r:r + SHEET, c:c + SHEET]
            path = folder / f"09LD{r // SHEET}{c // SHEET}.tif"
            _write(path, part, TRANSFORM @ Affine.translation(c, r), crs)
            out.append(path)
    return out


def _parcels(path: Path) -> Path:
    import geopandas as gpd

    x0, y1 = ORIGIN
    x1, y0 = x0 + WIDTH * GSD, y1 - HEIGHT * GSD
    cells, names = [], []
    step = 16.0
    y = y0
    n = 1
    while y < y1:
        x = x0
        while x < x1:
            cells.append(box(x, y, min(x + step, x1), min(y + step, y1)))
            names.append(f"{100 + n}-1")
            n += 1
            x += step
        y += step
    frame = gpd.GeoDataFrame({"地番": names, "所在": ["大字テスト"] * len(names)},
                             geometry=cells, crs=CRS)
    frame.to_file(path, layer="parcels", driver="GPKG")
    return path


@pytest.fixture(scope="module")
def flight_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sheets (after: GeoTIFF; before: TIFF + .tfw without CRS), mosaics, parcels, model."""
    root = tmp_path_factory.mktemp("flight")
    before, after = _scenes()
    _sheets(root / "sheets_2024", before, crs=None)
    _sheets(root / "sheets_2025", after, crs=CRS)
    _write(root / "mosaic_2024.tif", before, TRANSFORM, CRS)
    _write(root / "mosaic_2025.tif", after, TRANSFORM, CRS)
    _parcels(root / "parcels.gpkg")
    contract = ModelContract(tile_size=64, tile_overlap=16, gsd_m=GSD, model_name="tiny",
                             model_version="1.0.0")
    tiny_model(root / "tiny.onnx", contract)
    return root


def _toml(flight_dir: Path, out: Path, *, mosaic: bool = False, extra: str = "",
          model: str = "tiny.onnx", before: str | None = None, after: str | None = None,
          name: str | None = None) -> Path:
    if mosaic:
        before, after = 'path = "mosaic_2024.tif"', 'path = "mosaic_2025.tif"'
    before = before or 'path = "sheets_2024"\ncrs = "EPSG:6677"'
    after = after or 'path = "sheets_2025/*.tif"'
    body = (f'output = "{out}"\nmodel = "{model}"\nparcels = "parcels.gpkg"\n'
            f"block_size = 96\nthreads = 1\n{extra}[before]\n{before}\n[after]\n{after}\n")
    path = flight_dir / f"{name or out.name}.toml"
    path.write_text(body, encoding="utf-8")
    return path


def _changes(gpkg: Path) -> list[tuple[object, ...]]:
    """The changes layer as sorted rows of (WKB, attributes): what a reviewer sees."""
    frame = pyogrio.read_dataframe(gpkg, layer="changes")
    cols = sorted(c for c in frame.columns if c != "geometry")
    rows = [(g.wkb_hex, *(str(v) for v in vals))
            for g, vals in zip(frame.geometry, frame[cols].itertuples(index=False), strict=True)]
    return sorted(rows)


def _block_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "blocks").glob("*.tif"))}


@pytest.fixture(scope="module")
def reference(flight_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run on the sheets, in-process, one worker."""
    out = tmp_path_factory.mktemp("runs") / "reference"
    result = run_batch(load_flight_config(_toml(flight_dir, out)))
    assert result.exit_code == EXIT_OK
    return out


# --- tests ------------------------------------------------------------------------------------


def test_a_run_finds_the_changes_and_reports_them(reference: Path) -> None:
    status = read_status(reference)
    assert status["state"] == "done"
    assert status["blocks"] == {"total": 16, "done": 16, "failed": 0, "running": 0,
                                "pending": 0}
    assert status["km2"]["done"] == pytest.approx(WIDTH * HEIGHT * GSD * GSD / 1e6, abs=1e-4)
    assert len(_block_bytes(reference)) == 16
    with rasterio.open(reference / "probabilities.vrt") as mosaic:
        probs = mosaic.read()
    r, c, h, w = NEW[0]
    assert probs[0, r + h // 2, c + w // 2] > 200 and probs[1, r + h // 2, c + w // 2] < 50
    r, c, h, w = GONE[0]
    assert probs[1, r + h // 2, c + w // 2] > 200
    assert probs[0, 5, 200] < 50 and probs[1, 5, 200] < 50
    assert len(_changes(reference / "review.gpkg")) >= len(NEW) + len(GONE) - 1
    summary = (reference / "summary.html").read_text(encoding="utf-8")
    assert "16 / 16" in summary
    assert "block r0000_c0000 done" in (reference / "idou-batch.log").read_text("utf-8")
    con = sqlite3.connect(reference / "journal.sqlite")
    timings = con.execute(
        "SELECT COUNT(*) FROM blocks WHERE state = 'done' AND seconds > 0 AND model_seconds > 0 "
        "AND tiles_run > 0 AND worker IS NOT NULL").fetchone()[0]
    assert timings == 16


def test_progress_goes_to_the_callback_block_by_block_with_the_rate(flight_dir: Path,
                                                                    tmp_path: Path) -> None:
    """`idou batch` draws its bar from these calls; the library draws nothing itself."""
    calls: list[tuple[str, float, float, float | None]] = []

    def progress(stage: str, done: float, total: float, *, rate: float | None = None) -> None:
        calls.append((stage, done, total, rate))

    config = load_flight_config(_toml(flight_dir, tmp_path / "progress", mosaic=True))
    assert run_batch(config, progress=progress).exit_code == EXIT_OK
    assert [call[:3] for call in calls] == [("blocks", n, 16) for n in range(17)]
    assert calls[0][3] is None
    assert all(rate is not None and rate > 0 for *_, rate in calls[1:])


def test_blocks_equal_a_whole_grid_pass(reference: Path, flight_dir: Path) -> None:
    from idou.geo.raster.align import AlignedPair
    from idou.geo.raster.preflight import preflight
    from idou.geo.raster.sources import open_source
    from idou.inference.blending import to_uint8
    from idou.inference.engine import predict_window
    from idou.inference.model_source import resolve_model
    from idou.inference.session import make_session

    model = resolve_model(str(flight_dir / "tiny.onnx"))
    report = preflight(open_source(flight_dir / "mosaic_2024.tif"),
                       open_source(flight_dir / "mosaic_2025.tif"), model.contract,
                       estimate_misregistration=False)
    with AlignedPair(report) as pair:
        whole = to_uint8(predict_window(pair, make_session(model.data, threads=1),
                                        model.contract, Window(0, 0, WIDTH, HEIGHT)))
    with rasterio.open(reference / "probabilities.vrt") as mosaic:
        np.testing.assert_array_equal(mosaic.read(), whole)


def test_folder_of_sheets_gives_the_same_changes_as_one_mosaic_file(
        reference: Path, flight_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "mosaic_run"
    result = run_batch(load_flight_config(_toml(flight_dir, out, mosaic=True)))
    assert result.exit_code == EXIT_OK
    assert _changes(out / "review.gpkg") == _changes(reference / "review.gpkg")
    assert _block_bytes(out) == _block_bytes(reference)


def test_batch_gives_the_same_changes_as_idou_detect(reference: Path, flight_dir: Path,
                                                     tmp_path: Path) -> None:
    from idou.inference.detect import DetectJob, run_detect

    out = tmp_path / "detect.gpkg"
    run_detect(DetectJob(flight_dir / "mosaic_2024.tif", flight_dir / "mosaic_2025.tif", out,
                         parcels=flight_dir / "parcels.gpkg", model=str(flight_dir / "tiny.onnx"),
                         threads=1, write_project=False))
    assert _changes(out) == _changes(reference / "review.gpkg")
    for layer in ("candidate_parcels", "coverage"):
        ours = pyogrio.read_dataframe(reference / "review.gpkg", layer=layer)
        theirs = pyogrio.read_dataframe(out, layer=layer)
        assert len(ours) == len(theirs)
        assert ours.geometry.area.sum() == pytest.approx(theirs.geometry.area.sum())


def _idou(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "idou.cli", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _done(out: Path) -> int:
    path = out / "journal.sqlite"
    if not path.is_file():
        return 0
    try:
        con = sqlite3.connect(path, timeout=5)
        try:
            return int(con.execute("SELECT COUNT(*) FROM blocks WHERE state = 'done'")
                       .fetchone()[0])
        finally:
            con.close()
    except sqlite3.OperationalError:
        return 0


def _state(out: Path) -> str | None:
    try:
        return str(json.loads((out / "status.json").read_text(encoding="utf-8"))["state"])
    except (OSError, ValueError, KeyError):
        return None


def _finished_at(out: Path) -> dict[str, float]:
    """Done blocks and when they finished."""
    if not (out / "journal.sqlite").is_file():
        return {}
    con = sqlite3.connect(out / "journal.sqlite")
    try:
        return dict(con.execute("SELECT id, finished_at FROM blocks WHERE state = 'done'"))
    finally:
        con.close()


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_equals_an_uninterrupted_run(
        reference: Path, flight_dir: Path, tmp_path: Path) -> None:
    rng = random.Random(6)
    trials = [("after_blocks", rng.randint(1, 6)), ("after_blocks", rng.randint(4, 10)),
              ("after_seconds", rng.uniform(1.5, 3.5)), ("while_finishing", 0)]
    mid_run = 0
    for i, (how, when) in enumerate(trials):
        out = tmp_path / f"killed{i}"
        toml = _toml(flight_dir, out)
        proc = _idou("batch", str(toml), "--quiet")
        deadline = time.monotonic() + 90
        if how == "after_blocks":
            while _done(out) < when and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
        elif how == "while_finishing":
            while (_state(out) != "finishing" and proc.poll() is None
                   and time.monotonic() < deadline):
                time.sleep(0.005)
        else:
            time.sleep(float(when))
        killed = proc.poll() is None
        if killed:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        mid_run += killed and 0 < _done(out) < 16
        kept = _finished_at(out)
        rerun = subprocess.run([sys.executable, "-m", "idou.cli", "batch", str(toml), "--quiet"],
                               capture_output=True, text=True, timeout=180)
        assert rerun.returncode == 0, rerun.stderr
        assert _block_bytes(out) == _block_bytes(reference), f"trial {i} ({how}={when})"
        assert _changes(out / "review.gpkg") == _changes(reference / "review.gpkg")
        status = json.loads((out / "status.json").read_text(encoding="utf-8"))
        assert status["state"] == "done" and status["blocks"]["done"] == 16
        if killed and how == "after_blocks":
            assert len(kept) >= when
        after_rerun = _finished_at(out)
        assert all(after_rerun[k] == v for k, v in kept.items()), "done blocks were recomputed"
        assert not list((out / "blocks").glob(".*tmp"))
        assert not [p for p in out.glob(".*") if p.name != ".idou-batch.lock"]
    assert mid_run >= 2, "the kills should have hit runs with blocks half done"


def test_sigterm_stops_with_exit_130_and_status_interrupted_then_resumes(
        reference: Path, flight_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "terminated"
    toml = _toml(flight_dir, out)
    proc = _idou("batch", str(toml), "--quiet")
    deadline = time.monotonic() + 90
    while _done(out) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    if proc.returncode == 0:  # it finished before the signal arrived
        pytest.skip("the run ended before SIGTERM reached it")
    assert proc.returncode == 130, stderr
    assert _state(out) == "interrupted"
    assert "Traceback" not in stderr.decode()
    rerun = subprocess.run([sys.executable, "-m", "idou.cli", "batch", str(toml), "--quiet"],
                           capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr
    assert _block_bytes(out) == _block_bytes(reference)


@pytest.mark.slow
def test_dask_scheduler_gives_the_same_output_as_the_local_path(
        reference: Path, flight_dir: Path, tmp_path: Path) -> None:
    from distributed import LocalCluster
    from typer.testing import CliRunner

    from idou.cli import app

    out = tmp_path / "dask_run"
    toml = _toml(flight_dir, out)
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                      dashboard_address=None) as cluster:
        result = CliRunner().invoke(app, ["batch", str(toml), "--scheduler",
                                          cluster.scheduler_address, "--quiet"])
    assert result.exit_code == 0, result.output
    assert _block_bytes(out) == _block_bytes(reference)
    assert _changes(out / "review.gpkg") == _changes(reference / "review.gpkg")
    workers = {r[0] for r in sqlite3.connect(out / "journal.sqlite").execute(
        "SELECT worker FROM blocks")}
    assert len(workers) >= 1 and all(w for w in workers)


def _fail_one_block(monkeypatch: pytest.MonkeyPatch, block_id: str, error: Exception
                    ) -> object:
    """Make every try of one block raise ``error``; returns the real ``predict`` to restore."""
    from idou.inference import batch_worker

    real = batch_worker._WorkerEngine.predict

    def failing(self: object, block: batch_worker.Block, stats: object = None) -> object:
        if block.id == block_id:
            raise error
        return real(self, block, stats)  # type: ignore[arg-type]

    monkeypatch.setattr(batch_worker._WorkerEngine, "predict", failing)
    return real


def _assert_nothing_ran(out: Path) -> None:
    assert not (out / "journal.sqlite").exists()
    assert not list(out.glob("blocks/*.tif"))


def test_check_passes_on_a_good_flight_without_running_anything(
        flight_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "checked"
    report = check_flight(load_flight_config(_toml(flight_dir, out)))
    assert (report.grid_width, report.grid_height, report.blocks) == (WIDTH, HEIGHT, 16)
    assert report.sheets_before == report.sheets_after == 9
    assert not out.exists()
    from typer.testing import CliRunner

    from idou.cli import app

    result = CliRunner().invoke(app, ["batch", str(_toml(flight_dir, out)), "--check"])
    assert result.exit_code == 0, result.output
    assert "16 of 96 px" in result.output and "check passed" in result.output
    assert not out.exists()


def test_check_says_when_block_size_is_rounded_to_the_tile_stride(
        flight_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from idou.cli import app

    toml = _toml(flight_dir, tmp_path / "rounded", name="rounded")
    toml.write_text(toml.read_text().replace("block_size = 96", "block_size = 110"))
    result = CliRunner().invoke(app, ["batch", str(toml), "--check"])
    assert result.exit_code == 0, result.output
    assert "of 96 px" in result.output  # tiles of 64 px overlapping 16: a stride of 48
    assert "block_size = 110 became 96 px" in result.output and "(48 px" in result.output


def test_check_catches_a_missing_sheet(flight_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    path = _toml(flight_dir, out, name="missing_sheet", after='paths = '
                 '["sheets_2025/09LD00.tif", "sheets_2025/09LD99.tif"]')
    result = subprocess.run([sys.executable, "-m", "idou.cli", "batch", str(path), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "09LD99.tif" in result.stderr and "Traceback" not in result.stderr
    _assert_nothing_ran(out)


def test_check_catches_a_crs_mismatch_between_sheets(flight_dir: Path, tmp_path: Path) -> None:
    import shutil

    sheets = tmp_path / "mixed"
    shutil.copytree(flight_dir / "sheets_2025", sheets)
    with rasterio.open(sheets / "09LD11.tif", "r+") as ds:
        ds.crs = "EPSG:6676"
    out = tmp_path / "o"
    path = _toml(flight_dir, out, name="crs_mismatch", after=f'path = "{sheets}"')
    with pytest.raises(UserInputError, match="09LD11.tif"):
        check_flight(load_flight_config(path))
    _assert_nothing_ran(out)


def test_check_catches_an_unreadable_model(flight_dir: Path, tmp_path: Path) -> None:
    bad = flight_dir / "broken.onnx"
    bad.write_bytes((flight_dir / "tiny.onnx").read_bytes()[:200])
    out = tmp_path / "o"
    path = _toml(flight_dir, out, name="bad_model", model="broken.onnx")
    result = subprocess.run([sys.executable, "-m", "idou.cli", "batch", str(path), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "broken.onnx" in result.stderr and "Traceback" not in result.stderr
    _assert_nothing_ran(out)


def test_a_failing_block_exits_3_and_a_rerun_finishes(flight_dir: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from idou.inference import batch_worker

    out = tmp_path / "flaky"
    config = load_flight_config(_toml(flight_dir, out, extra="max_attempts = 2\n"))
    real = _fail_one_block(monkeypatch, "r0001_c0002", OSError("disk hiccup"))
    first = run_batch(config)
    assert first.exit_code == 3 and first.blocks_failed == 1 and first.gpkg is None
    status = read_status(out)
    assert status["state"] == "failed" and status["blocks"]["failed"] == 1
    row = sqlite3.connect(out / "journal.sqlite").execute(
        "SELECT state, attempts, error FROM blocks WHERE id = 'r0001_c0002'").fetchone()
    assert row == ("failed", 2, "OSError: disk hiccup")
    monkeypatch.setattr(batch_worker._WorkerEngine, "predict", real)
    second = run_batch(config)
    assert second.exit_code == 0 and second.blocks_done == 16
    # summary.html reports the whole run: both sittings, their start and their state
    summary = (out / "summary.html").read_text(encoding="utf-8")
    assert "in 2 sittings" in summary
    sittings = summary.split("Sittings</h2>", 1)[1].split("</table>", 1)[0]
    assert sittings.count("<tr><td>") == 2
    assert "<td>failed</td>" in sittings and "<td>done</td>" in sittings
    assert status["started_at"] in summary  # the first sitting's start


def test_another_config_on_the_same_output_folder_is_refused(
        reference: Path, flight_dir: Path) -> None:
    path = _toml(flight_dir, reference, name="other_blocks")
    path.write_text(path.read_text().replace("block_size = 96", "block_size = 192"))
    with pytest.raises(OutputConflict, match="other inputs"):
        run_batch(load_flight_config(path))


def test_a_sheet_redelivered_at_the_same_path_is_computed_again_on_resume(
        flight_dir: Path, tmp_path: Path) -> None:
    """The journal fingerprints sheet contents, not only paths: a sheet replaced by one of the
    same size and modification time (the roof on it is gone) is recomputed on the next run,
    and the result equals a clean run on the new sheets."""
    import shutil

    flights = tmp_path / "flight"
    shutil.copytree(flight_dir, flights, ignore=shutil.ignore_patterns("*.toml"))
    first = run_batch(load_flight_config(_toml(flights, tmp_path / "resumed")))
    assert first.exit_code == EXIT_OK
    stale = set(pyogrio.read_dataframe(tmp_path / "resumed" / "review.gpkg",
                                       layer="changes")["change_id"])

    sheet = flights / "sheets_2025" / "09LD00.tif"  # the roof NEW[0] stands on it
    stat = sheet.stat()
    before, _ = _scenes()
    _write(sheet, np.ascontiguousarray(before[:, :SHEET, :SHEET]), TRANSFORM, CRS)
    assert sheet.stat().st_size == stat.st_size
    os.utime(sheet, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    # new processes, as an operator resumes (GDAL keeps the old sheet open in this one)
    for out in ("resumed", "clean"):
        run = _idou("batch", str(_toml(flights, tmp_path / out)), "--quiet")
        assert run.wait(timeout=300) == EXIT_OK, run.stderr.read()  # type: ignore[union-attr]
    resumed = pyogrio.read_dataframe(tmp_path / "resumed" / "review.gpkg", layer="changes")
    clean = pyogrio.read_dataframe(tmp_path / "clean" / "review.gpkg", layer="changes")
    found = resumed[resumed["検出状況"] == "検出"]
    assert sorted(found["change_id"]) == sorted(clean["change_id"])
    gone = stale - set(clean["change_id"])
    assert gone  # the roof of the replaced sheet, kept for review but marked
    assert set(resumed.loc[resumed["change_id"].isin(gone), "検出状況"]) == {"再実行で未検出"}
    with sqlite3.connect(tmp_path / "resumed" / "journal.sqlite") as con:
        states = dict(con.execute("SELECT state, COUNT(*) FROM blocks GROUP BY state"))
    assert states == {"done": 16}


def test_a_flight_in_latitude_longitude_needs_crs_in_the_batch_file(
        flight_dir: Path, tmp_path: Path) -> None:
    """Sheets in EPSG:4326: refused without `crs` (the sentence names the key); with
    `crs = "EPSG:6677"` under [after] they are warped onto that grid and the check passes."""
    from rasterio.warp import calculate_default_transform, reproject

    with rasterio.open(flight_dir / "mosaic_2025.tif") as src:
        tr, w, h = calculate_default_transform(src.crs, "EPSG:4326", src.width, src.height,
                                               *src.bounds)
        data = np.zeros((3, h, w), np.uint8)
        reproject(src.read(), data, src_transform=src.transform, src_crs=src.crs,
                  dst_transform=tr, dst_crs="EPSG:4326")
    with rasterio.open(tmp_path / "latlon_2025.tif", "w", driver="GTiff", width=w, height=h,
                       count=3, dtype="uint8", crs="EPSG:4326", transform=tr) as dst:
        dst.write(data)
    after = f'path = "{tmp_path / "latlon_2025.tif"}"'
    refused = _toml(flight_dir, tmp_path / "o1", name="latlon_no_crs", after=after)
    with pytest.raises(UnusableCRS, match=r"latlon_2025\.tif .*crs under \[after\]"):
        check_flight(load_flight_config(refused))
    warped = _toml(flight_dir, tmp_path / "o2", name="latlon_crs",
                   after=after + '\ncrs = "EPSG:6677"')
    report = check_flight(load_flight_config(warped))
    assert report.grid_width == pytest.approx(WIDTH, abs=2)
    assert report.grid_height == pytest.approx(HEIGHT, abs=2)


def test_a_damaged_jpeg_tile_in_a_sheet_stops_the_run_naming_the_sheet(
        flight_dir: Path, tmp_path: Path) -> None:
    """GDAL only warns about the corrupt JPEG data; the run stops with a sentence naming the
    sheet instead of scoring garbage, and no GeoPackage is written."""
    import shutil

    flights = tmp_path / "flight"
    shutil.copytree(flight_dir, flights, ignore=shutil.ignore_patterns("*.toml"))
    sheet = flights / "sheets_2025" / "09LD11.tif"
    with rasterio.open(sheet) as src:
        profile = src.profile
    rng = np.random.default_rng(0)  # textured ground: its damaged tiles decode with warnings
    coarse = rng.integers(60, 140, size=(3, SHEET // 8, SHEET // 8), dtype=np.uint8)
    data = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2) + rng.integers(
        0, 12, size=(3, SHEET, SHEET), dtype=np.uint8)
    profile.update(compress="jpeg", photometric="ycbcr", blockxsize=32, blockysize=32,
                   jpeg_quality=95)
    with rasterio.open(sheet, "w", **profile) as dst:
        dst.write(data)
    with rasterio.open(sheet) as ds:  # tile row 2, col 1: not among preflight's samples
        off = int(ds.get_tag_item("BLOCK_OFFSET_1_2", "TIFF", bidx=1))
        size = int(ds.get_tag_item("BLOCK_SIZE_1_2", "TIFF", bidx=1))
    raw = bytearray(sheet.read_bytes())
    raw[off + size // 2:off + size] = np.random.default_rng(4).bytes(size - size // 2)
    sheet.write_bytes(bytes(raw))
    out = tmp_path / "damaged"
    run = subprocess.run([sys.executable, "-m", "idou.cli", "batch",
                          str(_toml(flights, out, extra="max_attempts = 1\n")), "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode in (2, 3), run.stderr
    assert "Traceback" not in run.stderr
    said = run.stderr + (out / "idou-batch.log").read_text(encoding="utf-8")
    assert "09LD11.tif" in said and "damaged" in said, said
    assert not (out / "review.gpkg").exists()


def test_parcels_redelivered_at_the_same_path_are_joined_again_on_rerun(
        flight_dir: Path, tmp_path: Path) -> None:
    """A finished run re-run after the parcel file changed writes the GeoPackage again with
    the new parcels (it used to say "nothing to do" and keep the old 地番)."""
    import shutil

    flights = tmp_path / "flight"
    shutil.copytree(flight_dir, flights, ignore=shutil.ignore_patterns("*.toml"))
    config = load_flight_config(_toml(flights, tmp_path / "out"))
    assert run_batch(config).exit_code == EXIT_OK
    parcels = pyogrio.read_dataframe(flights / "parcels.gpkg", layer="parcels")
    parcels["地番"] = [f"9{c}" for c in parcels["地番"]]
    pyogrio.write_dataframe(parcels, flights / "parcels.gpkg", layer="parcels")
    assert run_batch(config).exit_code == EXIT_OK
    joined = pyogrio.read_dataframe(tmp_path / "out" / "review.gpkg", layer="candidate_parcels")
    assert any(str(c).startswith("9") for c in joined["地番"])  # the new parcels are joined


def test_a_block_failing_with_a_user_error_is_not_retried(flight_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """A user error (a sheet idou refuses) fails the same way on every try: tried once."""
    out = tmp_path / "refused_sheet"
    config = load_flight_config(_toml(flight_dir, out, extra="max_attempts = 3\n"))
    _fail_one_block(monkeypatch, "r0001_c0002",
                    UserInputError("09LD11.tif has a damaged tile; copy the sheet again."))
    result = run_batch(config)
    assert result.exit_code == 3 and result.blocks_failed == 1
    row = sqlite3.connect(out / "journal.sqlite").execute(
        "SELECT state, attempts, error FROM blocks WHERE id = 'r0001_c0002'").fetchone()
    assert row == ("failed", 1, "09LD11.tif has a damaged tile; copy the sheet again.")
    assert read_status(out)["state"] == "failed"


@pytest.mark.parametrize("key,value,message", [
    ("chiban_column", '"CHIBAN_X"', "column 'CHIBAN_X' is not in the parcel file"),
    ("encoding", '"utf-16"', "not in --encoding utf-16"),
])
def test_check_and_run_refuse_what_the_final_stage_would(flight_dir: Path, tmp_path: Path,
                                                         key: str, value: str,
                                                         message: str) -> None:
    """A wrong chiban_column or encoding once passed --check, and the run failed after every
    block with status.json left at "finishing": both now stop before any block."""
    out = tmp_path / "o"
    path = _toml(flight_dir, out, extra=f"{key} = {value}\n", name=f"wrong_{key}")
    with pytest.raises(UserInputError, match=message):
        check_flight(load_flight_config(path))
    with pytest.raises(UserInputError, match=message):
        run_batch(load_flight_config(path))
    _assert_nothing_ran(out)
    assert read_status(out).get("state") in (None, "error")


def test_check_accepts_the_parcels_and_buildings_the_run_accepts(flight_dir: Path,
                                                                 tmp_path: Path) -> None:
    """地図XML parcels and PLATEAU CityGML buildings: --check once refused both."""
    from ..mojxml_builder import moj_xml
    from ..robustness.test_user_errors import SQUARE, plateau_gml

    (tmp_path / "09201.xml").write_text(moj_xml(), encoding="utf-8")
    gml = plateau_gml(tmp_path / "53394611_bldg_6697_op.gml", SQUARE)
    path = _toml(flight_dir, tmp_path / "o", name="moj_plateau")
    path.write_text(path.read_text(encoding="utf-8").replace(
        'parcels = "parcels.gpkg"',
        f'parcels = "{tmp_path / "09201.xml"}"\nbuildings = "{gml}"'), encoding="utf-8")
    report = check_flight(load_flight_config(path))
    assert report.blocks == 16


def test_a_user_error_in_the_final_stage_leaves_status_error_not_finishing(
        flight_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """status.json once stayed at "finishing" when the last step refused something."""
    from idou.inference import batch

    out = tmp_path / "final"
    config = load_flight_config(_toml(flight_dir, out, mosaic=True))

    def refuse(*args: object, **kwargs: object) -> None:
        raise UserInputError("review.gpkg is open for editing in QGIS; close it and run again.")

    monkeypatch.setattr(batch, "finish_from_blocks", refuse)
    with pytest.raises(UserInputError, match="open for editing"):
        run_batch(config)
    status = read_status(out)
    assert status["state"] == "error" and "open for editing" in status["reason"]


def test_a_geopackage_layer_after_a_colon_in_flight_toml(flight_dir: Path, tmp_path: Path
                                                        ) -> None:
    """``parcels = "shared.gpkg:layer"`` names one layer of a GeoPackage with several."""
    import shutil

    shared = tmp_path / "shared.gpkg"
    shutil.copy(flight_dir / "parcels.gpkg", shared)
    pyogrio.write_dataframe(pyogrio.read_dataframe(shared, layer="parcels"), shared,
                            layer="other", append=False)
    path = _toml(flight_dir, tmp_path / "o", name="layered")
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace('parcels = "parcels.gpkg"', f'parcels = "{shared}"'),
                    encoding="utf-8")
    with pytest.raises(UserInputError, match=r"several layers \((other, parcels|parcels, other)\)"):
        check_flight(load_flight_config(path))
    path.write_text(text.replace('parcels = "parcels.gpkg"', f'parcels = "{shared}:parcels"'),
                    encoding="utf-8")
    assert check_flight(load_flight_config(path)).blocks == 16


def test_buildings_that_miss_the_flight_are_a_warning_in_the_batch_log(
        flight_dir: Path, tmp_path: Path) -> None:
    far = tmp_path / "buildings_elsewhere.gpkg"
    frame = pyogrio.read_dataframe(flight_dir / "parcels.gpkg", layer="parcels")[["geometry"]]
    pyogrio.write_dataframe(frame.set_geometry(frame.translate(5000.0, 0.0)), far)
    out = tmp_path / "out"
    config = load_flight_config(_toml(flight_dir, out, extra=f'buildings = "{far}"\n',
                                      name="far_buildings"))
    assert run_batch(config).exit_code == EXIT_OK
    log = (out / "idou-batch.log").read_text(encoding="utf-8")
    assert "WARNING" in log and "buildings_elsewhere.gpkg" in log and "overlap the flights" in log


def test_an_input_where_the_batch_writes_its_own_files_is_refused(flight_dir: Path,
                                                                 tmp_path: Path) -> None:
    """Parcels kept as OUT/review.gpkg would be replaced by the run's GeoPackage: refused by
    --check and the run alike, and the file is untouched."""
    import shutil

    out = tmp_path / "o"
    out.mkdir()
    shutil.copy(flight_dir / "parcels.gpkg", out / "review.gpkg")
    before = (out / "review.gpkg").read_bytes()
    path = _toml(flight_dir, out, name="parcels_in_output")
    path.write_text(path.read_text(encoding="utf-8").replace(
        'parcels = "parcels.gpkg"', f'parcels = "{out / "review.gpkg"}"'), encoding="utf-8")
    with pytest.raises(OutputConflict, match=r"review\.gpkg is an input .* never overwrites"):
        check_flight(load_flight_config(path))
    with pytest.raises(OutputConflict, match=r"review\.gpkg is an input"):
        run_batch(load_flight_config(path))
    assert (out / "review.gpkg").read_bytes() == before
