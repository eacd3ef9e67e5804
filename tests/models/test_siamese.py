"""The siamese change network: shapes per backbone, weights only from plain local files."""

from __future__ import annotations

from pathlib import Path

import pytest

from idou.errors import InvalidOption, ModelContractError


class _NotWeights:
    """A class instance: pickling it needs code, which weights_only loading refuses."""

    def __init__(self) -> None:
        self.payload = "run me"


@pytest.mark.parametrize("backbone",
                         ["resnet18", "resnet34", "mobilenet_v3_large", "efficientnet_b0"])
def test_network_outputs_two_channels_at_input_size(backbone: str) -> None:
    torch = pytest.importorskip("torch")
    from idou.models.siamese import NetworkConfig, SiameseChangeNet

    net = SiameseChangeNet(NetworkConfig(backbone=backbone, decoder_channels=(16, 16, 8, 8, 8)))
    net.eval()
    before, after = torch.rand(2, 3, 64, 96), torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        logits, aux_b, aux_a = net(before, after, return_aux=True)
    assert logits.shape == (2, 2, 64, 96)
    assert aux_b.shape == aux_a.shape == (2, 1, 64, 96)


def test_dates_are_not_interchangeable() -> None:
    """Swapping the dates must change the output (new vs demolished needs direction)."""
    torch = pytest.importorskip("torch")
    from idou.models.siamese import NetworkConfig, SiameseChangeNet

    torch.manual_seed(0)
    net = SiameseChangeNet(NetworkConfig(decoder_channels=(16, 16, 8, 8, 8))).eval()
    a, b = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(net(a, b), net(b, a))


def test_local_weights_load_into_the_encoder(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from torchvision.models import resnet18

    from idou.models.siamese import NetworkConfig, SiameseChangeNet

    reference = resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    net = SiameseChangeNet(NetworkConfig(backbone="resnet18"), init_weights=path)
    assert torch.equal(net.encoder.stages[0][0].weight, reference.conv1.weight)


def test_weights_that_need_code_to_unpickle_are_refused(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from idou.models.siamese import NetworkConfig, SiameseChangeNet

    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": _NotWeights()}, path)
    with pytest.raises(ModelContractError, match="not a plain weights file"):
        SiameseChangeNet(NetworkConfig(backbone="resnet18"), init_weights=path)


def test_unknown_backbone_is_a_user_error() -> None:
    pytest.importorskip("torch")
    from idou.models.siamese import NetworkConfig, SiameseChangeNet

    with pytest.raises(InvalidOption, match="unknown backbone"):
        SiameseChangeNet(NetworkConfig(backbone="vgg11"))


def test_complexity_counts_grow_with_the_backbone() -> None:
    pytest.importorskip("torch")
    from idou.models.complexity import count_parameters, gflops_per_pair
    from idou.models.siamese import NetworkConfig, SiameseChangeNet

    light = SiameseChangeNet(NetworkConfig(backbone="mobilenet_v3_large"))
    heavy = SiameseChangeNet(NetworkConfig(backbone="resnet18"))
    assert count_parameters(light) < count_parameters(heavy)
    g_small = gflops_per_pair(light, 64)
    assert g_small > 0
    # FLOPs scale with the pixel count
    assert gflops_per_pair(light, 128) == pytest.approx(4 * g_small, rel=0.05)


def test_batch_norm_statistics_follow_training_quickly() -> None:
    """Running statistics must keep up with a short from-scratch training (torchvision's
    MobileNetV3 default of momentum 0.01 left eval-mode outputs near zero for 160+ steps)."""
    pytest.importorskip("torch")
    from torch import nn

    from idou.models.siamese import NetworkConfig, SiameseChangeNet

    net = SiameseChangeNet(NetworkConfig(backbone="mobilenet_v3_large"))
    momenta = {m.momentum for m in net.modules() if isinstance(m, nn.BatchNorm2d)}
    assert momenta == {0.1}
