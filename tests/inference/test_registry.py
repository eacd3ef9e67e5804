"""The mlflow model registry: register with an alias, fetch by alias or version, a real server."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from idou.errors import InputNotFound, InvalidOption, ModelContractError, UserInputError
from idou.inference.contract import ModelContract
from idou.inference.model_card import card_paths, sha256_file
from idou.inference.model_source import resolve_model
from idou.inference.registry import (
    artifact_location,
    fetch_registered_model,
    parse_model_uri,
    register_model,
)

from ..onnx_builders import passthrough_model

pytest.importorskip("mlflow", reason="the registry needs the train extra (mlflow)")

CONTRACT = ModelContract(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), tile_size=64,
                         tile_overlap=16, gsd_m=0.5, model_version="1.2.3")


def make_model(path: Path, contract: ModelContract = CONTRACT, scale: float = 1.0) -> Path:
    """A tiny contract-conforming model (probabilities = scale * after bands 0, 1) with a card."""
    return passthrough_model(path, contract, scale=scale, trained_on="nothing (test)")


@pytest.fixture(scope="module")
def _store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated mlflow sqlite store, made once (migrations take seconds)."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(autouse=True)
def _store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _store_template: Path) -> None:
    """Each test: its own copy of the empty store, its own model cache."""
    store = tmp_path / "store.db"
    shutil.copy(_store_template, store)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    monkeypatch.setenv("IDOU_MODEL_CACHE", str(tmp_path / "cache"))


def test_artifacts_beside_a_sqlite_store(tmp_path: Path) -> None:
    assert artifact_location(f"sqlite:///{tmp_path}/s.db") == (tmp_path / "mlruns").as_uri()
    assert artifact_location("http://127.0.0.1:5000") is None


def test_parse_model_uri() -> None:
    assert parse_model_uri("models:/idou@champion") == ("idou", "champion", None)
    assert parse_model_uri("models:/idou/3") == ("idou", None, "3")
    with pytest.raises(InvalidOption, match="models:/NAME@ALIAS"):
        parse_model_uri("models:/idou")


def test_alias_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          _store_template: Path) -> None:
    (tmp_path / "a").mkdir()
    first = make_model(tmp_path / "a" / "first.onnx")
    v1 = register_model(first, name="idou", alias="champion")
    assert (v1.version, v1.uri) == ("1", "models:/idou@champion")
    assert (tmp_path / "mlruns").is_dir()            # artifacts beside the sqlite store
    fetched = fetch_registered_model("models:/idou@champion")
    assert fetched.name == "first.onnx"
    assert sha256_file(fetched) == sha256_file(first)
    assert card_paths(fetched)[0].is_file()          # the card travels with the model
    loaded = resolve_model("models:/idou@champion")  # what `idou detect --model` does
    assert loaded.sha256 == v1.sha256 and loaded.contract.model_version == "1.2.3"

    # A second version takes the alias; version 1 stays fetchable by number.
    (tmp_path / "b").mkdir()
    second = make_model(tmp_path / "b" / "second.onnx", scale=0.5)
    v2 = register_model(second, name="idou", alias="champion")
    assert v2.version == "2"
    assert sha256_file(fetch_registered_model("models:/idou@champion")) == sha256_file(second)
    assert sha256_file(fetch_registered_model("models:/idou/1")) == sha256_file(first)
    assert sha256_file(fetch_registered_model("models:/idou/latest")) == sha256_file(second)

    # A cached version is served without the registry (offline); an alias needs the registry.
    shutil.copy(_store_template, tmp_path / "elsewhere.db")   # another, empty store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    assert sha256_file(fetch_registered_model("models:/idou/1")) == sha256_file(first)
    with pytest.raises(UserInputError, match="not in the model registry"):
        fetch_registered_model("models:/idou@champion")


def test_register_refuses_model_without_matching_card(tmp_path: Path) -> None:
    path = make_model(tmp_path / "m.onnx")
    card_paths(path)[0].unlink()
    with pytest.raises(ModelContractError, match="card"):
        register_model(path)
    path = make_model(tmp_path / "m.onnx")
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ModelContractError, match="does not match"):
        register_model(path)


def test_unknown_alias_is_a_user_error(tmp_path: Path) -> None:
    register_model(make_model(tmp_path / "m.onnx"), name="idou", alias="champion")
    with pytest.raises(InputNotFound, match="idou register"):
        fetch_registered_model("models:/idou@nope")
    with pytest.raises(InputNotFound, match="idou register"):
        fetch_registered_model("models:/other@champion")


# ------------------------------------------------------------------------------ a real server

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mlflow_cli() -> str | None:
    beside = Path(sys.executable).with_name("mlflow")
    return str(beside) if beside.is_file() else shutil.which("mlflow")


@pytest.fixture
def mlflow_server(tmp_path_factory: pytest.TempPathFactory, _store_template: Path
                  ) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 with a sqlite backend and local artifacts."""
    cli = _mlflow_cli()
    if cli is None:
        pytest.skip("the mlflow command line is not installed")
    root = tmp_path_factory.mktemp("mlflow-server")
    shutil.copy(_store_template, root / "backend.db")   # already migrated: a faster start
    port = _free_port()
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed in teardown
    proc = subprocess.Popen(
        [cli, "server", "--backend-store-uri", f"sqlite:///{root / 'backend.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": ""})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError("mlflow server exited: "
                                   + (root / "server.log").read_text(errors="replace")[-2000:])
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not answer /health within 90 s")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        log.close()


def test_real_mlflow_server_tracking_and_registry(mlflow_server: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    try:
        mlflow.set_experiment("idou-train-test")
        with mlflow.start_run(run_name="tiny training") as run:     # a tiny "training" record
            mlflow.log_params({"backbone": "resnet18", "epochs": 2})
            for epoch, recall in enumerate((0.5, 0.75)):
                mlflow.log_metric("val_object_recall_new", recall, step=epoch)
    finally:
        mlflow.set_tracking_uri(None)   # type: ignore[arg-type]  # no process-wide state left
        monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)  # (unset by the line above)
    contract = ModelContract(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), tile_size=64,
                             tile_overlap=16, gsd_m=0.5, mlflow_run_id=run.info.run_id)
    model = make_model(tmp_path / "trained.onnx", contract)
    version = register_model(model, name="idou", alias="champion")
    assert version.run_id == run.info.run_id     # logged beside its training run
    client = mlflow.MlflowClient(mlflow_server)
    stored = client.get_run(run.info.run_id)
    assert stored.data.params["backbone"] == "resnet18"
    assert stored.data.metrics["val_object_recall_new"] == 0.75
    assert client.get_model_version_by_alias("idou", "champion").version == version.version
    fetched = fetch_registered_model("models:/idou@champion")
    assert sha256_file(fetched) == sha256_file(model)
    assert resolve_model("models:/idou@champion").contract.mlflow_run_id == run.info.run_id
