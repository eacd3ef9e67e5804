"""Model cards: what a released model was trained on, under what terms, how well it does.

A card lives beside its model as ``<stem>.card.json`` (read by inference: the sha256 must match
the model file) and ``<stem>.card.md`` (read by people).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from idou.errors import InputNotFound, ModelContractError


@dataclass
class ModelCard:
    """The facts about one released model."""

    name: str
    version: str
    sha256: str
    created: str = ""
    trained_on: str = ""
    terms: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    recall_target: float | None = None
    notes: str = ""


def card_paths(model_path: str | Path) -> tuple[Path, Path]:
    """(``<stem>.card.json``, ``<stem>.card.md``) beside a model file."""
    path = Path(model_path)
    return (path.with_name(f"{path.stem}.card.json"), path.with_name(f"{path.stem}.card.md"))


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of some bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_card(path: str | Path) -> ModelCard:
    """Read a JSON model card; a missing or malformed one is a user error."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputNotFound(f"model card {path} does not exist; keep the card beside the "
                            "model.") from exc
    except (OSError, ValueError) as exc:
        raise ModelContractError(f"model card {path} is not readable JSON ({exc}); restore it from "
                                 "the model's release.") from exc
    if not isinstance(data, dict):
        raise ModelContractError(f"model card {path} is not a JSON object; restore it from the "
                                 "model's release.")
    known = set(ModelCard.__dataclass_fields__)
    try:
        card = ModelCard(**{k: v for k, v in data.items() if k in known})
    except TypeError as exc:
        raise ModelContractError(f"model card {path} lacks a required field ({exc}); restore it "
                                 "from the model's release.") from exc
    problem = _card_problem(card)
    if problem:
        raise ModelContractError(f"model card {path} {problem}; restore it from the model's "
                                 "release (or write it again with `idou export`).")
    return card


def _json(value: Any) -> str:
    """A value as the card's JSON writes it (``null``, not ``None``)."""
    return json.dumps(value, ensure_ascii=False)[:60]


def _card_problem(card: ModelCard) -> str | None:
    """What is wrong with a card's field types, or None (``sha256: null`` once crashed)."""
    if not isinstance(card.sha256, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", card.sha256):
        return f"has sha256 {_json(card.sha256)}, not the 64 hex digits of the model's hash"
    for key in ("name", "version", "created", "trained_on", "terms", "notes"):
        if not isinstance(getattr(card, key), str):
            return f"has {key} {_json(getattr(card, key))}, not a string"
    for key in ("metrics", "thresholds"):
        if not isinstance(getattr(card, key), dict):
            return f"has {key} {_json(getattr(card, key))}, not an object"
    numbers = [card.recall_target, *card.thresholds.values()]
    if not all(v is None and i == 0 or isinstance(v, int | float) and not isinstance(v, bool)
               for i, v in enumerate(numbers)):
        return "has a threshold or recall_target that is not a number"
    return None


def _markdown(card: ModelCard) -> str:
    lines = [f"# Model card: {card.name} {card.version}", ""]
    lines += ["| | |", "|---|---|", f"| sha256 | `{card.sha256}` |",
              f"| created | {card.created} |"]
    if card.thresholds:
        shown = ", ".join(f"{k} {v:g}" for k, v in card.thresholds.items())
        lines.append(f"| thresholds | {shown} |")
    if card.recall_target is not None:
        lines.append(f"| recall target | {card.recall_target:g} |")
    lines += ["", "## Trained on", "", card.trained_on or "(not recorded)", "",
              "## Terms", "", card.terms or "(not recorded)", ""]
    if card.metrics:
        lines += ["## Measured", "", "| metric | value |", "|---|---|"]
        for key, value in card.metrics.items():
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            lines.append(f"| {key} | {shown} |")
        lines.append("")
    if card.notes:
        lines += ["## Notes", "", card.notes, ""]
    return "\n".join(lines)


def write_card(card: ModelCard, json_path: str | Path, md_path: str | Path) -> None:
    """Write a card as JSON (for inference) and Markdown (for people)."""
    Path(json_path).write_text(json.dumps(asdict(card), indent=2, ensure_ascii=False) + "\n",
                               encoding="utf-8")
    Path(md_path).write_text(_markdown(card), encoding="utf-8")
