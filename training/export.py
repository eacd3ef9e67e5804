"""Export a checkpoint to the single-file ONNX model inference runs, and write its model card.

The exported graph takes ``before`` and ``after`` (float32 N×C×H×W, normalised by the
contract's mean/std; batch, height and width are dynamic) and returns ``probabilities``
(N×2×H×W, the sigmoid is inside the graph) and, for a network with a presence head, a second
output ``presence`` (N×2×H×W, building in before / after) declared in the contract's
``extra_outputs``. The :class:`~idou.inference.contract.ModelContract`
goes into ``metadata_props``. Before anything is kept, ONNX Runtime must agree with torch on
random chips *and* on chips of real-looking imagery within ``PARITY_TOLERANCE``; otherwise the
file is deleted and the export fails.
"""

from __future__ import annotations

import datetime as dt
import io
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from idou.errors import ModelContractError
from idou.inference.contract import (
    INPUT_AFTER,
    INPUT_BEFORE,
    OUTPUT_PRESENCE,
    OUTPUT_PROBABILITIES,
    ModelContract,
)
from idou.models.siamese import ProbabilityModel, SiameseChangeNet
from idou.training.checkpoints import (
    checkpoint_config,
    load_checkpoint,
    network_from_checkpoint,
)
from idou.training.config import TrainConfig

OPSET = 17
PARITY_TOLERANCE = 1e-4
TERMS = ("Apache-2.0, like idou. Trained only on scenes of idou's own synthetic generator; no "
         "third-party imagery or labels. A demonstration and starting point: cities MUST retrain "
         "on their own orthophotos and building maps (idou train) before production use.")


class ExportError(RuntimeError):
    """The exported model does not reproduce the torch model."""


@dataclass
class ExportResult:
    """What an export produced."""

    path: Path
    contract: ModelContract
    sha256: str
    size_bytes: int
    parity: dict[str, float] = field(default_factory=dict)
    card_paths: tuple[Path, Path] | None = None


def contract_from_config(config: TrainConfig, mlflow_run_id: str | None = None,
                         extra: dict[str, Any] | None = None) -> ModelContract:
    """The contract a model trained with ``config`` offers inference."""
    c = config.contract
    contract = ModelContract(
        band_order=tuple(c.band_order), mean=tuple(c.mean), std=tuple(c.std),
        tile_size=c.tile_size, tile_overlap=c.tile_overlap, gsd_m=c.gsd_m,
        model_name=c.model_name, model_version=c.model_version, mlflow_run_id=mlflow_run_id,
        training_data=c.training_data or config.name,
        architecture=(f"siamese-{config.model.backbone}-unet"
                      f"(decoder={list(config.model.decoder_channels)})"),
        extra=dict(extra or {}),
        extra_outputs=(OUTPUT_PRESENCE,) if config.model.presence_head else ())
    contract.validate("the training config")
    return contract


def export_onnx(net: SiameseChangeNet, path: Path, contract: ModelContract,
                sample_size: int | None = None, opset: int = OPSET) -> Path:
    """Write ``net`` (with sigmoid) as one ONNX file with ``contract`` in its metadata.

    The graph's outputs after ``probabilities`` are the network's extra outputs; they must be
    the ones ``contract.extra_outputs`` declares.
    """
    model = ProbabilityModel(net).eval()
    if tuple(contract.extra_outputs) != model.extra_outputs:
        raise ExportError(f"the network gives extra outputs {list(model.extra_outputs)} but the "
                          f"contract declares {list(contract.extra_outputs)}; set "
                          "[model] presence_head to match the network.")
    outputs = [OUTPUT_PROBABILITIES, *model.extra_outputs]
    size = sample_size or contract.tile_size
    example = torch.zeros(1, len(contract.band_order), size, size)
    buffer = io.BytesIO()
    axes = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad():
        torch.onnx.export(model, (example, example), buffer,  # type: ignore[arg-type]
                          input_names=[INPUT_BEFORE, INPUT_AFTER],
                          output_names=outputs,
                          dynamic_axes={INPUT_BEFORE: axes, INPUT_AFTER: axes,
                                        **{name: axes for name in outputs}},
                          opset_version=opset, dynamo=False, do_constant_folding=True)
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in contract.to_metadata().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "idou"
    onnx.checker.check_model(proto)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    onnx.save(proto, tmp)
    tmp.replace(path)
    return path


