"""The mlflow model registry: register an ONNX model with its card, fetch one by alias or version.

``register_model`` logs the ``.onnx`` file and its card as artifacts of an mlflow run, registers
a model version from them and points an alias (e.g. ``champion``) at it. ``fetch_registered_model``
resolves ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` and downloads the version's files
into a local cache, so ``idou detect --model models:/idou@champion`` reads a plain file whose
hash is then checked against its card like any other.

The tracking store is ``MLFLOW_TRACKING_URI`` or, when unset, ``sqlite:///mlflow.db`` in the
working directory (a local file or an ``mlflow server`` on the LAN; nothing needs the internet).
mlflow is imported only inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idou.errors import InputNotFound, InvalidOption, ModelContractError, UserInputError
from idou.inference.model_card import card_paths, sha256_file

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_NAME = "idou"
DEFAULT_ALIAS = "champion"
REGISTRY_EXPERIMENT = "idou-registry"
ARTIFACT_DIR = "model"
CACHE_ENV = "IDOU_MODEL_CACHE"
SHA_TAG = "idou.sha256"
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>[^/@]+))$")


@dataclass(frozen=True)
class RegisteredVersion:
    """One registered model version."""

    name: str
    version: str
    run_id: str | None
    alias: str | None
    source: str
    sha256: str

    @property
    def uri(self) -> str:
        """``models:/NAME@ALIAS`` when aliased, else ``models:/NAME/VERSION``."""
        if self.alias:
            return f"models:/{self.name}@{self.alias}"
        return f"models:/{self.name}/{self.version}"


def tracking_uri() -> str:
    """The tracking store in use: ``MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def _client(uri: str | None) -> Any:
    try:
        from mlflow import MlflowClient
    except ImportError as exc:  # pragma: no cover - the train extra is missing
        raise UserInputError(
            "the model registry needs mlflow; install the train extra (pip install 'idou[train]')."
        ) from exc
    return MlflowClient(tracking_uri=uri or tracking_uri())


def _is_missing(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "")
    return "RESOURCE_DOES_NOT_EXIST" in str(code) or "not found" in str(exc).lower()


def _run_exists(client: Any, run_id: str | None) -> bool:
    if not run_id:
        return False
    try:
        client.get_run(run_id)
    except Exception:  # noqa: BLE001 - any failure means: not in this store
        return False
    return True


def artifact_location(uri: str) -> str | None:
    """Where a new experiment's artifacts go: ``mlruns/`` beside a sqlite store's file.

    mlflow's own default for a sqlite store is ``./mlruns`` of whatever directory the process
    runs in, which scatters artifacts and breaks fetching from another directory or machine.
    None (mlflow's default) for other stores, e.g. a server with ``--artifacts-destination``.
    """
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///"):].split("?", 1)[0])
    return (db.expanduser().resolve().parent / "mlruns").as_uri()


def ensure_experiment(client: Any, name: str) -> str:
    """The id of experiment ``name``, created (artifacts per :func:`artifact_location`) if new.
    """
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    return str(client.create_experiment(name,
                                        artifact_location=artifact_location(client.tracking_uri)))


def register_model(model_path: str | Path, *, name: str = DEFAULT_NAME,
                   alias: str | None = DEFAULT_ALIAS, run_id: str | None = None,
                   description: str | None = None, uri: str | None = None) -> RegisteredVersion:
    """Log a model and its card to mlflow and register them as a new version of ``name``.

    The model is checked first exactly as inference checks it (ONNX, contract, card hash).

    Args:
        model_path: the ``.onnx`` file; its card ``<stem>.card.json`` (and ``.md``) beside it.
        name: the registered model name.
        alias: alias to point at the new version (None: no alias).
        run_id: log into this existing run; default: the training run named in the model's
            contract when it exists in this store, else a new run in ``idou-registry``.
        description: the version's description.
        uri: tracking URI; default :func:`tracking_uri`.

    Returns:
        The registered version.

    Raises:
        UserInputError: missing file or card, hash mismatch, bad contract, unknown ``run_id``.
    """
    from idou.inference.model_source import resolve_model

    path = Path(model_path).expanduser()
    json_card, md_card = card_paths(path)
    if path.is_file() and not json_card.is_file():
        raise ModelContractError(f"{path.name} has no model card {json_card.name} beside it; write "
                                 "one with `idou export` (or `idou tune`) before registering.")
    loaded = resolve_model(str(path))
    client = _client(uri)
    run_id = _registering_run(client, loaded, path, run_id)
    source = _log_model_files(client, run_id, (path, json_card, md_card))
    _ensure_registered_model(client, name)
    tags = _version_tags(loaded, path)
    mv = client.create_model_version(name, source=source, run_id=run_id, tags=tags,
                                     description=description)
    version = str(mv.version)
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return RegisteredVersion(name=name, version=version, run_id=run_id, alias=alias,
                             source=source, sha256=loaded.sha256)


