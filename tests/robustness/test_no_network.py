"""No network at run time: detect, tune and a training step run with every socket blocked.

Each command runs as a real subprocess with a ``sitecustomize`` that makes any IP connection or
name lookup fail and records it; the record must stay empty (loopback included: the mlflow
store is SQLite, nothing listens or calls out).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import box

from .conftest import (
    CRS,
    GSD,
    ORIGIN,
    REPO,
    ROOFS,
    GoodPair,
    idou_env,
    run_idou,
    tiny_training_config,
)

SITECUSTOMIZE = textwrap.dedent('''
    """Installed by tests/robustness/test_no_network.py: block and record network use."""
    import os
    import socket

    _LOG = os.environ["IDOU_NET_LOG"]


    def _record(what, address):
        with open(_LOG, "a", encoding="utf-8") as fh:
            fh.write(f"{what} {address!r}\\n")
        raise OSError(101, f"network blocked by the idou test: {what} {address!r}")


    _connect = socket.socket.connect
    _connect_ex = socket.socket.connect_ex


    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _record("connect", address)
        return _connect(self, address)


    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _record("connect_ex", address)
        return _connect_ex(self, address)


    def create_connection(address, *args, **kwargs):
        _record("create_connection", address)


    def getaddrinfo(host, *args, **kwargs):
        _record("getaddrinfo", host)


    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.create_connection = create_connection
    socket.getaddrinfo = getaddrinfo
''')


@pytest.fixture
def offline(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """(environment with the socket blocker installed, the file it records attempts in)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    log = tmp_path / "network.log"
    log.touch()
    env = idou_env(IDOU_NET_LOG=str(log))
    env["PYTHONPATH"] = str(site) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env, log


def test_the_blocker_catches_connections(offline: tuple[dict[str, str], Path],
                                         tmp_path: Path) -> None:
    """The test can fail: a process that calls out is recorded and refused."""
    import subprocess
    import sys

    env, log = offline
    probe = ("import socket\ntry:\n    socket.create_connection(('127.0.0.1', 9))\n"
             "except OSError as e:\n    print('refused', e)\n")
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                          text=True, timeout=60)
    assert "refused" in done.stdout, done.stderr
    assert "127.0.0.1" in log.read_text()


@pytest.mark.parametrize("model", ["constructed", "default"])
def test_detect_needs_no_network(model: str, good: GoodPair,
                                 offline: tuple[dict[str, str], Path], tmp_path: Path) -> None:
    if model == "default" and not (REPO / "models" / "default" / "idou-default.onnx").is_file():
        pytest.skip("the default model is not there yet")
    env, log = offline
    run = run_idou("detect", good.before, good.after, "-o", tmp_path / "changes.gpkg",
                   "--model", good.model if model == "constructed" else "default", "--parcels",
                   good.parcels, "--threads", "1", "--prob", tmp_path / "prob.tif",
                   cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    assert log.read_text() == ""


def _validation_scene(good: GoodPair, folder: Path) -> Path:
    """A validation scene (two flights and truth.gpkg) for ``idou tune``."""
    import shutil

    folder.mkdir()
    shutil.copy(good.before, folder / "flight_2024.tif")
    shutil.copy(good.after, folder / "flight_2025.tif")
    roofs = [box(ORIGIN[0] + c * GSD, ORIGIN[1] - (r + s) * GSD, ORIGIN[0] + (c + s) * GSD,
                 ORIGIN[1] - r * GSD) for r, c, s in ROOFS]
    truth = gpd.GeoDataFrame({"change_id": [f"t{i}" for i in range(len(roofs))],
                              "change_type": ["new"] * len(roofs),
                              "channel": ["new"] * len(roofs),
                              "地番": [f"1-{i}" for i in range(1, len(roofs) + 1)]},
                             geometry=roofs, crs=CRS)
    truth.to_file(folder / "truth.gpkg", layer="truth", driver="GPKG")
    return folder


def test_tune_needs_no_network(good: GoodPair, offline: tuple[dict[str, str], Path],
                               tmp_path: Path) -> None:
    env, log = offline
    scene = _validation_scene(good, tmp_path / "val")
    tuned = tmp_path / "tuned.onnx"
    run = run_idou("tune", good.model, scene, "--recall", "0.9", "-o", tuned, cwd=tmp_path,
                   env=env, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert tuned.is_file()
    assert log.read_text() == ""


def test_a_training_step_needs_no_network(offline: tuple[dict[str, str], Path],
                                          tmp_path: Path) -> None:
    pytest.importorskip("torch")
    env, log = offline
    config = tiny_training_config(tmp_path / "offline.toml", tmp_path / "run",
                                  tmp_path / "cache", name="offline", seed=1, epochs=1)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = run_idou("train", config, "--no-progress", cwd=tmp_path, env=env, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "run" / "last.ckpt").is_file()
    assert "mlflow run:" in run.stdout  # tracked (in SQLite), still offline
    assert log.read_text() == "", json.dumps(log.read_text())