def _normalise(images: np.ndarray, contract: ModelContract) -> np.ndarray:
    """uint8 N×H×W×C → float32 N×C×H×W, as inference normalises."""
    x = images.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    mean = np.asarray(contract.mean, np.float32)[None, :, None, None]
    std = np.asarray(contract.std, np.float32)[None, :, None, None]
    return ((x - mean) / std).astype(np.float32)


def parity(net: SiameseChangeNet, path: Path, contract: ModelContract,
           real_pairs: Sequence[tuple[np.ndarray, np.ndarray]] = (), seed: int = 0
           ) -> dict[str, float]:
    """Max |torch − ONNX Runtime| on random chips and on ``real_pairs`` (uint8 H×W×C each).

    Raises:
        ExportError: a difference above :data:`PARITY_TOLERANCE`.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = ProbabilityModel(net).eval()
    rng = np.random.default_rng(seed)
    size = contract.tile_size
    bands = len(contract.band_order)
    cases: dict[str, tuple[np.ndarray, np.ndarray]] = {
        "random": (rng.normal(0, 1, (2, bands, size, size)).astype(np.float32),
                   rng.normal(0, 1, (2, bands, size, size)).astype(np.float32))}
    if real_pairs:
        b = np.stack([p[0][:size, :size] for p in real_pairs])
        a = np.stack([p[1][:size, :size] for p in real_pairs])
        cases["real"] = (_normalise(b, contract), _normalise(a, contract))
    out: dict[str, float] = {}
    for name, (before, after) in cases.items():
        with torch.no_grad():
            expected = model(torch.from_numpy(before), torch.from_numpy(after))
        expected = expected if isinstance(expected, tuple) else (expected,)
        names = [OUTPUT_PROBABILITIES, *model.extra_outputs]
        got = session.run(names, {INPUT_BEFORE: before, INPUT_AFTER: after})
        diff = max(float(np.abs(e.numpy() - g).max()) for e, g in zip(expected, got, strict=True))
        out[f"parity_max_abs_diff_{name}"] = diff
        if not diff <= PARITY_TOLERANCE:
            raise ExportError(f"ONNX Runtime differs from torch by {diff:.2e} on {name} chips "
                              f"(tolerance {PARITY_TOLERANCE:g}); the export is not usable.")
    return out


def real_pairs_from_config(config: TrainConfig | None, count: int = 2, size: int = 256
                           ) -> list[tuple[np.ndarray, np.ndarray]]:
    """A few chips of real(istic) imagery: the config's validation (or training) data, else a
    small scene of idou's generator."""
    from idou.training.loaders import build_dataset

    specs = (config.val_data or config.train_data) if config is not None else []
    for spec in specs[:1]:
        if spec.kind == "synthetic":
            params = dict(spec.params)
            params["seeds"] = list(params.get("seeds", [0]))[:1]
            params.setdefault("scene_size", 1024)
            params["chip_size"] = size
            from idou.training.config import DataSpec

            spec = DataSpec("synthetic", params)
        try:
            ds = build_dataset(spec, config.contract.gsd_m)  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - fall back to the generator below
            continue
        items = [ds[i] for i in range(min(count, len(ds)))]
        if items and items[0]["before"].shape[0] >= size:
            return [(i["before"], i["after"]) for i in items]
    from idou.training.datasets.synthetic import make_scene

    scene = make_scene(seed=424242, size=max(2 * size + 64, 640), factor=1)
    return [(scene.before[k:k + size, k:k + size], scene.after[k:k + size, k:k + size])
            for k in (0, 32)[:count]]


