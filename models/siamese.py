"""Siamese change network: one shared encoder for both dates, fused at every scale, U-Net decoder.

Both dates go through the *same* encoder (shared weights). At each of the five encoder levels the
two feature maps are fused by ``concat(before, after, |after - before|)`` → 1×1 conv → 3×3 conv;
the concatenation keeps the direction of the change (new vs demolished), the absolute difference
makes "nothing changed" easy to see. A U-Net decoder climbs from stride 32 back to stride 2,
where a 1×1 head gives two logit channels: 0 = new (新築), 1 = demolished (滅失), upsampled
bilinearly to the input size.

An optional auxiliary head segments buildings on each date from the stride-4 features; it only
serves training (footprints are available for free) and is not part of the exported model.
With ``presence_head`` it becomes a small multi-scale building-presence head (strides 4, 8 and
16) that *is* exported: :class:`ProbabilityModel` then returns a second output, ``presence``
(N×2×H×W: channel 0 = a building stands there in BEFORE, 1 = in AFTER), declared in the
contract's ``extra_outputs``. With ``presence_gate`` as well, the exported change probabilities
follow from presence: new is at most the presence AFTER, demolished at most the presence BEFORE
(a new building needs a building after; a demolished one a building before), so one house
standing in one date only cannot fire both channels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from idou.models.backbones import build_encoder


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture of a :class:`SiameseChangeNet`.

    Attributes:
        backbone: one of ``idou.models.backbones.BACKBONES``.
        decoder_channels: decoder width at strides 32, 16, 8, 4, 2 (five values).
        aux_buildings: add the per-date building head (training only).
        in_channels: bands per date (3 = RGB; 4 adapts the first conv).
        presence_head: per-date building-presence head from strides 4-16, exported as the
            ``presence`` output (replaces the stride-4 auxiliary head).
        presence_gate: cap the exported new probability by the presence after and the
            demolished one by the presence before (needs ``presence_head``; no weights of its
            own, so an export config switches it on or off).
        flip_average: export the mean of the outputs over the tile and its three flips
            (horizontal, vertical, both): test-time augmentation at four times the cost; no
            weights of its own, so an export config switches it on or off.
    """

    backbone: str = "mobilenet_v3_large"
    decoder_channels: tuple[int, ...] = (96, 64, 48, 32, 16)
    aux_buildings: bool = True
    in_channels: int = 3
    presence_head: bool = False
    presence_gate: bool = False
    flip_average: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for checkpoints and mlflow."""
        data = asdict(self)
        data["decoder_channels"] = list(self.decoder_channels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkConfig:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        data["decoder_channels"] = tuple(data.get("decoder_channels", cls.decoder_channels))
        return cls(**data)


def _conv_bn_relu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Fusion(nn.Module):
    """Fuse the two dates' features of one level: concat(b, a, |a - b|) → 1×1 → 3×3."""

    def __init__(self, channels: int, out: int) -> None:
        super().__init__()
        self.reduce = _conv_bn_relu(3 * channels, out, 1)
        self.mix = _conv_bn_relu(out, out, 3)

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        return self.mix(self.reduce(torch.cat([before, after, torch.abs(after - before)], 1)))


class DecoderBlock(nn.Module):
    """Upsample to the skip's size, concatenate the skip, one 3×3 conv."""

    def __init__(self, cin: int, skip: int, out: int) -> None:
        super().__init__()
        self.conv = _conv_bn_relu(cin + skip, out, 3)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([x, skip], 1))


