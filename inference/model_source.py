"""Find, read and check the model a run uses: the packaged default, a file, or the registry.

The model file is read once; its hash, its contract and the session all come from those same
bytes. Nothing is unpickled: a model is ONNX or it is refused.
"""

from __future__ import annotations

import importlib
import importlib.resources
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from idou.errors import InputNotFound, ModelContractError
from idou.inference.contract import (
    INPUT_AFTER,
    INPUT_BEFORE,
    OUTPUT_PROBABILITIES,
    ModelContract,
)
from idou.inference.model_card import ModelCard, card_paths, read_card, sha256_bytes

DEFAULT_SPEC = "default"
DEFAULT_MODEL = ("default", "idou-default.onnx")
REGISTRY_PREFIX = "models:/"


@dataclass
class LoadedModel:
    """A checked model: where it came from, its bytes and hash, contract and card."""

    path: Path
    sha256: str
    contract: ModelContract
    card: ModelCard | None
    data: bytes = field(repr=False)
    spec: str = ""


def default_model_path() -> Path:
    """Where the packaged default model lives (``idou/models/default/idou-default.onnx``)."""
    root = importlib.resources.files("idou.models")
    return Path(str(root.joinpath(*DEFAULT_MODEL)))


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str | None]:
    dims: list[int | str | None] = []
    for dim in value_info.type.tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return dims


# operator domains ONNX Runtime implements (the empty domain is ai.onnx)
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})


def check_self_contained(model: onnx.ModelProto, source: str) -> None:
    """Refuse weights kept in another file (ONNX external data) and custom operator domains.

    idou runs the bytes whose hash it checked, so weights must be inside the file, and every
    operator must be one ONNX Runtime has.
    """
    graphs = [model.graph]
    tensors: list[onnx.TensorProto] = []
    domains = {o.domain for o in model.opset_import}
    while graphs:
        graph = graphs.pop()
        tensors.extend(graph.initializer)
        for node in graph.node:
            domains.add(node.domain)
            for attr in node.attribute:
                if attr.HasField("t"):
                    tensors.append(attr.t)
                graphs.extend([attr.g] if attr.HasField("g") else [])
                graphs.extend(attr.graphs)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in tensors):
        raise ModelContractError(
            f"{source} keeps its weights in a separate file (ONNX external data), which idou "
            "does not load; export the model as one file with `idou export`.")
    custom = sorted(domains - STANDARD_DOMAINS)
    if custom:
        raise ModelContractError(
            f"{source} uses operators of the custom domain {', '.join(map(repr, custom))} that "
            "ONNX Runtime does not have; export it with standard operators (`idou export`).")


