"""What a model card says about its training data, read from the run's own config.

The card's training-data statement, licence terms and GSD come from the datasets the run was
trained and validated on, never from fixed text:

- ``synthetic``: idou's own generator, Apache-2.0 like idou;
- data whose folder (or a folder above it) holds a licence file of the GNU AGPL, such as the
  robosat tiles: their paths and AGPL-3.0, a measurement that must not be shipped;
- anything else (levir, chip folders, footprints, reviewed GeoPackages, other single-date
  tiles): their paths, and terms unknown unless the dataset's table gives ``terms = "..."``.

A table's ``terms`` always wins. Nothing here imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from idou.training.config import DataSpec, TrainConfig

GENERATOR_TERMS = "Apache-2.0, like idou (idou's own synthetic generator; no third-party data)"
AGPL_TERMS = ("AGPL-3.0 (licence file {licence}): a measurement, not to be shipped as a "
              "product model")
UNKNOWN_TERMS = ("terms unknown: the training config does not give them (add terms = \"...\" to "
                 "the dataset's table)")
SHIP_WARNING = ("Not to be shipped: trained on data whose terms forbid it or are unknown. "
                "Cities MUST retrain on their own orthophotos and building maps before "
                "production use.")
GIVEN_NOTE = ("Whether it may be shipped follows from the terms of its data, as the training "
              "config gives them:")
DEMO_NOTE = ("A demonstration and starting point: cities MUST retrain on their own orthophotos "
             "and building maps (idou train) before production use.")
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
    """The card's training-data statement: every dataset of the run, with paths and its GSD."""
    parts = [f"{role}: {_describe_spec(spec)}" for role, spec in _roles(config)]
    return (f"{config.name}: " + "; ".join(parts) +
            f". Model GSD {config.contract.gsd_m} m, tile {config.contract.tile_size} px.")


def training_terms(config: TrainConfig) -> str:
    """The card's terms: each distinct dataset's terms, and whether the model may be shipped."""
    seen: dict[str, list[str]] = {}
    statuses = set()
    for role, spec in _roles(config):
        terms, status = spec_terms(spec)
        statuses.add(status)
        where = ", ".join(data_paths(spec)) if spec.kind != "synthetic" else "generator"
        seen.setdefault(terms, []).append(f"{role} {spec.kind} ({where})"
                                          if where else f"{role} {spec.kind}")
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
    return facts
