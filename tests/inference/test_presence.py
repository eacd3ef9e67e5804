"""Building-presence outputs: declared ones are checked in the graph and blended by the engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from idou.errors import ModelContractError
from idou.inference.contract import ModelContract
from idou.inference.engine import predict_grid
from idou.inference.model_source import check_graph
from idou.inference.probability_store import PresenceStore, ProbabilityStore
from idou.inference.session import make_session

from ..onnx_builders import contract_model
from .conftest import make_pair


def presence_model(contract: ModelContract, *, with_output: bool = True) -> onnx.ModelProto:
    """probabilities = 0.5 everywhere; presence = the before and after flights' first band."""
    inits = [numpy_helper.from_array(np.array([0], dtype=np.int64), "first"),
             numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
             numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half")]
    nodes = [helper.make_node("Gather", ["before", "first"], ["b0"], axis=1),
             helper.make_node("Gather", ["after", "first"], ["a0"], axis=1),
             helper.make_node("Concat", ["b0", "a0"], ["both"], axis=1),
             helper.make_node("Mul", ["both", "zero"], ["z"]),
             helper.make_node("Add", ["z", "half"], ["probabilities"])]
    model = contract_model(nodes, inits, contract)
    if with_output:
        nodes.append(helper.make_node("Identity", ["both"], ["presence"]))
        model = contract_model(nodes, inits, contract)
        model.graph.output.append(helper.make_tensor_value_info(
            "presence", TensorProto.FLOAT, ["N", 2, "H", "W"]))
    return model


@pytest.fixture
def contract() -> ModelContract:
    # mean 0, std 1/255: the model sees pixel values 0..255 scaled to 0..1 unchanged
    return ModelContract(tile_size=64, tile_overlap=16, gsd_m=0.5, mean=(0.0,) * 3,
                         std=(1.0,) * 3, extra_outputs=("presence",))


def test_a_declared_output_missing_from_the_graph_is_refused(contract: ModelContract) -> None:
    with pytest.raises(ModelContractError, match="declares the output 'presence'"):
        check_graph(presence_model(contract, with_output=False), contract, "m.onnx")
    check_graph(presence_model(contract), contract, "m.onnx")


def test_the_engine_blends_declared_presence_into_its_own_store(
        tmp_path: Path, contract: ModelContract) -> None:
    pair = make_pair(150, 170, seed=3)
    session = make_session(presence_model(contract).SerializeToString(), threads=1)
    with ProbabilityStore(tmp_path / "p.u8", 150, 170) as probs, \
            PresenceStore(tmp_path / "presence.u8", 150, 170) as presence:
        predict_grid(pair, session, contract, [probs, presence], block_size=64)
        from rasterio.windows import Window

        everything = Window(0, 0, 170, 150)
        assert (np.abs(probs.read(everything).astype(int) - 128) <= 1).all()
        blended = presence.read(everything).astype(int)
    expected = np.stack([pair.before[0], pair.after[0]]).astype(int)
    assert np.abs(blended - expected).max() <= 1  # blending a pass-through gives it back
