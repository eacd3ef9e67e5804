"""The walkthrough notebooks run end to end (nbmake) and are committed without outputs.

Each notebook runs in its own ``pytest --nbmake`` subprocess with a hard timeout; everything it
writes goes to a temporary folder (``TMPDIR``), its mlflow store is temporary and registry
downloads are cached there too, so the repository stays untouched; the notebook removes its
own work folder at the end, as it does for a user. Settings inside the
notebooks are tiny (the three together take a few minutes on two CPU cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
NAMES = ("01_quickstart", "02_train_tune_register", "03_review_feedback")
NEEDS_TORCH = {"02_train_tune_register", "03_review_feedback"}
TIMEOUT_S = 300


def test_every_notebook_is_tested() -> None:
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_committed_without_outputs(name: str) -> None:
    notebook = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text(encoding="utf-8"))
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert code, f"{name} has no code cells"
    for cell in code:
        assert cell.get("outputs") == [] and cell.get("execution_count") is None, (
            f"{name}.ipynb holds outputs; clear them before committing")


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name: str, tmp_path: Path) -> None:
    pytest.importorskip("nbmake")
    if name in NEEDS_TORCH:
        pytest.importorskip("torch")
    env = {
        **os.environ,
        "NO_ALBUMENTATIONS_UPDATE": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "IDOU_MODEL_CACHE": str(tmp_path / "model-cache"),
        "IDOU_NB_THREADS": "2",
        "TMPDIR": str(tmp_path),
        "MPLBACKEND": "Agg",
        # the notebooks' `idou` command is the one beside this interpreter
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("IDOU_NB_MODEL", None)  # the notebooks must work with the shipped default model
    command = [sys.executable, "-m", "pytest", "--nbmake", f"--nbmake-timeout={TIMEOUT_S}",
               "-p", "no:cacheprovider", "-q", "--rootdir", str(tmp_path),
               str(NOTEBOOKS / f"{name}.ipynb")]
    try:
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT_S + 60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name}.ipynb ran longer than {TIMEOUT_S + 60} s")
    assert done.returncode == 0, (
        f"{name}.ipynb failed:\n{done.stdout[-6000:]}\n{done.stderr[-2000:]}")
    assert not (NOTEBOOKS / ".ipynb_checkpoints").exists()
    # the notebook removes its own temporary WORK folder (about 160 MB) when it ends
    assert not list(tmp_path.glob("idou-nb*")), sorted(p.name for p in tmp_path.iterdir())
    assert not (NOTEBOOKS / "mlruns").exists() and not (REPO / "mlruns").exists()
