"""ONNX Runtime sessions: all graph optimisations, the CUDA provider when asked and present."""

from __future__ import annotations

import os
import warnings
from typing import Any

import onnxruntime as ort

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def choose_providers(device: str) -> list[str]:
    """Execution providers for ``device`` ('cpu' or 'cuda'); warn and use the CPU without CUDA."""
    device = device.lower()
    if device not in ("cpu", "cuda"):
        from idou.errors import InvalidOption

        raise InvalidOption(f"unknown device '{device}'; pass --device cpu or --device cuda.")
    if device == "cuda":
        if CUDA in ort.get_available_providers():
            return [CUDA, CPU]
        warnings.warn("CUDA was asked for but ONNX Runtime has no CUDA provider here "
                      "(install onnxruntime-gpu); running on the CPU.", UserWarning, stacklevel=2)
    return [CPU]


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Options: every graph optimisation, ``threads`` intra-op threads (default: all cores)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = int(threads) if threads else available_cores()
    options.inter_op_num_threads = 1
    # the reader thread needs the cores between model calls: no busy-waiting workers
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def make_session(model: bytes | str | os.PathLike[str], *, device: str = "cpu",
                 threads: int | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` for a model (its bytes, or a path to an ONNX file).

    Args:
        model: the serialised model (preferred: the bytes whose hash was checked) or its path.
        device: 'cpu', or 'cuda' for the CUDA provider when present (the CPU otherwise).
        threads: intra-op threads; None for every available core.
    """
    source = model if isinstance(model, bytes) else os.fspath(model)
    return ort.InferenceSession(source, sess_options=session_options(threads),
                                providers=choose_providers(device))
