"""The city fine-tuning recipe: split, cut, config; then idou train and idou tune run on it."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
import rasterio
from shapely.geometry import box
from typer.testing import CliRunner

from idou.errors import InvalidOption, OutputConflict, UserInputError

torch = pytest.importorskip("torch")

from idou.training.city import split_bounds, truth_from_maps  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_held_back_strip_is_apart_from_the_training_part() -> None:
    train, hold = split_bounds((0.0, 0.0, 1000.0, 500.0), 0.3, "east", 10.0)
    assert hold == (705.0, 0.0, 1000.0, 500.0) and train == (0.0, 0.0, 695.0, 500.0)
    train, hold = split_bounds((0.0, 0.0, 1000.0, 500.0), 0.2, "south", 0.0)
    assert hold == (0.0, 0.0, 1000.0, 100.0) and train == (0.0, 100.0, 1000.0, 500.0)
    with pytest.raises(InvalidOption, match="--holdout 1.5"):
        split_bounds((0.0, 0.0, 1.0, 1.0), 1.5, "east", 0.0)
    with pytest.raises(InvalidOption, match="--side up"):
        split_bounds((0.0, 0.0, 1.0, 1.0), 0.3, "up", 0.0)


@pytest.mark.parametrize(("side", "train", "hold"), [
    ("east", (0.0, 0.0, 695.0, 500.0), (705.0, 0.0, 1000.0, 500.0)),
    ("west", (305.0, 0.0, 1000.0, 500.0), (0.0, 0.0, 295.0, 500.0)),
    ("north", (0.0, 0.0, 1000.0, 345.0), (0.0, 355.0, 1000.0, 500.0)),
    ("south", (0.0, 155.0, 1000.0, 500.0), (0.0, 0.0, 1000.0, 145.0)),
])
def test_each_side_holds_back_its_own_strip(side: str, train: tuple[float, ...],
                                            hold: tuple[float, ...]) -> None:
    assert split_bounds((0.0, 0.0, 1000.0, 500.0), 0.3, side, 10.0) == (train, hold)


def test_truth_from_two_maps() -> None:
    crs = "EPSG:6677"
    before = gpd.GeoDataFrame({"building_id": ["a", "b", "c"]},
                              geometry=[box(0, 0, 10, 10), box(20, 0, 30, 10),
                                        box(40, 0, 50, 10)], crs=crs)
    after = gpd.GeoDataFrame({"building_id": ["a", "c", "d"]},
                             geometry=[box(0, 0, 10, 10), box(40, 0, 56, 10),
                                       box(60, 0, 70, 10)], crs=crs)
    truth = truth_from_maps(before, after, (-5, -5, 100, 20))
    got = sorted(zip(truth.change_type, truth.channel, truth.area.round(1), strict=True))
    assert got == [("demolished", "demolished", 100.0), ("extension", "new", 60.0),
                   ("new", "new", 100.0)]
    # only what lies in the area counts, clipped to it
    assert list(truth_from_maps(before, after, (57, -5, 65, 20)).area.round(1)) == [50.0]


def _tiny_checkpoint(path: Path) -> Path:
    from idou.models.siamese import NetworkConfig, SiameseChangeNet
    from idou.training.checkpoints import CHECKPOINT_FORMAT
    from idou.training.config import config_from_dict

    net_config = NetworkConfig(decoder_channels=(8, 8, 8, 8, 8))
    config = config_from_dict({
        "model": {"decoder_channels": [8, 8, 8, 8, 8]},
        "train_data": [{"kind": "synthetic", "seeds": [1]}],
        "contract": {"gsd_m": 0.4, "tile_size": 64, "tile_overlap": 8,
                     "model_name": "tiny-base"}})
    torch.manual_seed(0)
    net = SiameseChangeNet(net_config)
    torch.save({"format": CHECKPOINT_FORMAT, "network": net_config.to_dict(),
                "model": net.state_dict(), "epoch": 1, "metrics": {},
                "config": config.to_dict()}, path)
    return path


def test_recipe_end_to_end_on_a_tiny_generated_flight(tmp_path: Path) -> None:
    from idou.cli import app
    from idou.geo.synthetic import make_flight_pair, write_flight_pair

    city = tmp_path / "city"
    write_flight_pair(make_flight_pair(seed=21, size=640, style="autumn"), city)
    ckpt = _tiny_checkpoint(tmp_path / "base.ckpt")
    out = tmp_path / "finetune"
    runner = CliRunner()
    prepared = runner.invoke(app, [
        "finetune", "prepare", str(out), "--before", str(city / "flight_2025.tif"),
        "--before-map", str(city / "buildings_2025.gpkg"), "--checkpoint", str(ckpt),
        "--past-before", str(city / "flight_2024.tif"),
        "--past-before-map", str(city / "buildings_2024.gpkg"), "--holdout", "0.35",
        "--epochs", "1", "--chips-per-epoch", "16", "--threads", "1"])
    assert prepared.exit_code == 0, prepared.output
    assert "next: idou train" in prepared.output

    # the held-back strip is a validation scene, and no training raster reaches into it
    split = json.loads((out / "split.json").read_text())
    hold_left = split["holdout_bounds"][0]
    for name in ("before.tif", "past_before.tif"):
        with rasterio.open(out / "train" / name) as src:
            assert src.bounds.right < hold_left
    with rasterio.open(out / "holdout" / "after.tif") as src:
        assert src.bounds.left >= hold_left and src.res == (0.4, 0.4)
    truth = gpd.read_file(out / "holdout" / "truth.gpkg")
    assert set(truth.channel) <= {"new", "demolished"} and len(truth) > 0
    assert truth.total_bounds[0] >= hold_left - 1e-6
    assert len(list((out / "train" / "tiles" / "images").glob("0/*/*.png"))) == split["tiles"]

    config = (out / "city-finetune.toml").read_text()
    assert 'kind = "single_date"' in config and 'kind = "footprints"' in config
    assert str(ckpt.resolve()) in config and "[[val_data]]" not in config

    trained = runner.invoke(app, ["train", str(out / "city-finetune.toml"), "--no-progress"])
    assert trained.exit_code == 0, trained.output
    model = out / "run" / "model.onnx"
    assert model.is_file() and "mlflow run:" in trained.output
    ckpt_after = torch.load(out / "run" / "last.ckpt", weights_only=True)
    base = torch.load(ckpt, weights_only=True)["model"]
    assert any(not torch.equal(base[k], v) for k, v in ckpt_after["model"].items()
               if k in base and v.is_floating_point())   # started from the base, then moved

    tuned = runner.invoke(app, ["tune", str(model), str(out / "holdout"), "--recall", "0.5",
                                "-o", str(tmp_path / "city.onnx")])
    assert tuned.exit_code == 0, tuned.output
    assert (tmp_path / "city.onnx").is_file()

    # before and after on the held-back strip, compared at equal recall
    exported = runner.invoke(app, ["export", str(ckpt), "-o", str(tmp_path / "start.onnx")])
    assert exported.exit_code == 0, exported.output
    start = runner.invoke(app, ["tune", str(tmp_path / "start.onnx"), str(out / "holdout"),
                                "--recall", "0.5", "-o", str(tmp_path / "start.tuned.onnx")])
    assert start.exit_code == 0, start.output
    compared = runner.invoke(app, ["finetune", "compare", str(tmp_path / "start.tuned.tune.json"),
                                   str(tmp_path / "city.tune.json"), "--recall", "0.5"])
    assert compared.exit_code == 0, compared.output
    assert "start.tuned" in compared.output and "demolished" in compared.output


def test_precision_at_equal_recall_from_a_tune_report(tmp_path: Path) -> None:
    from idou.training.city import precision_at_recall, read_tune_report

    curve = [{"threshold": 0.1, "recall": 0.95, "precision": 0.2},
             {"threshold": 0.3, "recall": 0.9, "precision": 0.5},
             {"threshold": 0.5, "recall": 0.7, "precision": 0.9}]
    report = {"channels": {"new": {"curve": curve}, "demolished": {"curve": curve[:1]}}}
    assert precision_at_recall(report, "new", 0.9)["threshold"] == 0.3
    assert precision_at_recall(report, "new", 0.6)["precision"] == 0.9
    assert precision_at_recall(report, "new", 0.99) is None
    path = tmp_path / "m.tune.json"
    path.write_text(json.dumps(report))
    assert read_tune_report(path) == report
    path.write_text("{}")
    with pytest.raises(UserInputError, match="not a .tune.json"):
        read_tune_report(path)


def test_prepare_refuses_a_used_folder_and_half_a_past_pair(tmp_path: Path) -> None:
    from idou.training.city import prepare_city

    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("x")
    with pytest.raises(OutputConflict):
        prepare_city(used, before=tmp_path / "a.tif", before_map=tmp_path / "a.gpkg",
                     checkpoint=tmp_path / "c.ckpt")
    with pytest.raises(InvalidOption, match="go together"):
        prepare_city(tmp_path / "new", before=tmp_path / "a.tif", before_map=tmp_path / "a.gpkg",
                     checkpoint=tmp_path / "c.ckpt", past_before=tmp_path / "b.tif")
    assert not (tmp_path / "new").exists()
