"""`idou evaluate` and `idou register` from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from onnx import helper, numpy_helper
from shapely.geometry import box

from idou.inference.contract import ModelContract
from idou.inference.model_card import sha256_file

from ..onnx_builders import contract_model, save_with_card

CRS = "EPSG:6677"


def _idou(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "idou.cli", *args], capture_output=True,
                          text=True, timeout=180, cwd=cwd, env={**os.environ, "COLUMNS": "200"})


def _gdf(rows: list[dict[str, object]]) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(rows, geometry="geometry", crs=CRS)


def _result_and_truth(folder: Path) -> tuple[Path, Path]:
    truth = _gdf([
        {"change_id": 1, "change_type": "new", "channel": "new", "地番": "10",
         "geometry": box(0, 0, 10, 10)},
        {"change_id": 2, "change_type": "extension", "channel": "new", "地番": "11",
         "geometry": box(20, 0, 24, 10)},
        {"change_id": 3, "change_type": "demolished", "channel": "demolished", "地番": "12",
         "geometry": box(40, 0, 50, 10)},
        {"change_id": 4, "change_type": "rebuilt", "channel": "demolished", "地番": "13",
         "geometry": box(60, 0, 70, 10)},
        {"change_id": 4, "change_type": "rebuilt", "channel": "new", "地番": "13",
         "geometry": box(60, 0, 70, 10)},
    ])
    changes = _gdf([
        {"channel": "new", "change_type": "new", "area_m2": 30.0, "score_max": 0.9,
         "score_mean": 0.7, "geometry": box(0, 0, 10, 3)},        # finds change 1 (30%)
        {"channel": "new", "change_type": "rebuilt", "area_m2": 100.0, "score_max": 0.9,
         "score_mean": 0.7, "geometry": box(60, 0, 70, 10)},      # finds the new half of 4
        {"channel": "new", "change_type": "new", "area_m2": 100.0, "score_max": 0.6,
         "score_mean": 0.5, "geometry": box(100, 100, 110, 110)}, # false alarm
        {"channel": "demolished", "change_type": "demolished", "area_m2": 100.0,
         "score_max": 0.8, "score_mean": 0.6, "geometry": box(40, 0, 50, 10)},
    ])
    parcels = _gdf([{"地番": v, "geometry": box(0, 0, 1, 1)} for v in ("10", "12", "13", "99")])
    result = folder / "result.gpkg"
    changes.to_file(result, layer="changes")
    parcels.to_file(result, layer="candidate_parcels")
    truth_path = folder / "truth.gpkg"
    truth.to_file(truth_path, layer="truth")
    return result, truth_path


def test_evaluate_geopackage_prints_and_saves_object_and_parcel_recall(tmp_path: Path) -> None:
    result, truth = _result_and_truth(tmp_path)
    out = tmp_path / "eval" / "scores.json"
    run = _idou("evaluate", str(result), "--truth", str(truth), "--json", str(out))
    assert run.returncode == 0, run.stderr
    assert "parcels" in run.stdout and "recall" in run.stdout
    scores = json.loads(out.read_text(encoding="utf-8"))
    new, dem = scores["objects"]["new"], scores["objects"]["demolished"]
    assert (new["n_true"], new["n_found"], new["n_pred"], new["n_false_alarm"]) == (3, 2, 3, 1)
    assert (dem["n_true"], dem["n_found"], dem["n_pred"], dem["n_false_alarm"]) == (2, 1, 1, 0)
    assert scores["change_types"]["extension"]["recall"] == 0.0
    assert scores["change_types"]["rebuilt"] == {"n_true": 2, "n_found": 1, "recall": 0.5}
    assert scores["parcels"] == {"n_changed": 4, "n_found": 3, "recall": 0.75}
    assert "pixels" not in scores


def test_evaluate_user_errors_exit_2(tmp_path: Path) -> None:
    result, _ = _result_and_truth(tmp_path)
    run = _idou("evaluate", str(result))
    assert run.returncode == 2 and "--truth" in run.stderr and "Traceback" not in run.stderr
    run = _idou("evaluate", str(result), "--truth", str(tmp_path / "missing.gpkg"))
    assert run.returncode == 2 and "missing.gpkg" in run.stderr


def _model(path: Path) -> Path:
    idx = numpy_helper.from_array(np.array([0, 1], dtype=np.int64), "idx")
    nodes = [helper.make_node("Gather", ["after", "idx"], ["pa"], axis=1),
             helper.make_node("Gather", ["before", "idx"], ["pb"], axis=1),
             helper.make_node("Sub", ["pa", "pb"], ["probabilities"])]
    contract = ModelContract(tile_size=64, tile_overlap=16, gsd_m=0.5)
    return save_with_card(contract_model(nodes, [idx], contract), path, contract, name="t",
                          version="0.0.1", trained_on="")

def test_register_then_resolve_alias(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow", reason="the registry needs the train extra (mlflow)")
    model = _model(tmp_path / "m.onnx")
    run = _idou("register", str(model), "--alias", "champion", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "models:/idou@champion" in run.stdout
    from idou.inference.model_source import resolve_model

    monkeypatch.setenv("IDOU_MODEL_CACHE", str(tmp_path / "cache"))
    assert resolve_model("models:/idou@champion").sha256 == sha256_file(model)


def test_models_cli_imports_no_torch_or_mlflow() -> None:
    code = ("import sys, idou.cli; bad = [m for m in ('torch', 'mlflow', 'matplotlib') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
