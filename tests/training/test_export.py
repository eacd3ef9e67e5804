"""ONNX export: parity with torch, the metadata contract, dynamic axes, the model card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from idou.errors import InvalidOption  # noqa: E402
from idou.inference.contract import ModelContract  # noqa: E402
from idou.training import export as export_module  # noqa: E402
from idou.training.config import TrainConfig, config_from_dict  # noqa: E402
from idou.training.export import ExportError, ExportResult, export_checkpoint  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _checkpoint(tmp_path: Path, presence: bool = False) -> Path:
    from idou.models.siamese import NetworkConfig, SiameseChangeNet
    from idou.training.checkpoints import plain_data as _plain

    config = config_from_dict({
        "name": "tiny", "model": {"decoder_channels": [8, 8, 8, 8, 8],
                                  "presence_head": presence},
        "train_data": [{"kind": "synthetic", "seeds": [1], "scene_size": 256}],
        "contract": {"gsd_m": 0.4, "tile_size": 64, "tile_overlap": 8,
                     "model_name": "tiny", "model_version": "9.9.9"}})
    torch.manual_seed(0)
    net_config = NetworkConfig(decoder_channels=(8, 8, 8, 8, 8), presence_head=presence)
    net = SiameseChangeNet(net_config)
    with torch.no_grad():  # non-trivial batch-norm statistics
        net.train()
        for _ in range(3):
            net(torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64))
    path = tmp_path / "best.ckpt"
    torch.save({"format": 1, "network": net_config.to_dict(), "model": net.state_dict(),
                "epoch": 3, "config": _plain(config.to_dict())}, path)
    return path


def _real_pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    from idou.training.datasets.synthetic import make_scene

    scene = make_scene(seed=940001, size=160, factor=1)
    return [(scene.before[:64, :64], scene.after[:64, :64])]


def test_export_matches_torch_and_carries_the_contract(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path)
    out = tmp_path / "m.onnx"
    result = export_checkpoint(ckpt, out, real_pairs=_real_pairs())
    assert result.parity["parity_max_abs_diff_random"] <= 1e-4
    assert result.parity["parity_max_abs_diff_real"] <= 1e-4

    proto = onnx.load(str(out))
    assert len(list(out.parent.glob("*.data"))) == 0  # one file, no external data
    assert max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")) >= 17
    contract = ModelContract.from_metadata({p.key: p.value for p in proto.metadata_props})
    assert contract.gsd_m == 0.4 and contract.tile_size == 64 and contract.tile_overlap == 8
    assert contract.model_version == "9.9.9"
    assert contract == result.contract

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(3, 3, 96, 128)).astype(np.float32)
    (probs,) = session.run(["probabilities"], {"before": x, "after": x[::-1].copy()})
    assert probs.shape == (3, 2, 96, 128)  # dynamic batch, height and width
    assert probs.min() >= 0.0 and probs.max() <= 1.0  # the sigmoid is in the graph

    from idou.inference.model_card import card_paths, read_card, sha256_file

    json_path, md_path = card_paths(out)
    card = read_card(json_path)
    assert card.sha256 == sha256_file(out) == result.sha256
    assert card.name == "tiny" and "retrain" in card.terms
    assert card.metrics["parity_max_abs_diff_real"] <= 1e-4
    assert card.sha256 in md_path.read_text(encoding="utf-8")
    assert json.loads(json_path.read_text(encoding="utf-8"))["version"] == "9.9.9"


def test_export_that_disagrees_with_torch_fails_and_leaves_no_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = _checkpoint(tmp_path)
    monkeypatch.setattr(export_module, "PARITY_TOLERANCE", -1.0)
    out = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match="differs from torch"):
        export_checkpoint(ckpt, out, real_pairs=_real_pairs(), card=False)
    assert not out.exists()


def test_idou_export_command(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from idou.cli import app

    ckpt = _checkpoint(tmp_path)
    out = tmp_path / "cli.onnx"
    result = CliRunner().invoke(app, ["export", str(ckpt), "-o", str(out), "--no-card"])
    assert result.exit_code == 0, result.output
    assert out.is_file() and "max |diff|" in result.output
    assert not (tmp_path / "cli.card.json").exists()


def test_presence_heads_are_exported_as_a_declared_output(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path, presence=True)
    out = tmp_path / "p.onnx"
    result = export_checkpoint(ckpt, out, real_pairs=_real_pairs(), card=False)
    assert result.parity["parity_max_abs_diff_real"] <= 1e-4  # both outputs compared
    proto = onnx.load(str(out))
    assert [o.name for o in proto.graph.output] == ["probabilities", "presence"]
    contract = ModelContract.from_metadata({p.key: p.value for p in proto.metadata_props})
    assert contract.extra_outputs == ("presence",)
    from idou.inference.model_source import check_graph

    check_graph(proto, contract, str(out))  # inference accepts the graph as it is
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).normal(size=(2, 3, 64, 96)).astype(np.float32)
    probs, presence = session.run(None, {"before": x, "after": x[::-1].copy()})
    assert probs.shape == presence.shape == (2, 2, 64, 96)
    assert presence.min() >= 0.0 and presence.max() <= 1.0
    # channel 0 is BEFORE's buildings, 1 AFTER's: the same image gives the same presence
    same, = session.run(["presence"], {"before": x[:1], "after": x[:1]})
    np.testing.assert_allclose(same[0, 0], same[0, 1], atol=1e-6)


def _exported(ckpt: Path, out: Path, config: TrainConfig | None
              ) -> tuple[ExportResult, Any]:
    """Export ``ckpt`` with ``config`` (None: the stored one); the result and its session."""
    result = export_checkpoint(ckpt, out, config=config, real_pairs=_real_pairs(), card=False)
    return result, ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])


def test_the_presence_gate_caps_new_by_after_and_demolished_by_before(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path, presence=True)
    stored = torch.load(ckpt, weights_only=False)
    stored["model"]["head.bias"] += 4.0  # change probabilities near 0.9: above some presence
    torch.save(stored, ckpt)
    gated_config = config_from_dict({**stored["config"], "model": {
        **stored["config"]["model"], "presence_gate": True}})
    x = np.random.default_rng(2).normal(size=(2, 3, 64, 64)).astype(np.float32)
    outputs = {}
    for name, config in (("plain", None), ("gated", gated_config)):
        result, session = _exported(ckpt, tmp_path / f"{name}.onnx", config)
        assert result.contract.extra["network"]["presence_gate"] is (config is not None)
        outputs[name] = session.run(None, {"before": x, "after": x[::-1].copy()})
    plain, presence = outputs["plain"]
    gated, gated_presence = outputs["gated"]
    np.testing.assert_allclose(gated_presence, presence, atol=1e-6)
    capped = np.stack([presence[:, 1], presence[:, 0]], 1)  # new ≤ after, demolished ≤ before
    assert (plain > capped + 1e-3).any()  # the cap binds somewhere on this random network
    np.testing.assert_allclose(gated, np.minimum(plain, capped), atol=1e-5)


def test_the_export_config_also_switches_a_trained_in_gate_off(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path, presence=True)
    stored = torch.load(ckpt, weights_only=False)
    stored["model"]["head.bias"] += 4.0
    plain_config = config_from_dict(stored["config"])
    stored["network"]["presence_gate"] = True  # trained with the gate on
    stored["config"]["model"]["presence_gate"] = True
    torch.save(stored, ckpt)
    x = np.random.default_rng(5).normal(size=(1, 3, 64, 64)).astype(np.float32)
    outputs = {}
    for name, config in (("stored", None), ("off", plain_config)):
        result, session = _exported(ckpt, tmp_path / f"{name}.onnx", config)
        assert result.contract.extra["network"]["presence_gate"] is (config is None)
        outputs[name] = session.run(None, {"before": x, "after": x[:, ::-1].copy()})
    gated, presence = outputs["stored"]
    plain, _ = outputs["off"]
    capped = np.stack([presence[:, 1], presence[:, 0]], 1)
    np.testing.assert_allclose(gated, np.minimum(plain, capped), atol=1e-5)
    assert (plain > gated + 1e-3).any()


def test_flip_averaging_exports_the_mean_over_the_tile_and_its_three_flips(tmp_path: Path
                                                                           ) -> None:
    ckpt = _checkpoint(tmp_path, presence=True)
    stored = torch.load(ckpt, weights_only=False)
    flipped_config = config_from_dict({**stored["config"], "model": {
        **stored["config"]["model"], "flip_average": True}})
    x = np.random.default_rng(3).normal(size=(2, 3, 64, 64)).astype(np.float32)
    y = np.random.default_rng(4).normal(size=(2, 3, 64, 64)).astype(np.float32)
    sessions = {}
    for name, config in (("plain", None), ("flips", flipped_config)):
        result, sessions[name] = _exported(ckpt, tmp_path / f"{name}.onnx", config)
        assert result.contract.extra["network"]["flip_average"] is (config is not None)

    def plain(flip: tuple[int, ...]) -> list[np.ndarray]:
        b, a = (np.ascontiguousarray(np.flip(v, flip)) for v in (x, y))
        return [np.flip(o, flip) for o in sessions["plain"].run(None, {"before": b, "after": a})]

    runs = [plain(f) for f in ((), (3,), (2,), (2, 3))]
    expected = [np.mean([r[k] for r in runs], axis=0) for k in range(2)]
    averaged = sessions["flips"].run(None, {"before": x, "after": y})
    assert np.abs(runs[0][0] - expected[0]).max() > 1e-3  # the flips do change this network
    for got, want in zip(averaged, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_presence_gate_without_presence_heads_is_refused() -> None:
    with pytest.raises(InvalidOption, match="presence_gate needs presence_head"):
        config_from_dict({"name": "x", "model": {"presence_gate": True},
                          "train_data": [{"kind": "synthetic", "seeds": [1]}]})


def test_a_model_without_presence_declares_no_extra_output(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    result = export_checkpoint(_checkpoint(tmp_path), out, real_pairs=_real_pairs(), card=False)
    assert result.contract.extra_outputs == ()
    assert [o.name for o in onnx.load(str(out)).graph.output] == ["probabilities"]
