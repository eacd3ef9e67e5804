"""The user errors, re-exported from the shared kernel :mod:`idou.errors` for older imports."""

from __future__ import annotations

from idou.errors import *  # noqa: F403  (the kernel's __all__ is the list re-exported)
from idou.errors import __all__  # noqa: F401