class PresenceHead(nn.Module):
    """Building logits of one date from its stride-4, 8 and 16 features (N×1 at stride 4)."""

    def __init__(self, channels: list[int], width: int = 32) -> None:
        super().__init__()
        self.project = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        self.mix = _conv_bn_relu(width, width, 3)
        self.out = nn.Conv2d(width, 1, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        x = self.project[0](feats[0])
        for project, f in zip(self.project[1:], feats[1:], strict=True):
            x = x + F.interpolate(project(f), size=size, mode="bilinear", align_corners=False)
        return self.out(self.mix(x))


class SiameseChangeNet(nn.Module):
    """The change network; ``forward(before, after)`` returns N×2×H×W logits.

    With ``return_aux=True`` it returns ``(change_logits, buildings_before, buildings_after)``,
    the last two N×1×H×W building logits (None without the auxiliary head).
    """

    def __init__(self, config: NetworkConfig | None = None,
                 init_weights: Path | None = None, pretrained: bool = False) -> None:
        super().__init__()
        self.config = config or NetworkConfig()
        if len(self.config.decoder_channels) != 5:
            raise ValueError("decoder_channels needs five values (strides 32, 16, 8, 4, 2)")
        if self.config.presence_gate and not self.config.presence_head:
            raise ValueError("presence_gate needs presence_head")
        self.encoder = build_encoder(self.config.backbone, init_weights, pretrained)
        if self.config.in_channels != 3:
            _adapt_first_conv(self.encoder, self.config.in_channels)
        enc = self.encoder.channels  # strides 2, 4, 8, 16, 32
        dec = self.config.decoder_channels  # strides 32, 16, 8, 4, 2
        self.fusions = nn.ModuleList(Fusion(c, d) for c, d in zip(enc, reversed(dec), strict=True))
        self.blocks = nn.ModuleList(
            DecoderBlock(dec[i], dec[i + 1], dec[i + 1]) for i in range(4))
        self.head = nn.Conv2d(dec[4], 2, 1)
        assert self.head.bias is not None
        nn.init.constant_(self.head.bias, -2.0)  # start near the prior: change is rare
        self.aux: nn.Module | None = (
            PresenceHead(enc[1:4]) if self.config.presence_head
            else nn.Conv2d(enc[1], 1, 1) if self.config.aux_buildings else None)

    def forward(self, before: torch.Tensor, after: torch.Tensor, return_aux: bool = False
                ) -> Any:
        size = before.shape[-2:]
        n = before.shape[0]
        feats = self.encoder(torch.cat([before, after], 0))  # one pass, shared weights
        fused = [f(x[:n], x[n:]) for f, x in zip(self.fusions, feats, strict=True)]
        x = fused[4]
        for block, skip in zip(self.blocks, reversed(fused[:4]), strict=True):
            x = block(x, skip)
        # the head runs at stride 2; its logits are upsampled (buildings span >= 7 px)
        logits = F.interpolate(self.head(x), size=size, mode="bilinear", align_corners=False)
        if not return_aux:
            return logits
        if self.aux is None:
            return logits, None, None
        aux = self.aux(feats[1:4]) if self.config.presence_head else self.aux(feats[1])
        aux = F.interpolate(aux, size=size, mode="bilinear", align_corners=False)
        return logits, aux[:n], aux[n:]


class ProbabilityModel(nn.Module):
    """What is exported: ``(before, after) → sigmoid(logits)``, N×2×H×W in [0, 1].

    With a presence head it returns ``(probabilities, presence)``, presence N×2×H×W in [0, 1]
    (channel 0 = building in BEFORE, 1 = in AFTER); with ``presence_gate`` new is capped by the
    presence after and demolished by the presence before; with ``flip_average`` each output is
    the mean over the tile and its three flips.
    """

    def __init__(self, net: SiameseChangeNet) -> None:
        super().__init__()
        self.net = net

    @property
    def extra_outputs(self) -> tuple[str, ...]:
        """Names of the outputs after ``probabilities`` (see the model contract)."""
        return ("presence",) if self.net.config.presence_head else ()

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> Any:
        if not self.net.config.flip_average:
            return self._once(before, after)
        outputs = [self._once(before, after)]
        for dims in ([3], [2], [2, 3]):  # each flip is its own inverse
            flipped = self._once(torch.flip(before, dims=dims), torch.flip(after, dims=dims))
            outputs.append(tuple(torch.flip(o, dims=dims) for o in flipped)
                           if isinstance(flipped, tuple) else torch.flip(flipped, dims=dims))
        if isinstance(outputs[0], tuple):
            return tuple(torch.stack(parts).mean(0) for parts in zip(*outputs, strict=True))
        return torch.stack(outputs).mean(0)

    def _once(self, before: torch.Tensor, after: torch.Tensor) -> Any:
        if not self.net.config.presence_head:
            return torch.sigmoid(self.net(before, after))
        logits, presence_b, presence_a = self.net(before, after, return_aux=True)
        probabilities = torch.sigmoid(logits)
        presence = torch.sigmoid(torch.cat([presence_b, presence_a], 1))
        if self.net.config.presence_gate:  # new ≤ building after, demolished ≤ building before
            probabilities = torch.minimum(probabilities, torch.flip(presence, dims=[1]))
        return probabilities, presence


def _adapt_first_conv(encoder: nn.Module, in_channels: int) -> None:
    """Replace the first conv so it takes ``in_channels`` bands (extra bands start at the mean)."""
    for name, module in encoder.named_modules():
        if isinstance(module, nn.Conv2d):
            new = nn.Conv2d(in_channels, module.out_channels,
                            module.kernel_size,  # type: ignore[arg-type]
                            module.stride,  # type: ignore[arg-type]
                            module.padding,  # type: ignore[arg-type]
                            bias=module.bias is not None)
            with torch.no_grad():
                w = module.weight
                new.weight.copy_(torch.cat(
                    [w[:, :3], w.mean(1, keepdim=True).expand(-1, in_channels - 3, -1, -1)], 1)
                    if in_channels > 3 else w[:, :in_channels])
            parent = encoder
            *path, last = name.split(".")
            for part in path:
                parent = getattr(parent, part)
            setattr(parent, last, new)
            return
