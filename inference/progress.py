"""Progress as callbacks: library code says how far a stage has come, the CLI draws the bar.

Nothing under ``inference/`` draws a progress bar or imports ``rich.progress``; `idou detect`
and `idou batch` pass a :class:`Progress` (their rich bars) and tests pass a list's append.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Progress(Protocol):
    """Called as ``progress(stage, done, total)``: a stage started (``done`` 0) or went on.

    Stages: ``infer`` (input pixels), ``vectorize`` (blocks of the grid), ``blocks`` (a batch
    run's blocks; ``rate`` is then the run's input Mpx/s, once a block is done).
    """

    def __call__(self, stage: str, done: float, total: float, *,
                 rate: float | None = None) -> None:
        """Report that ``done`` of ``total`` units of ``stage`` are finished."""



LogFn = Callable[[str, str], None]
"""Called as ``log(level, message)`` with level 'note' or 'warning' (the CLI prints them)."""
