"""The ONNX model contract: what inference reads from a model's ``metadata_props``.

A model carries every parameter inference needs; nothing is guessed. Inputs ``before`` and
``after`` are float32 ``N×C×H×W`` normalised as ``(pixel / 255 - mean) / std`` per band; the
output ``probabilities`` is ``N×2×H×W`` in [0, 1]: channel 0 = new (新築), 1 = demolished (滅失).
A model may declare further outputs in ``extra_outputs``: ``presence`` is float32 ``N×2×H×W``
in [0, 1], channel 0 = a building stands there in BEFORE, 1 = in AFTER.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from idou.geo.errors import UserInputError

METADATA_KEY = "idou.contract"
INPUT_BEFORE = "before"
INPUT_AFTER = "after"
OUTPUT_PROBABILITIES = "probabilities"
CHANNELS = ("new", "demolished")
OUTPUT_PRESENCE = "presence"
EXTRA_OUTPUTS = (OUTPUT_PRESENCE,)


@dataclass(frozen=True)
class ModelContract:
    """Everything inference needs to run a change model, stored as JSON in the ONNX metadata."""

    band_order: tuple[str, ...] = ("red", "green", "blue")
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    tile_size: int = 512
    tile_overlap: int = 64
    gsd_m: float = 0.2
    threshold_new: float = 0.5
    threshold_demolished: float = 0.5
    recall_target: float | None = None
    model_name: str = "idou"
    model_version: str = "0.0.0"
    mlflow_run_id: str | None = None
    training_data: str = ""
    architecture: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    extra_outputs: tuple[str, ...] = ()

    @property
    def thresholds(self) -> tuple[float, float]:
        """(new, demolished) thresholds, in channel order."""
        return (self.threshold_new, self.threshold_demolished)

    def to_metadata(self) -> dict[str, str]:
        """The ``metadata_props`` entries for this contract."""
        return {METADATA_KEY: json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)}

    @classmethod
    def from_metadata(cls, props: dict[str, str], source: str = "the model") -> ModelContract:
        """Read a contract from ``metadata_props``; a missing or malformed one is a user error."""
        raw = props.get(METADATA_KEY)
        if raw is None:
            raise UserInputError(
                f"{source} carries no idou metadata ({METADATA_KEY}); export it with `idou export`."
            )
        try:
            data = json.loads(raw)
            for key in ("band_order", "mean", "std"):
                data[key] = tuple(data[key])
            if "extra_outputs" in data:
                data["extra_outputs"] = tuple(str(v) for v in data["extra_outputs"])
            known = {f for f in cls.__dataclass_fields__}
            contract = cls(**{k: v for k, v in data.items() if k in known})
        except (ValueError, TypeError, KeyError) as exc:
            raise UserInputError(
                f"{source} has malformed idou metadata ({exc}); re-export it with `idou export`."
            ) from exc
        contract.validate(source)
        return contract

    def with_thresholds(
        self, new: float, demolished: float, recall_target: float | None
    ) -> ModelContract:
        """A copy with tuned thresholds and the recall they were tuned for."""
        data = asdict(self)
        data.update(threshold_new=float(new), threshold_demolished=float(demolished),
                    recall_target=recall_target)
        data["band_order"], data["mean"], data["std"] = (
            tuple(self.band_order), tuple(self.mean), tuple(self.std))
        data["extra_outputs"] = tuple(self.extra_outputs)
        return ModelContract(**data)

    def validate(self, source: str = "the model") -> None:
        """Check internal consistency; raise a user error naming ``source`` otherwise."""
        n = len(self.band_order)
        problems = []
        if n not in (3, 4) or len(self.mean) != n or len(self.std) != n:
            problems.append("band_order, mean and std must name 3 or 4 bands alike")
        if self.tile_size < 32 or not 0 <= self.tile_overlap < self.tile_size // 2:
            problems.append("tile_size must be >= 32 and tile_overlap below half of it")
        if self.gsd_m <= 0:
            problems.append("gsd_m must be positive")
        if not all(0.0 < t < 1.0 for t in self.thresholds):
            problems.append("thresholds must lie strictly between 0 and 1")
        unknown = [o for o in self.extra_outputs if o not in EXTRA_OUTPUTS]
        if unknown:
            problems.append(f"extra_outputs {unknown} are unknown (known: "
                            f"{', '.join(EXTRA_OUTPUTS)})")
        if problems:
            raise UserInputError(f"{source} has invalid idou metadata: {'; '.join(problems)}.")
