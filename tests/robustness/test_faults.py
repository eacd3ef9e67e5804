"""Faults: ``kill -9`` of ``idou detect`` at several points never leaves a partial output.

detect writes into a hidden work folder and a temporary GeoPackage beside the target and
renames it over the target only when complete, so a killed run leaves either nothing or the
previous file (with the staff's review edits) at the output path, and the next run succeeds.
Training resume is tested in tests/training/test_loop.py, batch resume in
tests/inference/test_batch.py (see the README (Reliability and security)).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyogrio
import pytest

from ..gpkg_edits import staff_edit
from .conftest import (
    CONTRACT,
    GoodPair,
    build_model,
    idou_env,
    parcels_frame,
    run_idou,
    save_model,
    tiny_training_config,
    write_raster,
)

FAULT_SIZE = 1536


@pytest.fixture(scope="module")
def larger(tmp_path_factory: pytest.TempPathFactory) -> GoodPair:
    """A 1536 x 1536 px pair (a few seconds of work) so there is time to kill detect."""
    folder = tmp_path_factory.mktemp("larger")
    rng = np.random.default_rng(3)
    coarse = rng.integers(60, 140, size=(3, FAULT_SIZE // 8, FAULT_SIZE // 8), dtype=np.uint8)
    ground = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)
    after = ground.copy()
    for r in range(40, FAULT_SIZE - 60, 150):
        for c in range(40, FAULT_SIZE - 60, 170):
            after[:, r:r + 30, c:c + 30] = 235
    before_path = write_raster(folder / "flight_2024.tif", ground, tiled=True)
    after_path = write_raster(folder / "flight_2025.tif", after, tiled=True)
    parcels = folder / "parcels.gpkg"
    parcels_frame().to_file(parcels, driver="GPKG")
    model = save_model(build_model(CONTRACT), folder / "model.onnx")
    return GoodPair(folder, before_path, after_path, parcels, model)


def _start(pair: GoodPair, out: Path, *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "idou.cli", "detect", str(pair.before), str(pair.after), "-o",
           str(out), "--model", str(pair.model), "--parcels", str(pair.parcels), "--quiet",
           "--threads", "1", *extra]
    return subprocess.Popen(cmd, cwd=out.parent, env=idou_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _kill_when(proc: subprocess.Popen[str], ready: Callable[[], bool], delay: float = 0.0,
               limit: float = 120.0) -> bool:
    """SIGKILL ``proc`` ``delay`` s after ``ready()`` first holds; False if it ended first."""
    start = time.monotonic()
    while not ready():
        if proc.poll() is not None or time.monotonic() - start > limit:
            return False
        time.sleep(0.005)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return True


def _workdir_exists(folder: Path) -> Callable[[], bool]:
    return lambda: any(p.name.startswith(".changes.idou-") for p in folder.iterdir())


def _store_exists(folder: Path) -> Callable[[], bool]:
    """detect's probability store exists: inference has started."""
    return lambda: any(folder.glob(".changes.idou-*/probabilities.u8"))


def _temp_gpkg_exists(folder: Path) -> Callable[[], bool]:
    return lambda: any(folder.glob(".changes.idou-*/*.tmp.gpkg"))


# (name, when to kill, extra delay): early (model and preflight), during inference, and while
# the GeoPackage is being written
KILL_POINTS = [("start", _workdir_exists, 0.0), ("inference", _store_exists, 0.2),
               ("writing", _temp_gpkg_exists, 0.0)]


@pytest.mark.parametrize("point", [p[0] for p in KILL_POINTS])
def test_kill_9_leaves_no_partial_output_and_the_next_run_succeeds(
        point: str, larger: GoodPair, tmp_path: Path) -> None:
    _, when, delay = next(p for p in KILL_POINTS if p[0] == point)
    out = tmp_path / "changes.gpkg"
    proc = _start(larger, out)
    killed = _kill_when(proc, when(tmp_path), delay)
    if not killed:
        pytest.fail(f"detect ended before the kill point '{point}': {proc.communicate()}")
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    assert not out.with_suffix(".qgz").exists()
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert all(name.startswith(".changes.") for name in leftovers), leftovers
    if point == "writing":  # the rerun costs a full detect: once is enough
        run = run_idou("detect", larger.before, larger.after, "-o", out, "--model",
                       larger.model, "--parcels", larger.parcels, "--quiet", "--threads", "1",
                       cwd=tmp_path, timeout=300)
        assert run.returncode == 0, run.stderr
        assert "changes" in dict(pyogrio.list_layers(out))
        # the killed run's work folder (and the GeoPackage it was writing) is gone
        assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".changes.")]


def test_kill_9_during_a_forced_rerun_keeps_the_review_edits(larger: GoodPair,
                                                             tmp_path: Path) -> None:
    """Staff edited the GeoPackage; a re-run with --force is killed while writing: the file
    at the output path is the reviewed one byte for byte (or, had the rename just happened,
    the new one with the edit merged in): the edit is never lost."""
    good = larger
    out = tmp_path / "changes.gpkg"
    first = run_idou("detect", good.before, good.after, "-o", out, "--model", good.model,
                     "--parcels", good.parcels, "--quiet", "--threads", "1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    with staff_edit(out) as con:
        con.execute('UPDATE candidate_parcels SET "備考" = ? WHERE fid = 1', ("要確認: 車庫",))
    reviewed = out.read_bytes()
    proc = _start(good, out, "--force")
    if not _kill_when(proc, _temp_gpkg_exists(tmp_path)):
        pytest.fail(f"detect ended before writing: {proc.communicate()}")
    if out.read_bytes() != reviewed:  # killed just after the atomic rename
        frame = pyogrio.read_dataframe(out, layer="candidate_parcels")
        assert "要確認: 車庫" in set(frame["備考"].dropna())


@pytest.mark.slow
def test_kill_9_during_training_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    """``idou train`` killed as soon as its first checkpoint exists resumes from it and ends
    with the weights of an uninterrupted run (the checkpoint write is atomic)."""
    torch = pytest.importorskip("torch")
    from idou.training.checkpoints import load_checkpoint

    def config(name: str) -> Path:
        return tiny_training_config(tmp_path / f"{name}.toml", tmp_path / name,
                                    tmp_path / "cache", name="killed", seed=3, epochs=3)

    def train(cfg: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "idou.cli", "train", str(cfg), "--no-mlflow",
                               "--no-progress"], cwd=tmp_path, env=idou_env(),
                              capture_output=True, text=True, timeout=600)

    whole = train(config("whole"))
    assert whole.returncode == 0, whole.stderr
    killed_cfg = config("killed")
    last = tmp_path / "killed" / "last.ckpt"
    proc = subprocess.Popen([sys.executable, "-m", "idou.cli", "train", str(killed_cfg),
                             "--no-mlflow", "--no-progress"], cwd=tmp_path, env=idou_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not _kill_when(proc, last.exists, limit=300):
        pytest.fail(f"training ended before its first checkpoint: {proc.communicate()}")
    interrupted = load_checkpoint(last)  # never half-written
    assert interrupted["global_step"] < 6
    resumed = train(killed_cfg)
    assert resumed.returncode == 0, resumed.stderr
    assert "trained 3 epoch(s), 6 steps" in resumed.stdout
    a = load_checkpoint(tmp_path / "whole" / "last.ckpt")["model"]
    b = load_checkpoint(last)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key
