"""Model resolution refuses models that do not match their card or the contract."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest

from idou.errors import InputNotFound, ModelContractError
from idou.inference.contract import ModelContract
from idou.inference.model_card import card_paths, read_card, sha256_file
from idou.inference.model_source import resolve_model

from .conftest import build_change_model, save_with_card


def test_a_model_with_a_matching_card_loads(small_contract: ModelContract,
                                            model_factory: Callable[..., Path]) -> None:
    path = model_factory(small_contract)
    loaded = resolve_model(str(path))
    assert loaded.sha256 == sha256_file(path) == loaded.card.sha256  # type: ignore[union-attr]
    assert loaded.contract == small_contract
    assert card_paths(path)[1].read_text(encoding="utf-8").startswith("# Model card")


def test_hash_mismatch_with_the_card_is_refused(small_contract: ModelContract,
                                                model_factory: Callable[..., Path]) -> None:
    path = model_factory(small_contract)
    json_card = card_paths(path)[0]
    data = json.loads(json_card.read_text())
    data["sha256"] = "0" * 64
    json_card.write_text(json.dumps(data))
    with pytest.raises(ModelContractError, match="does not match its model card"):
        resolve_model(str(path))


def test_a_model_without_metadata_is_refused(tmp_path: Path,
                                             small_contract: ModelContract) -> None:
    model = build_change_model(small_contract)
    del model.metadata_props[:]
    path = tmp_path / "bare.onnx"
    onnx.save(model, str(path))
    with pytest.warns(UserWarning, match="no model card"), \
            pytest.raises(ModelContractError, match="no idou metadata"):
        resolve_model(str(path))


def test_wrong_input_channels_are_refused(tmp_path: Path, small_contract: ModelContract) -> None:
    path = save_with_card(build_change_model(small_contract, channels=4), tmp_path / "m.onnx",
                          small_contract)
    with pytest.raises(ModelContractError, match="4 channels but the metadata names 3 bands"):
        resolve_model(str(path))


def test_wrong_input_names_are_refused(tmp_path: Path, small_contract: ModelContract) -> None:
    model = build_change_model(small_contract)
    model.graph.input[0].name = "image"
    for node in model.graph.node:
        node.input[:] = ["image" if n == "before" else n for n in node.input]
    path = save_with_card(model, tmp_path / "m.onnx", small_contract)
    with pytest.raises(ModelContractError, match="an idou model takes 'before' and 'after'"):
        resolve_model(str(path))


def test_a_pickle_is_refused_without_being_unpickled(tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (exec, ("raise SystemExit('unpickled!')",))

    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps(Boom()))
    with pytest.warns(UserWarning), pytest.raises(ModelContractError, match="not an ONNX model"):
        resolve_model(str(path))


def test_missing_file_and_bad_card_are_user_errors(tmp_path: Path,
                                                   small_contract: ModelContract,
                                                   model_factory: Callable[..., Path]) -> None:
    with pytest.raises(InputNotFound):
        resolve_model(str(tmp_path / "nope.onnx"))
    path = model_factory(small_contract)
    card_paths(path)[0].write_text("{not json")
    with pytest.raises(ModelContractError):
        resolve_model(str(path))
    with pytest.raises(InputNotFound):
        read_card(tmp_path / "missing.card.json")
