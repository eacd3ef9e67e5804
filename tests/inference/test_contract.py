"""The model contract round-trips through ONNX metadata and refuses what it cannot trust."""

from __future__ import annotations

import pytest

from idou.errors import InvalidOption, ModelContractError
from idou.inference.contract import METADATA_KEY, ModelContract


def test_contract_round_trips_through_metadata() -> None:
    contract = ModelContract(gsd_m=0.4, tile_size=256, tile_overlap=32, threshold_new=0.3,
                             recall_target=0.95, mlflow_run_id="abc")
    assert ModelContract.from_metadata(contract.to_metadata()) == contract


def test_missing_metadata_is_a_user_error_naming_the_model() -> None:
    with pytest.raises(ModelContractError, match="m.onnx carries no idou metadata"):
        ModelContract.from_metadata({}, source="m.onnx")


def test_malformed_metadata_is_a_user_error() -> None:
    with pytest.raises(ModelContractError):
        ModelContract.from_metadata({METADATA_KEY: "{not json"}, source="m.onnx")


def test_invalid_thresholds_are_refused() -> None:
    bad = ModelContract(threshold_new=1.5).to_metadata()
    with pytest.raises(ModelContractError, match="thresholds"):
        ModelContract.from_metadata(bad, source="m.onnx")


def test_declared_extra_outputs_round_trip_and_unknown_ones_are_refused() -> None:
    contract = ModelContract(extra_outputs=("presence",))
    back = ModelContract.from_metadata(contract.to_metadata())
    assert back.extra_outputs == ("presence",) and back == contract
    assert ModelContract.from_metadata(ModelContract().to_metadata()).extra_outputs == ()
    with pytest.raises(ModelContractError, match="unknown output.*heatmap"):
        ModelContract.from_metadata(ModelContract(extra_outputs=("heatmap",)).to_metadata(),
                                    source="m.onnx")


def test_declared_extra_outputs_round_trip_as_a_tuple() -> None:
    contract = ModelContract(extra_outputs=("presence",))
    read = ModelContract.from_metadata(contract.to_metadata())
    assert read.extra_outputs == ("presence",) and read == contract
    assert ModelContract.from_metadata(ModelContract().to_metadata()).extra_outputs == ()


def test_unknown_extra_outputs_are_refused() -> None:
    bad = ModelContract(extra_outputs=("height",)).to_metadata()
    with pytest.raises(ModelContractError, match="extra_outputs"):
        ModelContract.from_metadata(bad, source="m.onnx")


def test_the_footprint_threshold_is_the_tuned_one_else_the_demolished_channels() -> None:
    from idou.inference.footprint_evidence import footprint_threshold

    assert footprint_threshold(ModelContract(threshold_demolished=0.2)) == 0.2
    tuned = ModelContract.from_metadata(ModelContract(
        extra={"building_map": {"threshold_demolished": 0.11}}).to_metadata())
    assert footprint_threshold(tuned) == 0.11
    assert footprint_threshold(tuned, 0.3) == 0.3
    with pytest.raises(InvalidOption, match="--threshold-footprint"):
        footprint_threshold(tuned, 1.5)


def test_default_contract_is_the_shipped_models() -> None:
    # one source of contract defaults: they describe the model idou ships (0.4 m, 256 px tiles)
    from idou.inference.model_source import resolve_model

    shipped, default = resolve_model("default").contract, ModelContract()
    assert (default.gsd_m, default.tile_size, default.tile_overlap) == (
        shipped.gsd_m, shipped.tile_size, shipped.tile_overlap)
    assert (default.band_order, default.mean, default.std) == (
        shipped.band_order, shipped.mean, shipped.std)
