"""Chip folders (A/, B/, label/): scored and tuned like flights, through detect's engine.

The chips are hand-made: the after chip's red band is the new-building probability the
pass-through model gives (so every expected count is known), the label marks true change.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import rasterio
from affine import Affine
from PIL import Image

from idou.errors import InvalidOption, UserInputError
from idou.inference.contract import ModelContract
from idou.training.chips import find_chips, mask_prediction, read_change_label
from idou.training.evaluate import score_predictions

from ..onnx_builders import passthrough_model

SIZE = 64
CONTRACT = ModelContract(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), tile_size=64,
                         tile_overlap=16, gsd_m=1.0, model_version="0.1.0")


def _idou(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "idou.cli", *args], capture_output=True,
                          text=True, timeout=180, env={**os.environ, "COLUMNS": "200"})


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _chip(root: Path, name: str, pred: list[tuple[slice, slice, int]],
          truth: list[tuple[slice, slice]], *, label_suffix: str = ".png") -> None:
    """A/ (JPEG), B/ (PNG: red = new probability x 255) and label/ (0/255) of one pair."""
    before = np.full((SIZE, SIZE, 3), 90, np.uint8)
    after = np.zeros((SIZE, SIZE, 3), np.uint8)
    for rows, cols, level in pred:
        after[rows, cols, 0] = level
    label = np.zeros((SIZE, SIZE), np.uint8)
    for rows, cols in truth:
        label[rows, cols] = 255
    _save(root / "A" / f"{name}.jpg", before)
    _save(root / "B" / f"{name}.png", after)
    _save(root / "label" / f"{name}{label_suffix}", label)


def chip_set(root: Path) -> Path:
    """Three pairs: 3 true objects of >= 8 px (one of 4 px left out), 2 found, 1 false alarm.

    Pixels: tp 100 + 48, fp 100, fn 100 + 96 + 4.
    """
    s = slice
    _chip(root, "p1", pred=[(s(5, 15), s(5, 15), 255),          # exactly the true object T1
                            (s(40, 50), s(40, 50), 255)],       # false alarm
          truth=[(s(5, 15), s(5, 15)), (s(5, 15), s(40, 50))])  # T2 is missed
    _chip(root, "p2", pred=[(s(20, 24), s(20, 32), 255)],       # a third of T3: found
          truth=[(s(20, 32), s(20, 32)), (s(50, 52), s(50, 52))], label_suffix=".tif")
    _chip(root, "p3", pred=[], truth=[])
    return root


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return passthrough_model(tmp_path / "m.onnx", CONTRACT)


def test_evaluate_chip_folder_counts(tmp_path: Path, model: Path) -> None:
    chips = chip_set(tmp_path / "chips")
    out = tmp_path / "ev.json"
    run = _idou("evaluate", str(model), str(chips), "--gsd", "1", "--json", str(out))
    assert run.returncode == 0, run.stderr
    figures = json.loads(out.read_text(encoding="utf-8"))
    assert list(figures["objects"]) == ["new"]          # untyped labels judge new only
    assert figures["objects"]["new"] == pytest.approx(
        {"n_true": 3, "n_found": 2, "n_pred": 2 + 0 + 1 - 0, "n_false_alarm": 1,
         "recall": 2 / 3, "precision": 2 / 3, "f1": 2 / 3})
    pixels = figures["pixels"]["new"]
    assert (pixels["tp"], pixels["fp"], pixels["fn"]) == (148, 100, 200)
    assert figures["scenes"] == ["p1", "p2", "p3"]
    assert "new" in run.stdout and "2/3" in run.stdout


def test_gsd_sets_the_object_areas(tmp_path: Path, model: Path) -> None:
    """At 0.5 m the 10x10 px objects are 25 m², under --min-area 30; at 1 m they are 100 m²."""
    from idou.training.chips import evaluate_chip_folder

    chips = chip_set(tmp_path / "chips")
    at_1m = evaluate_chip_folder(str(model), chips, gsd=1.0, min_area_m2=30)
    at_half = evaluate_chip_folder(str(model), chips, gsd=0.5, min_area_m2=30)
    assert at_1m.channels["new"].n_true == 3
    assert at_half.channels["new"].n_true == 1          # only T3: 12x12 px = 36 m²


def test_georeferenced_chips_need_no_gsd(tmp_path: Path, model: Path) -> None:
    from idou.training.chips import evaluate_chip_folder

    plain = chip_set(tmp_path / "plain")
    geo = tmp_path / "geo"
    for chip in find_chips(plain):
        for folder, path in (("A", chip.before), ("B", chip.after), ("label", chip.label)):
            with rasterio.open(path) as src:
                data = src.read()
            (geo / folder).mkdir(parents=True, exist_ok=True)
            with rasterio.open(geo / folder / f"{chip.name}.tif", "w", driver="GTiff",
                               width=SIZE, height=SIZE, count=data.shape[0], dtype="uint8",
                               crs="EPSG:6677",
                               transform=Affine(1.0, 0, -5000.0, 0, -1.0, 3000.0)) as dst:
                dst.write(data)
    ev = evaluate_chip_folder(str(model), geo, gsd=None)
    assert (ev.channels["new"].n_true, ev.channels["new"].n_found) == (3, 2)
    with pytest.raises(UserInputError, match="--gsd"):
        evaluate_chip_folder(str(model), plain, gsd=None)


def test_missing_gsd_and_bad_layouts_are_refused(tmp_path: Path, model: Path) -> None:
    chips = chip_set(tmp_path / "chips")
    run = _idou("evaluate", str(model), str(chips))
    assert run.returncode == 2 and "--gsd" in run.stderr + run.stdout
    assert "Traceback" not in run.stderr

    (chips / "B" / "p2.png").unlink()
    run = _idou("evaluate", str(model), str(chips), "--gsd", "1")
    assert run.returncode == 2, run.stderr
    assert "p2" in run.stderr + run.stdout and "Traceback" not in run.stderr

    broken = tmp_path / "no_label"
    _chip(broken, "p1", pred=[], truth=[])
    for f in (broken / "label").iterdir():
        f.unlink()
    (broken / "label").rmdir()
    run = _idou("tune", str(model), str(broken), "--recall", "0.9", "--gsd", "1")
    assert run.returncode == 2 and "label/" in run.stderr + run.stdout
    assert "Traceback" not in run.stderr
    assert not list(tmp_path.glob("*.tuned.onnx"))


def test_find_chips_refusals(tmp_path: Path) -> None:
    chips = chip_set(tmp_path / "chips")
    assert [c.name for c in find_chips(chips)] == ["p1", "p2", "p3"]
    assert find_chips(chips)[1].label.suffix == ".tif"
    _save(chips / "label" / "p1.png", np.zeros((SIZE, SIZE + 1), np.uint8))
    from idou.training.chips import chip_grid, evaluate_chip_folder
    with pytest.raises(UserInputError, match="pixel for pixel"):
        chip_grid(find_chips(chips)[0], 1.0)
    with pytest.raises(InvalidOption, match="pixel size"):
        chip_grid(find_chips(chips)[2], -1.0)
    grey = chip_set(tmp_path / "grey")
    _save(grey / "B" / "p3.png", np.zeros((SIZE, SIZE), np.uint8))
    with pytest.raises(UserInputError, match=r"p3.png has 1 band\(s\) but the model reads 3"):
        evaluate_chip_folder(str(passthrough_model(tmp_path / "m.onnx", CONTRACT)), grey,
                             gsd=1.0)
    empty = tmp_path / "empty"
    for name in ("A", "B", "label"):
        (empty / name).mkdir(parents=True)
    with pytest.raises(UserInputError, match="holds no PNG, JPEG or TIFF"):
        find_chips(empty)


def test_gsd_on_flights_and_truth_on_chips_are_refused(tmp_path: Path, model: Path) -> None:
    (tmp_path / "scene").mkdir()
    run = _idou("evaluate", str(model), str(tmp_path / "scene"), "--gsd", "0.5")
    assert run.returncode == 2 and "chip folders" in run.stderr + run.stdout
    chips = chip_set(tmp_path / "chips")
    run = _idou("evaluate", str(model), str(chips), "--gsd", "1", "--truth", "t.gpkg")
    assert run.returncode == 2 and "label/" in run.stderr + run.stdout


def test_label_values_and_masks(tmp_path: Path) -> None:
    """0/255 and 0/1 labels both mark change; a mask scored alone gives its own counts."""
    _save(tmp_path / "l255.png", np.array([[0, 255], [128, 127]], np.uint8))
    _save(tmp_path / "l01.png", np.array([[0, 1], [1, 0]], np.uint8))
    assert read_change_label(tmp_path / "l255.png").tolist() == [[False, True], [True, False]]
    assert read_change_label(tmp_path / "l01.png").tolist() == [[False, True], [True, False]]
    chips = chip_set(tmp_path / "chips")
    everything = [mask_prediction(c, np.ones((SIZE, SIZE), bool), gsd=1.0)
                  for c in find_chips(chips)]
    ev = score_predictions(everything, {"new": 0.5, "demolished": 0.5}, channels=("new",))
    s = ev.channels["new"]
    # one object per pair; p3 has no truth, so it is a false alarm; all true objects found
    assert (s.n_true, s.n_found, s.n_pred, s.n_false_alarm) == (3, 3, 3, 3)


def test_tune_on_a_chip_folder(tmp_path: Path) -> None:
    """New is tuned on the chips (highest threshold reaching 3 of 4); demolished is kept."""
    s = slice
    root = tmp_path / "chips"
    _chip(root, "a", pred=[(s(5, 15), s(5, 15), 200), (s(5, 15), s(30, 40), 150),
                           (s(40, 50), s(5, 15), 100), (s(40, 50), s(30, 40), 50),
                           (s(25, 35), s(50, 60), 220)],            # false alarm at 0.86
          truth=[(s(5, 15), s(5, 15)), (s(5, 15), s(30, 40)), (s(40, 50), s(5, 15)),
                 (s(40, 50), s(30, 40))])
    model = passthrough_model(tmp_path / "m.onnx", CONTRACT)
    run = _idou("tune", str(model), str(root), "--recall", "0.75", "--gsd", "1")
    assert run.returncode == 0, run.stderr
    tuned = tmp_path / "m.tuned.onnx"
    props = {p.key: p.value for p in onnx.load(str(tuned)).metadata_props}
    contract = ModelContract.from_metadata(props)
    assert contract.threshold_new == pytest.approx(0.39)    # 100/255 = 0.392 still passes
    assert contract.threshold_demolished == 0.5            # untyped labels: kept
    assert "no true demolished object" in run.stdout


def _benchmark() -> Any:
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "real_change.py"
    spec = importlib.util.spec_from_file_location("real_change", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_real_change_benchmark_rows(tmp_path: Path, model: Path) -> None:
    """Model, a peer on the crops it covers, and the everything-changed baseline side by side."""
    chips = chip_set(tmp_path / "chips")
    peer = tmp_path / "peers" / "perfect"
    peer.mkdir(parents=True)
    for name in ("p1", "p2"):                      # the peer covers two of the three pairs
        label = read_change_label(next((chips / "label").glob(f"{name}.*")))
        _save(peer / f"{name}.png", (label * 255).astype(np.uint8))
    out = tmp_path / "rc.json"
    bench = _benchmark()
    rc = bench.main(["--set", str(chips), "--model", str(model), "--peers", str(peer),
                     "--gsd", "1", "--min-area", "8", "--json", str(out)])
    assert rc == 0
    rows = json.loads(out.read_text(encoding="utf-8"))["sets"][str(chips)]["rows"]
    got = {(r["name"], r["scope"]): (r["pairs"], r["objects"]["n_true"], r["objects"]["n_found"],
                                     r["objects"]["n_pred"], r["objects"]["n_false_alarm"])
           for r in rows}
    assert got[("m: new", "all")] == (3, 3, 2, 3, 1)
    assert got[("m: new", "peers")] == (2, 3, 2, 3, 1)
    assert got[("peer perfect", "peers")] == (2, 3, 3, 3, 0)
    assert got[("everything changed", "all")] == (3, 3, 3, 3, 3)   # no crop is 25% change
    assert got[("everything changed", "peers")] == (2, 3, 3, 2, 2)
    new_row = next(r for r in rows if r["name"] == "m: new" and r["scope"] == "all")
    assert new_row["thresholds"] == {"new": 0.5, "demolished": 0.5}
    assert new_row["new_objects_also_demolished"] == 0
    assert bench.main(["--set", str(tmp_path / "peers"), "--model", str(model)]) == 2
