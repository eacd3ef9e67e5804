"""`idou detect` end to end on a tiny generated pair; failures leave nothing at the output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyogrio
import pytest

from idou.errors import OutputConflict
from idou.inference.contract import ModelContract
from idou.inference.detect import DetectJob, run_detect

from .conftest import build_change_model, save_with_card

CONTRACT = ModelContract(tile_size=128, tile_overlap=16, gsd_m=0.2)


@pytest.fixture(scope="module")
def flights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from idou.geo.synthetic import make_flight_pair, write_flight_pair

    folder = tmp_path_factory.mktemp("flights")
    paths = write_flight_pair(make_flight_pair(3, size=320), folder)
    paths["model"] = save_with_card(build_change_model(CONTRACT, gain=4.0, box=3),
                                    folder / "model.onnx", CONTRACT)
    return paths


def _idou(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="120")
    return subprocess.run([sys.executable, "-m", "idou.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180)


def test_detect_writes_a_geopackage_with_the_changes_layer(flights: dict[str, Path],
                                                           tmp_path: Path) -> None:
    out = tmp_path / "changes.gpkg"
    run = _idou("detect", str(flights["flight_2024"]), str(flights["flight_2025"]), "-o",
                str(out), "--model", str(flights["model"]), "--parcels",
                str(flights["parcels"]), "--prob", str(tmp_path / "prob.tif"), "--threads", "1",
                cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "Mpx/s" in run.stdout
    layers = dict(pyogrio.list_layers(out))
    assert "changes" in layers
    info = pyogrio.read_info(out, layer="changes")
    assert {"channel", "area_m2", "score_max", "score_mean"} <= set(info["fields"])
    assert info["features"] > 0
    assert (tmp_path / "prob.tif").is_file()
    # nothing temporary is left beside the output
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_failing_detect_leaves_nothing_at_the_output(flights: dict[str, Path],
                                                       tmp_path: Path) -> None:
    out = tmp_path / "changes.gpkg"
    bad_model = tmp_path / "bad.onnx"
    bad_model.write_bytes(flights["model"].read_bytes()[:-10])  # truncated, no card
    run = _idou("detect", str(flights["flight_2024"]), str(flights["flight_2025"]), "-o",
                str(out), "--model", str(bad_model), "--quiet", cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr and "bad.onnx" in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


def test_a_failure_after_inference_leaves_an_existing_output_untouched(
        flights: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "changes.gpkg"
    run_detect(DetectJob(flights["flight_2024"], flights["flight_2025"], out,
                         model=str(flights["model"]), threads=1,
                         write_project=False))  # the previous run (--force replaces only idou's)
    previous = out.read_bytes()
    prob = tmp_path / "prob.tif"

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr("idou.geo.changes.vectorize.vectorize", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        run_detect(DetectJob(flights["flight_2024"], flights["flight_2025"], out,
                             model=str(flights["model"]), prob=prob, force=True, threads=1))
    assert out.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["changes.gpkg"]


def test_an_existing_output_without_force_is_refused_before_any_work(
        flights: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "changes.gpkg"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputConflict, match="--force"):
        run_detect(DetectJob(flights["flight_2024"], flights["flight_2025"], out,
                             model="/nonexistent.onnx"))
    assert out.read_bytes() == b"keep me"


def test_detect_with_buildings_writes_the_map_layers_and_keeps_unmatched_change_on_request(
        flights: dict[str, Path], tmp_path: Path) -> None:
    import sqlite3

    import geopandas as gpd

    common = dict(model=str(flights["model"]), parcels=flights["parcels"],
                  buildings=flights["buildings_2024"], threads=1, write_project=False)
    out = tmp_path / "map.gpkg"
    run_detect(DetectJob(flights["flight_2024"], flights["flight_2025"], out, **common))  # type: ignore[arg-type]
    layers = dict(pyogrio.list_layers(out))
    assert "unmapped_buildings" in layers
    assert pyogrio.read_info(out, layer="unmapped_buildings")["features"] == 0
    with sqlite3.connect(out) as con:
        info = dict(con.execute("SELECT key, value FROM run_info").fetchall())
        styled = {r[0] for r in con.execute("SELECT f_table_name FROM layer_styles")}
    assert "declares no building-presence output" in info["unmapped_buildings"]
    assert "unmapped_buildings" in styled
    changes = gpd.read_file(out, layer="changes")
    assert changes["判定理由"].astype(bool).all()  # every change says why
    other = changes[changes["change_type"] == "other"]
    assert len(other), "the constructed model flags change the map does not support"
    parcels = gpd.read_file(out, layer="candidate_parcels")
    assert not set(parcels["主な異動区分"]) & {"その他の変化"}
    kept = tmp_path / "kept.gpkg"
    run_detect(DetectJob(flights["flight_2024"], flights["flight_2025"], kept,
                         keep_unmatched=True, **common))  # type: ignore[arg-type]
    assert len(gpd.read_file(kept, layer="candidate_parcels")) > len(parcels)


def test_run_detect_reports_each_stage_through_the_progress_callback(
        flights: dict[str, Path], tmp_path: Path) -> None:
    """The CLI draws its bars from these calls: inference first, then polygons, each to its end.
    """
    calls: list[tuple[str, float, float]] = []

    def progress(stage: str, done: float, total: float, *, rate: float | None = None) -> None:
        calls.append((stage, done, total))

    run_detect(DetectJob(flights["flight_2024"], flights["flight_2025"], tmp_path / "c.gpkg",
                         model=str(flights["model"]), threads=1, write_project=False),
               progress=progress)
    stages = [stage for stage, _, _ in calls]
    assert set(stages) == {"infer", "vectorize"}
    assert stages.index("vectorize") > len(stages) - 1 - stages[::-1].index("infer")
    last = {stage: (done, total) for stage, done, total in calls}
    assert all(done == total > 0 for done, total in last.values())
