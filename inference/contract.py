"""The ONNX model contract: what inference reads from a model's ``metadata_props``.

A model carries every parameter inference needs; nothing is guessed. Inputs ``before`` and
``after`` are float32 ``N×C×H×W`` normalised as ``(pixel / 255 - mean) / std`` per band; the
output ``probabilities`` is ``N×2×H×W`` in [0, 1]: channel 0 = new (新築), 1 = demolished (滅失).
A model may add outputs it declares in ``extra_outputs``: ``presence`` (``N×2×H×W`` in [0, 1],
channel 0 = a building stands there in BEFORE, 1 = in AFTER).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from idou.errors import ModelContractError

METADATA_KEY = "idou.contract"
INPUT_BEFORE = "before"
INPUT_AFTER = "after"
OUTPUT_PROBABILITIES = "probabilities"
OUTPUT_PRESENCE = "presence"
EXTRA_OUTPUTS = (OUTPUT_PRESENCE,)
CHANNELS = ("new", "demolished")


@dataclass(frozen=True)
class ModelContract:
    """Everything inference needs to run a change model, stored as JSON in the ONNX metadata."""

    band_order: tuple[str, ...] = ("red", "green", "blue")
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    # the defaults are the shipped default model's (models/default) and every training config's;
    # training's [contract] section takes its defaults from here
    tile_size: int = 256
    tile_overlap: int = 32
    gsd_m: float = 0.4
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
            raise ModelContractError(
                f"{source} carries no idou metadata ({METADATA_KEY}); export it with `idou export`."
            )
        try:
            data = json.loads(raw)
            for key in ("band_order", "mean", "std"):
                data[key] = tuple(data[key])
            data["extra_outputs"] = tuple(data.get("extra_outputs", ()))
            known = {f for f in cls.__dataclass_fields__}
            contract = cls(**{k: v for k, v in data.items() if k in known})
        except (ValueError, TypeError, KeyError) as exc:
            raise ModelContractError(
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

    def validate(self, source: str = "the model",
                 fix: str = "re-export it with `idou export` or restore the released model"
                 ) -> None:
        """Check types, ranges and consistency; raise a user error naming ``source`` otherwise.

        Ranges keep a damaged or hand-edited contract from running silently wrong (std 0, a NaN
        threshold), allocating gigabytes (tile_size 60000) or planning billions of tiles
        (gsd_m 1e-4).
        """
        problems = []
        n = len(self.band_order)
        if n not in (3, 4) or len(self.mean) != n or len(self.std) != n:
            problems.append("band_order, mean and std must name 3 or 4 bands alike")
        if not all(isinstance(b, str) and b for b in self.band_order) or len(
                set(self.band_order)) != n:
            problems.append("band_order must name each band once (e.g. red, green, blue)")
        if not all(_finite(m) and MEAN_RANGE[0] <= m <= MEAN_RANGE[1] for m in self.mean):
            problems.append(f"mean must hold numbers from {MEAN_RANGE[0]:g} to "
                            f"{MEAN_RANGE[1]:g} (pixels are scaled to 0..1)")
        if not all(_finite(s) and STD_RANGE[0] <= s <= STD_RANGE[1] for s in self.std):
            problems.append(f"std must hold numbers from {STD_RANGE[0]:g} to {STD_RANGE[1]:g}")
        if not (_whole(self.tile_size) and TILE_SIZE_RANGE[0] <= self.tile_size
                <= TILE_SIZE_RANGE[1] and self.tile_size % TILE_MULTIPLE == 0):
            problems.append(f"tile_size must be a whole number of pixels from "
                            f"{TILE_SIZE_RANGE[0]} to {TILE_SIZE_RANGE[1]}, a multiple of "
                            f"{TILE_MULTIPLE} (got {self.tile_size!r})")
        elif not (_whole(self.tile_overlap) and 0 <= self.tile_overlap < self.tile_size // 2):
            problems.append(f"tile_overlap must be a whole number of pixels below half the "
                            f"tile size (got {self.tile_overlap!r})")
        if not (_finite(self.gsd_m) and GSD_RANGE_M[0] <= self.gsd_m <= GSD_RANGE_M[1]):
            problems.append(f"gsd_m must be a pixel size in metres from {GSD_RANGE_M[0]:g} to "
                            f"{GSD_RANGE_M[1]:g} (got {self.gsd_m!r})")
        if not all(_finite(t) and 0.0 < t < 1.0 for t in self.thresholds):
            problems.append("thresholds must lie strictly between 0 and 1")
        if self.recall_target is not None and not (
                _finite(self.recall_target) and 0.0 < self.recall_target <= 1.0):
            problems.append("recall_target must lie between 0 and 1")
        unknown = [o for o in self.extra_outputs if o not in EXTRA_OUTPUTS]
        if unknown:
            problems.append(f"extra_outputs names unknown output(s) {', '.join(unknown)} "
                            f"(known: {', '.join(EXTRA_OUTPUTS)})")
        if problems:
            raise ModelContractError(f"{source} has invalid idou metadata: {'; '.join(problems)}; "
                                     f"{fix}.")


# Ranges a usable contract lies in: the networks downsample by 32; tiles beyond 4096 px do not
# fit a batch in memory; aerial orthophotos are flown at 1 cm to 10 m per pixel; normalisation
# keeps pixels (0..1) within a few units.
TILE_MULTIPLE = 32
TILE_SIZE_RANGE = (32, 4096)
GSD_RANGE_M = (0.01, 10.0)
MEAN_RANGE = (-1.0, 2.0)  # of pixels scaled to 0..1
STD_RANGE = (0.001, 10.0)


def _finite(value: object) -> bool:
    """A real number (not bool) that is neither NaN nor infinite."""
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
