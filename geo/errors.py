"""Errors a user can cause and fix: the command line prints them as one sentence, exit 2."""

from __future__ import annotations


class UserInputError(Exception):
    """A problem with the user's input, told as one sentence that names the file and the fix.

    Example: ``UserInputError("flight_2025.tif has no CRS; pass --crs EPSG:6677.")``
    """