def export_checkpoint(checkpoint: Path, output: Path, config: TrainConfig | None = None,
                      mlflow_run_id: str | None = None, card: bool = True,
                      real_pairs: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
                      card_metrics: dict[str, Any] | None = None,
                      trained_on: str | None = None, notes: str = "",
                      force: bool = False) -> ExportResult:
    """Checkpoint → ONNX with metadata, parity-checked, optionally with a model card.

    Args:
        checkpoint: ``best.ckpt`` or ``last.ckpt`` of ``idou train``.
        output: the ``.onnx`` file to write.
        config: the training config (default: the one stored in the checkpoint).
        mlflow_run_id: the run to record in the contract.
        card: write ``<stem>.card.json`` and ``<stem>.card.md`` beside the model.
        real_pairs: imagery chips for the parity check (default: from the config's data).
        card_metrics: measured figures for the card.
        trained_on: the card's training-data statement (default: from the config).
        notes: extra card notes.
        force: replace an existing model (and card) that idou exported; nothing else.

    Raises:
        ExportError: ONNX Runtime disagrees with torch (the file is removed).
        UserInputError: the output (or its card) exists and may not be replaced.
    """
    from idou.training.owned_models import check_model_targets

    check_model_targets(Path(output), force, card, [Path(checkpoint)])
    ckpt = load_checkpoint(checkpoint)
    if config is None:
        config = checkpoint_config(ckpt, Path(checkpoint))
    if config is None:
        raise ModelContractError(f"{checkpoint} carries no training config; pass --config with the "
                                 "TOML it was trained with.")
    net = network_from_checkpoint(ckpt)
    # the gate and the test-time flips hold no weights: the config given decides, on or off
    net.config = replace(net.config, flip_average=config.model.flip_average,
                         presence_gate=config.model.presence_gate and net.config.presence_head)
    run_id = mlflow_run_id or ckpt.get("mlflow_run_id")
    contract = contract_from_config(config, run_id, extra={"epoch": int(ckpt.get("epoch", 0)),
                                                           "network": net.config.to_dict()})
    output = Path(output)
    export_onnx(net, output, contract)
    try:
        pairs = list(real_pairs) if real_pairs is not None else real_pairs_from_config(
            config, size=contract.tile_size)
        checks = parity(net, output, contract, pairs)
    except Exception:
        output.unlink(missing_ok=True)
        raise
    from idou.inference.model_card import sha256_file

    result = ExportResult(output, contract, sha256_file(output), output.stat().st_size, checks)
    if card:
        from idou.training.card import card_facts, training_terms
        from idou.training.card import describe_training as describe_run

        result.card_paths = write_model_card(
            output, contract, trained_on or describe_run(config),
            {**card_facts(config), **checks, **(card_metrics or {})}, notes,
            terms=training_terms(config))
    return result


def write_model_card(model_path: Path, contract: ModelContract, trained_on: str,
                     metrics: dict[str, Any], notes: str = "", terms: str = TERMS
                     ) -> tuple[Path, Path]:
    """Write ``<stem>.card.json`` and ``<stem>.card.md`` beside ``model_path``."""
    from idou.inference.model_card import ModelCard, card_paths, sha256_file, write_card

    card = ModelCard(
        name=contract.model_name, version=contract.model_version,
        sha256=sha256_file(model_path),
        created=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        trained_on=trained_on, terms=terms, metrics=dict(metrics),
        thresholds={"new": contract.threshold_new,
                    "demolished": contract.threshold_demolished},
        recall_target=contract.recall_target,
        notes=notes or f"Exported on {platform.platform()} with torch {torch.__version__}.")
    json_path, md_path = card_paths(model_path)
    write_card(card, json_path, md_path)
    return json_path, md_path


def update_card(model_path: Path, metrics: dict[str, Any] | None = None,
                trained_on: str | None = None, notes: str | None = None) -> tuple[Path, Path]:
    """Add measured figures or statements to the card beside ``model_path`` (sha256 refreshed).

    The thresholds are re-read from the model's contract, so a card always shows what the
    model itself carries.
    """
    from idou.inference.model_card import card_paths, read_card, sha256_file, write_card

    json_path, md_path = card_paths(model_path)
    card = read_card(json_path)
    proto = onnx.load(str(model_path), load_external_data=False)
    contract = ModelContract.from_metadata({p.key: p.value for p in proto.metadata_props},
                                           str(model_path))
    card.sha256 = sha256_file(model_path)
    card.thresholds = {"new": contract.threshold_new,
                       "demolished": contract.threshold_demolished}
    card.recall_target = contract.recall_target
    if metrics:
        card.metrics = {**card.metrics, **metrics}
    if trained_on is not None:
        card.trained_on = trained_on
    if notes is not None:
        card.notes = notes
    write_card(card, json_path, md_path)
    return json_path, md_path
