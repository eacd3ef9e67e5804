"""Which model files idou may replace: ONNX models it exported or tuned, and their cards.

Used by ``idou export`` and ``idou tune`` (see :mod:`idou.geo.files.owned_outputs`); torch-free.
"""

from __future__ import annotations

import json
from pathlib import Path

from idou.geo.files.owned_outputs import check_replaceable


def check_model_targets(output: Path, force: bool, card: bool, inputs: list[Path]) -> None:
    """The model and card files may be written: new, or idou's own with ``force``."""
    from idou.inference.model_card import card_paths

    check_replaceable(output, force=force, what="-o", inputs=inputs, is_ours=onnx_is_ours)
    if card:
        for path in card_paths(output):
            check_replaceable(path, force=force, what="-o", inputs=inputs,
                              is_ours=card_is_ours)


def onnx_is_ours(path: Path) -> bool:
    """Whether ``path`` is an ONNX model idou exported (its metadata holds the contract)."""
    import onnx

    from idou.inference.contract import METADATA_KEY

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - any unreadable file is simply not ours
        return False
    return any(p.key == METADATA_KEY for p in proto.metadata_props)


def card_is_ours(path: Path) -> bool:
    """Whether ``path`` is a model card idou wrote (JSON fields, or the Markdown heading)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if path.suffix == ".md":
        return text.startswith("# Model card: ") and "| sha256 |" in text
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and {"name", "version", "sha256", "metrics"} <= set(data)
