"""The training loop: it learns, it resumes exactly, it tracks in mlflow, it loads only data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from idou.errors import ModelContractError

torch = pytest.importorskip("torch")

from idou.training.checkpoints import load_checkpoint  # noqa: E402
from idou.training.config import config_from_dict  # noqa: E402
from idou.training.loop import train  # noqa: E402

SCENE = {"kind": "synthetic", "seeds": [930001], "scene_size": 384, "chip_size": 64,
         "stride": 32}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scene_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated scene shared by the tests of this module."""
    return tmp_path_factory.mktemp("scenes")


def _config(tmp_path: Path, cache: Path, **train: object) -> object:
    return config_from_dict({
        "name": "tiny", "seed": 5, "run_dir": str(tmp_path / "run"), "experiment": "tiny",
        "model": {"backbone": "mobilenet_v3_large", "decoder_channels": [8, 8, 8, 8, 8]},
        "train_data": [{**SCENE, "cache_dir": str(cache)}],
        "train": {"epochs": 2, "batch_size": 4, "chips_per_epoch": 8, "threads": 1,
                  "export_onnx": False, "sample_images": 1, **train},
        "contract": {"gsd_m": 0.4, "tile_size": 64, "tile_overlap": 8},
    })


def test_a_few_steps_lower_the_loss(scene_cache: Path) -> None:
    from idou.models.siamese import NetworkConfig, SiameseChangeNet
    from idou.training.collate import Collate
    from idou.training.datasets.synthetic import SyntheticChipDataset
    from idou.training.losses import ChangeLoss

    torch.manual_seed(0)
    ds = SyntheticChipDataset(**{k: v for k, v in SCENE.items() if k != "kind"},
                              cache_dir=scene_cache)
    items = [ds[i] for i in np.flatnonzero(ds.has_change)[:4]]
    batch = Collate((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))(items)
    net = SiameseChangeNet(NetworkConfig(decoder_channels=(8, 8, 8, 8, 8)))
    net.train()
    loss_fn = ChangeLoss()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        logits, ab, aa = net(batch["before"], batch["after"], return_aux=True)
        loss, _ = loss_fn(logits, batch["target"], (ab, aa),
                          (batch["buildings_before"], batch["buildings_after"]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])


def test_resumed_run_matches_an_uninterrupted_one(tmp_path: Path, scene_cache: Path) -> None:
    config = _config(tmp_path, scene_cache, epochs=3)
    whole = train(config, run_dir=tmp_path / "whole", log_mlflow=False, progress=False)
    assert whole.epochs_done == 3 and whole.global_step == 6

    first = train(config, run_dir=tmp_path / "split", max_epochs=1, log_mlflow=False,
                  progress=False)
    assert first.epochs_done == 1 and first.global_step == 2
    ckpt = load_checkpoint(tmp_path / "split" / "last.ckpt")
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 2
    rest = train(config, run_dir=tmp_path / "split", resume=True, log_mlflow=False,
                 progress=False)
    assert rest.epochs_done == 3 and rest.global_step == 6

    a = load_checkpoint(tmp_path / "whole" / "last.ckpt")["model"]
    b = load_checkpoint(tmp_path / "split" / "last.ckpt")["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-6), key

    again = train(config, run_dir=tmp_path / "split", resume=True, log_mlflow=False,
                  progress=False)
    assert again.global_step == 6  # nothing left to do: no extra steps
    assert again.nothing_to_do and again.epochs_done == 3
    assert not rest.nothing_to_do


def test_rerunning_a_finished_train_says_there_is_nothing_to_do(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from idou.cli import app
    from idou.training import loop

    finished = loop.TrainResult(tmp_path / "run", 3, 6, 2, {}, nothing_to_do=True)
    monkeypatch.setattr(loop, "train", lambda *a, **k: finished)
    toml = tmp_path / "c.toml"
    toml.write_text('name = "x"\n')
    monkeypatch.setattr("idou.training.config.load_config", lambda path: object())
    result = CliRunner().invoke(app, ["train", str(toml)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("nothing to do: ")
    assert "--no-resume" in result.output and "trained" not in result.output


def test_metrics_of_a_channel_without_true_objects_print_n_a() -> None:
    from idou.training.validation import metric_text

    record = {"val_new_object_recall": 1.0, "val_new_pixel_iou": 0.0, "val_new_n_true": 0.0,
              "val_new_object_precision": 0.0, "val_demolished_object_recall": 0.75,
              "val_demolished_n_true": 4.0, "new_object_recall": 1.0, "new_n_true": 0.0}
    assert metric_text(record, "val_new_object_recall") == "n/a (no objects)"
    assert metric_text(record, "val_new_pixel_iou") == "n/a (no objects)"
    assert metric_text(record, "new_object_recall") == "n/a (no objects)"
    assert metric_text(record, "val_new_object_precision") == "0.000"
    assert metric_text(record, "val_demolished_object_recall") == "0.750"


def test_run_is_tracked_in_mlflow(tmp_path: Path, scene_cache: Path) -> None:
    import mlflow

    toml = tmp_path / "tiny.toml"
    toml.write_text("# the config file is logged as an artifact\n")
    config = _config(tmp_path, scene_cache, epochs=1)
    config.val_data = config.train_data  # type: ignore[attr-defined]
    config.source = str(toml)  # type: ignore[attr-defined]
    result = train(config, log_mlflow=True, progress=False)  # type: ignore[arg-type]
    run = mlflow.get_run(result.mlflow_run_id)
    assert run.data.params["model.backbone"] == "mobilenet_v3_large"
    for key in ("train_loss", "val_new_object_recall", "val_demolished_pixel_iou"):
        assert key in run.data.metrics
    client = mlflow.MlflowClient()
    assert [f.path for f in client.list_artifacts(run.info.run_id, "config")] == [
        "config/tiny.toml"]
    epoch = [f.path for f in client.list_artifacts(run.info.run_id, "epochs/001")]
    assert "epochs/001/pr_curve.png" in epoch and "epochs/001/samples.png" in epoch
    store = Path(mlflow.get_tracking_uri().removeprefix("sqlite:///")).parent
    assert run.info.artifact_uri.startswith((store / "mlruns").as_uri())  # not ./mlruns


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this must never run",))


def test_checkpoints_that_need_code_to_load_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    torch.save({"model": {}, "network": {}, "x": _Payload()}, path)
    with pytest.raises(ModelContractError, match="not a plain-data idou checkpoint"):
        load_checkpoint(path)
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(ModelContractError, match="not an idou checkpoint"):
        load_checkpoint(path)


def test_training_and_the_registry_use_one_tracking_store() -> None:
    # one tracking_uri: training once built its own (an absolute path) beside the registry's
    from idou.inference import registry
    from idou.training import tracking

    assert tracking.tracking_uri is registry.tracking_uri
