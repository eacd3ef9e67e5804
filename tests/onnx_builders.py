"""Tiny contract-conforming ONNX change models for tests, built with onnx.helper (no torch).

Every model takes ``before`` and ``after`` (N, C, H, W) float32 and gives ``probabilities``
(N, 2, H, W); the idou contract is written into its metadata, and ``save_with_card`` writes the
model card beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from idou.inference.contract import ModelContract
from idou.inference.model_card import ModelCard, card_paths, sha256_file, write_card

# the contract these builders were written for: a 0.2 m model on 512 px tiles (the shipped
# model's 0.4 m / 256 px are ModelContract's defaults)
FINE_CONTRACT = ModelContract(tile_size=512, tile_overlap=64, gsd_m=0.2)


def contract_model(nodes: Sequence[onnx.NodeProto], initializers: Sequence[onnx.TensorProto],
                   contract: ModelContract | None, *, channels: int | None = None,
                   spatial: int | None = None, batch: int | None = None,
                   name: str = "idou-test") -> onnx.ModelProto:
    """A model of ``nodes`` with idou's inputs and output, and ``contract`` in its metadata.

    ``channels``/``spatial``/``batch`` fix input dimensions (e.g. to break the contract);
    ``contract=None`` leaves the metadata out.
    """
    c = channels if channels is not None else len((contract or FINE_CONTRACT).band_order)
    hw: list[str | int | None] = [spatial, spatial] if spatial else ["H", "W"]
    n: str | int = batch or "N"
    inputs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, c, *hw])
              for k in ("before", "after")]
    output = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [n, 2, *hw])
    graph = helper.make_graph(list(nodes), name, inputs, [output],
                              initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if contract is not None:
        for key, value in contract.to_metadata().items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
    return model


def save_with_card(model: onnx.ModelProto, path: Path, contract: ModelContract | None = None,
                   **card: Any) -> Path:
    """Save ``model`` and a card with its sha256 beside it; ``card`` overrides card fields."""
    onnx.save(model, str(path))
    contract = contract or FINE_CONTRACT
    fields: dict[str, Any] = {"name": "idou-test", "version": contract.model_version,
                              "trained_on": "nothing: a constructed test model", **card}
    write_card(ModelCard(sha256=sha256_file(path), **fields), *card_paths(path))
    return path


def passthrough_model(path: Path, contract: ModelContract | None = None, *, scale: float = 1.0,
                      **card: Any) -> Path:
    """probabilities = ``scale`` x after bands (0, 1): the after flight *is* the probability
    raster (before is read, times zero, so both inputs are used). Saved with a card."""
    contract = contract or FINE_CONTRACT
    inits = [numpy_helper.from_array(np.array([0, 1], dtype=np.int64), "idx"),
             numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
             numpy_helper.from_array(np.array(scale, dtype=np.float32), "scale")]
    nodes = [helper.make_node("Gather", ["after", "idx"], ["pa"], axis=1),
             helper.make_node("Gather", ["before", "idx"], ["pb"], axis=1),
             helper.make_node("Mul", ["pb", "zero"], ["z"]),
             helper.make_node("Mul", ["pa", "scale"], ["ps"]),
             helper.make_node("Add", ["ps", "z"], ["probabilities"])]
    return save_with_card(contract_model(nodes, inits, contract), path, contract, **card)
