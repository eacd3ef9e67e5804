"""Settings every test runs under: no telemetry, no update checks, a throw-away mlflow store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLES = REPO / "data_samples"


@pytest.fixture(autouse=True)
def _mlflow_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
                ) -> Iterator[None]:
    """Every test gets its own temporary mlflow tracking store."""
    store = tmp_path_factory.mktemp("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    yield


@pytest.fixture
def shared_data() -> Path:
    """The real public data beside the project; skip when it is absent (a user's clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real public data not present at {SHARED_DATA}")
    return SHARED_DATA


_LITTER = ("mlruns", "mlflow.db", "mlartifacts")
_LITTER_BEFORE = {name for name in _LITTER if (REPO / name).exists()}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when a test left mlflow files in the repository (they belong in tmp)."""
    left = [name for name in _LITTER if (REPO / name).exists() and name not in _LITTER_BEFORE]
    if left:
        writer = session.config.get_terminal_writer()
        writer.line()
        writer.line(
            f"tests left {', '.join(left)} in {REPO}; write mlflow stores and artifacts under "
            "tmp_path", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
