"""Closed networks (LGWAN): the inference install comes from a wheelhouse with no index.

``scripts/wheelhouse.sh`` builds the wheelhouse on a connected machine (here: CI, which reaches
PyPI; pip's cache makes reruns fast). A fresh virtual environment then installs idou from that
folder alone (``--no-index``, no pip configuration, no extra find-links), must not contain torch,
and runs ``idou --version``, ``idou preflight`` and ``idou detect`` (on the generated pair with a
constructed model, and on data_samples with the packaged default model once both exist).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, GoodPair

pytestmark = pytest.mark.slow
SAMPLES = REPO / "data_samples"
DEFAULT_MODEL = REPO / "models" / "default" / "idou-default.onnx"


def _offline_pip_env() -> dict[str, str]:
    """pip as on a closed machine: no configuration files, no index, no extra wheel folders."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PIP_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with idou installed from the wheelhouse only; returns its bin folder."""
    root = tmp_path_factory.mktemp("lgwan")
    wheelhouse = root / "wheelhouse"
    build = subprocess.run(["bash", str(REPO / "scripts" / "wheelhouse.sh"), "", str(wheelhouse)],
                           env=dict(os.environ, PYTHON=sys.executable), capture_output=True,
                           text=True, timeout=1800)
    assert build.returncode == 0, build.stdout + build.stderr
    wheels = sorted(p.name for p in wheelhouse.glob("*.whl"))
    assert any(w.startswith("idou-") for w in wheels), wheels
    assert not any(w.startswith(("torch-", "torchvision-", "mlflow", "albumentations"))
                   for w in wheels), wheels
    venv = root / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=300)
    install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-index",
                              "--find-links", str(wheelhouse), "idou"], cwd=root,
                             env=_offline_pip_env(), capture_output=True, text=True,
                             timeout=1800)
    assert install.returncode == 0, install.stdout + install.stderr
    return venv / "bin"


def _run(bin_dir: Path, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(COLUMNS="200", NO_COLOR="1")
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_the_inference_install_has_no_torch(installed: Path, tmp_path: Path) -> None:
    code = ("import importlib.util as u, idou, pathlib; "
            "print([m for m in ('torch', 'torchvision', 'mlflow', 'albumentations') "
            "if u.find_spec(m)]); print(pathlib.Path(idou.__file__).parent)")
    run = _run(installed, installed / "python", "-c", code, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    missing, location = run.stdout.splitlines()
    assert missing == "[]"
    assert str(REPO) not in location  # the wheel, not the source tree
    assert _run(installed, installed / "idou", "--version", cwd=tmp_path).stdout.startswith(
        "idou ")


def test_preflight_and_detect_run_from_the_wheelhouse_install(installed: Path, good: GoodPair,
                                                               tmp_path: Path) -> None:
    pre = _run(installed, installed / "idou", "preflight", good.before, good.after, "--model",
               good.model, cwd=tmp_path)
    assert pre.returncode == 0, pre.stdout + pre.stderr
    out = tmp_path / "changes.gpkg"
    run = _run(installed, installed / "idou", "detect", good.before, good.after, "-o", out,
               "--model", good.model, "--parcels", good.parcels, "--threads", "1",
               cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert out.is_file()


def test_detect_on_the_samples_with_the_default_model(installed: Path, tmp_path: Path) -> None:
    if not (SAMPLES / "flight_2024.tif").is_file():
        pytest.skip("data_samples/ is not there yet")
    if not DEFAULT_MODEL.is_file():
        pytest.skip("the default model models/default/idou-default.onnx is not there yet")
    out = tmp_path / "changes.gpkg"
    run = _run(installed, installed / "idou", "detect", SAMPLES / "flight_2024.tif",
               SAMPLES / "flight_2025.tif", "-o", out, "--parcels",
               SAMPLES / "parcels.gpkg", "--buildings", SAMPLES / "buildings_2024.gpkg",
               cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "candidate parcels" in run.stdout
