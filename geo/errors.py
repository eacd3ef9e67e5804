"""The user errors, re-exported from the shared kernel :mod:`idou.errors` for older imports."""

from __future__ import annotations

from idou.errors import (
    FlightsDoNotOverlap,
    InputNotFound,
    InvalidOption,
    ModelContractError,
    OutputConflict,
    UnreadableInput,
    UnusableCRS,
    UserInputError,
)

__all__ = [
    "FlightsDoNotOverlap",
    "InputNotFound",
    "InvalidOption",
    "ModelContractError",
    "OutputConflict",
    "UnreadableInput",
    "UnusableCRS",
    "UserInputError",
]