def _registering_run(client: Any, loaded: Any, path: Path, run_id: str | None) -> str:
    """The run the model is logged into: ``run_id``, else its training run when this store
    holds it, else a new run in ``idou-registry``."""
    if run_id is not None and not _run_exists(client, run_id):
        raise InputNotFound(f"mlflow run {run_id} does not exist in {client.tracking_uri}; "
                            "pass an existing --run-id or leave it out.")
    if run_id is None and _run_exists(client, loaded.contract.mlflow_run_id):
        run_id = loaded.contract.mlflow_run_id
    if run_id is None:
        run = client.create_run(ensure_experiment(client, REGISTRY_EXPERIMENT),
                                run_name=f"register {path.name}",
                                tags={"idou.model_file": path.name})
        run_id = str(run.info.run_id)
        client.log_param(run_id, "model_version", loaded.contract.model_version)
        client.log_param(run_id, "sha256", loaded.sha256)
        client.set_terminated(run_id)
    return run_id


def _log_model_files(client: Any, run_id: str, files: tuple[Path, ...]) -> str:
    """Log the model and its card files as the run's artifacts; returns their source URI."""
    # The artifacts keep the file's own name (its card's names derive from it).
    with tempfile.TemporaryDirectory(prefix="idou-register-") as tmp:
        staged = Path(tmp) / ARTIFACT_DIR
        staged.mkdir()
        for src in files:
            if src.is_file():
                shutil.copy2(src, staged / src.name)
        client.log_artifacts(run_id, str(staged), ARTIFACT_DIR)
    return f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{ARTIFACT_DIR}"


def _ensure_registered_model(client: Any, name: str) -> None:
    try:
        client.get_registered_model(name)
    except Exception as exc:  # noqa: BLE001 - mlflow raises MlflowException
        if not _is_missing(exc):
            raise
        client.create_registered_model(name, description="idou change-detection models (ONNX)")


def _version_tags(loaded: Any, path: Path) -> dict[str, str]:
    contract = loaded.contract
    return {SHA_TAG: loaded.sha256, "idou.file": path.name,
            "idou.model_version": contract.model_version,
            "idou.threshold_new": str(contract.threshold_new),
            "idou.threshold_demolished": str(contract.threshold_demolished),
            "idou.recall_target": str(contract.recall_target)}


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``(name, alias, version)`` of ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``."""
    m = _URI.match(uri.strip())
    if not m:
        raise InvalidOption(f"{uri} is not a registry model URI; write models:/NAME@ALIAS "
                            "(e.g. models:/idou@champion) or models:/NAME/VERSION.")
    return m["name"], m["alias"], m["version"]


def cache_root() -> Path:
    """Where fetched models are kept: ``$IDOU_MODEL_CACHE`` or ``~/.cache/idou/models``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "idou" / "models"


def _onnx_in(folder: Path) -> Path | None:
    found = sorted(folder.rglob("*.onnx"))
    return found[0] if len(found) == 1 else None


