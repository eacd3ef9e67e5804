"""Errors a user can cause and fix: the command line prints them as one sentence, exit 2.

This is the shared kernel: ``geo``, ``models``, ``inference`` and ``training`` all raise these,
and the command line catches :class:`UserInputError` (the base) to print the sentence. The
subclasses say what kind of problem it is, so code and tests can tell them apart by type
instead of by the words of the sentence.
"""

from __future__ import annotations


class UserInputError(Exception):
    """A problem with the user's input, told as one sentence that names the file and the fix.

    Example: ``UserInputError("flight_2025.tif has no CRS; pass --crs EPSG:6677.")``
    """


class InputNotFound(UserInputError):
    """A file, folder or pattern the user named does not exist or matches nothing."""


class UnreadableInput(UserInputError):
    """An input exists but cannot be read: corrupt, truncated, empty, wrong format or encoding."""


class UnusableCRS(UserInputError):
    """An input has no CRS, an unknown one, or one idou cannot measure areas in."""


class FlightsDoNotOverlap(UserInputError):
    """The two flights (or a flight and the AOI) share no area or no valid pixels."""


class ModelContractError(UserInputError):
    """A model, its metadata, its card or its checkpoint breaks the contract inference relies on."""


class OutputConflict(UserInputError):
    """The output cannot be written where asked: it exists, is an input, is held, or unwritable."""


class InvalidOption(UserInputError):
    """A command-line option or a configuration value is out of range or does not fit the others."""


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