def check_graph(model: onnx.ModelProto, contract: ModelContract, source: str) -> None:
    """Refuse a graph whose inputs and output do not follow the contract."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = {vi.name: vi for vi in model.graph.input if vi.name not in initializers}
    outputs = {vi.name: vi for vi in model.graph.output}
    if set(inputs) != {INPUT_BEFORE, INPUT_AFTER} or OUTPUT_PROBABILITIES not in outputs:
        raise ModelContractError(
            f"{source} has inputs {sorted(inputs)} and outputs {sorted(outputs)}; an idou model "
            f"takes '{INPUT_BEFORE}' and '{INPUT_AFTER}' and gives '{OUTPUT_PROBABILITIES}' "
            "(re-export it with `idou export`).")
    bands = len(contract.band_order)
    for name in (INPUT_BEFORE, INPUT_AFTER):
        vi = inputs[name]
        if vi.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise ModelContractError(f"{source}: input '{name}' is not float32; re-export it with "
                                     "`idou export`.")
        dims = _dims(vi)
        problems = []
        if len(dims) != 4:
            problems.append(f"has {len(dims)} dimensions instead of N x C x H x W")
        else:
            if isinstance(dims[1], int) and dims[1] != bands:
                problems.append(f"has {dims[1]} channels but the metadata names {bands} bands "
                                f"({', '.join(contract.band_order)})")
            if not isinstance(dims[1], int):
                problems.append("has no fixed channel count")
            for d in dims[2:]:
                if isinstance(d, int) and d != contract.tile_size:
                    problems.append(f"is fixed to {d} px but the tile size is "
                                    f"{contract.tile_size}")
                    break
        if problems:
            raise ModelContractError(f"{source}: input '{name}' {'; '.join(problems)}; "
                                     "re-export it with `idou export`.")
    for name in (OUTPUT_PROBABILITIES, *contract.extra_outputs):
        if name not in outputs:
            raise ModelContractError(f"{source} declares the output '{name}' in its metadata but "
                                     "its graph has none; re-export it with `idou export`.")
        out_dims = _dims(outputs[name])
        if len(out_dims) != 4 or (isinstance(out_dims[1], int) and out_dims[1] != 2):
            raise ModelContractError(f"{source}: output '{name}' must be N x 2 x H x W; "
                                     "re-export it with `idou export`.")


def load_model_bytes(data: bytes, path: Path, *, card_required: bool, spec: str = ""
                     ) -> LoadedModel:
    """Check serialised model bytes against their card and contract.

    Args:
        data: the ONNX file's bytes.
        path: where they came from (cards are looked for beside it).
        card_required: refuse a model without a card (the packaged default).
        spec: how the user named the model, for messages.
    """
    name = path.name
    digest = sha256_bytes(data)
    json_card, _ = card_paths(path)
    card: ModelCard | None = None
    if json_card.is_file():
        card = read_card(json_card)
        if card.sha256.lower() != digest:
            raise ModelContractError(
                f"{name} does not match its model card {json_card.name} (sha256 {digest[:12]}… "
                f"vs {card.sha256[:12]}…); the file is damaged or was replaced: restore the "
                "released model or its card.")
    elif card_required:
        raise ModelContractError(f"{name} has no model card {json_card.name} beside it; reinstall "
                                 "idou or pass --model PATH.")
    else:
        warnings.warn(f"{name} has no model card ({json_card.name}); its hash cannot be "
                      "checked.", UserWarning, stacklevel=2)
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several kinds
        raise ModelContractError(f"{name} is not an ONNX model ({type(exc).__name__}); pass an "
                                 "ONNX file exported by `idou export`.") from exc
    if not model.graph.node and not model.graph.input:
        raise ModelContractError(f"{name} is not an ONNX model (empty graph); pass an ONNX file "
                                 "exported by `idou export`.")
    check_self_contained(model, name)
    props = {p.key: p.value for p in model.metadata_props}
    contract = ModelContract.from_metadata(props, source=name)
    check_graph(model, contract, name)
    return LoadedModel(path=path, sha256=digest, contract=contract, card=card, data=data,
                       spec=spec or str(path))


def _fetch_registered(spec: str) -> Path:
    try:
        registry = importlib.import_module("idou.inference.registry")
        fetch = registry.fetch_registered_model
    except (ImportError, AttributeError) as exc:
        raise ModelContractError(
            f"cannot fetch {spec}: the model registry needs the `train` extra "
            "(pip install 'idou[train]') and a tracking URI (MLFLOW_TRACKING_URI).") from exc
    return Path(fetch(spec))


def resolve_model(spec: str) -> LoadedModel:
    """The model named by ``spec``, read and checked.

    Args:
        spec: ``default`` (the packaged model; its card is required), a path to an ONNX file
            (its card is checked when present), or ``models:/NAME@ALIAS`` /
            ``models:/NAME/VERSION`` (fetched from the mlflow registry).

    Raises:
        UserInputError: missing file, hash not matching the card, no idou metadata, inputs or
            output not as the contract says, or not ONNX at all.
    """
    spec = str(spec).strip()
    card_required = False
    if spec == DEFAULT_SPEC:
        path = default_model_path()
        card_required = True
        if not path.is_file():
            raise ModelContractError(f"the packaged default model {path.name} is missing from this "
                                     "installation; reinstall idou or pass --model PATH.")
    elif spec.startswith(REGISTRY_PREFIX):
        path = _fetch_registered(spec)
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise InputNotFound(f"model file {spec} does not exist; pass --model default, a "
                                "path to an .onnx file, or models:/NAME@ALIAS.")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelContractError(f"cannot read model {path} ({exc.strerror}); check the path and "
                                 "its permissions.") from exc
    return load_model_bytes(data, path, card_required=card_required, spec=spec)