def _refuse_missing_store(uri: str, store: str) -> None:
    """A SQLite store that does not exist holds no model: say so instead of creating an empty
    ``mlflow.db`` (mlflow creates the file on connect) in whatever folder the command ran."""
    if not store.startswith("sqlite:///"):
        return
    path = Path(store.removeprefix("sqlite:///").split("?", 1)[0])
    if not path.exists():
        unset = ("" if os.environ.get("MLFLOW_TRACKING_URI")
                 else "MLFLOW_TRACKING_URI is not set, and ")
        raise UserInputError(
            f"{uri} cannot be looked up: {unset}there is no model registry {path} "
            f"(in {Path.cwd()}); set MLFLOW_TRACKING_URI to the store the model was registered "
            "in, e.g. sqlite:////srv/idou/mlflow.db.")


def resolve_version(uri: str, *, tracking: str | None = None) -> Any:
    """The mlflow ``ModelVersion`` that ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` names.
    """
    name, alias, version = parse_model_uri(uri)
    _refuse_missing_store(uri, tracking or tracking_uri())
    client = _client(tracking)
    try:
        if alias is not None:
            return client.get_model_version_by_alias(name, alias)
        if version == "latest":
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise InputNotFound(f"registered model '{name}' has no versions in "
                                    f"{client.tracking_uri}; register one with `idou register`.")
            return max(versions, key=lambda v: int(v.version))
        return client.get_model_version(name, str(version))
    except UserInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - mlflow raises MlflowException
        if _is_missing(exc) or "INVALID_PARAMETER_VALUE" in str(getattr(exc, "error_code", "")):
            raise InputNotFound(
                f"{uri} is not in the model registry at {client.tracking_uri}; register it with "
                "`idou register MODEL.onnx`, or set MLFLOW_TRACKING_URI to the right store."
            ) from exc
        raise UserInputError(f"cannot reach the model registry at {client.tracking_uri} "
                             f"({type(exc).__name__}); check MLFLOW_TRACKING_URI.") from exc


def fetch_registered_model(uri: str, cache_dir: str | Path | None = None) -> Path:
    """Download a registered model (and its card) into the local cache; return the ``.onnx``.

    A version already in the cache is not downloaded again: ``models:/NAME/VERSION`` is served
    from the cache without contacting the registry (versions never change; works offline), an
    alias is resolved on every call (aliases move) and its version's cached copy is reused when
    its hash matches the version's ``idou.sha256`` tag.

    Args:
        uri: ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` (``latest`` allowed).
        cache_dir: cache root; default :func:`cache_root`.

    Raises:
        UserInputError: unknown name/alias/version, unreachable store, or a version whose
            artifacts do not hold exactly one ``.onnx`` file.
    """
    root = Path(cache_dir).expanduser() if cache_dir else cache_root()
    name, alias, number = parse_model_uri(uri)
    if alias is None and number is not None and number.isdigit():
        # A version never changes once registered: a cached copy needs no registry at all
        # (inference still checks the file against its card).
        cached = _onnx_in(root / _safe(name) / number) if (root / _safe(name) / number).is_dir() \
            else None
        if cached is not None and card_paths(cached)[0].is_file():
            return cached
    mv = resolve_version(uri)
    name, version = str(mv.name), str(mv.version)
    target = root / _safe(name) / version
    want = (mv.tags or {}).get(SHA_TAG)
    cached = _onnx_in(target) if target.is_dir() else None
    if cached is not None and want and sha256_file(cached) == want:
        return cached
    import mlflow.artifacts

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=target.parent))
    try:
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}",
                                                dst_path=str(staging), tracking_uri=tracking_uri(),
                                                registry_uri=tracking_uri())
        except Exception as exc:  # noqa: BLE001 - mlflow raises several kinds
            raise UserInputError(
                f"cannot download {uri} (version {version}) from {tracking_uri()} "
                f"({type(exc).__name__}: {str(exc)[:120]}); check the artifact store."
            ) from exc
        onnx_path = _onnx_in(staging)
        if onnx_path is None:
            raise ModelContractError(f"{uri} (version {version}) does not hold exactly one .onnx "
                                     "file; register it again with `idou register`.")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    result = _onnx_in(target)
    assert result is not None
    return result


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)
