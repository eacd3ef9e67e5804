"""The mode a plain ``open()`` gives a new file, for outputs staged through ``mkstemp``.

``tempfile.mkstemp`` creates files readable only by their owner (0600). Renamed into place,
such a probability COG, tuned model or batch status file could not be opened by colleagues
sharing the output folder, so the writers give their staged files the usual mode first.
"""

from __future__ import annotations

import os
from pathlib import Path


def _process_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _process_umask()  # read once, at import: os.umask is process-wide


def usual_file_mode() -> int:
    """0o666 less the process's umask (0o644 under the common umask 022)."""
    return 0o666 & ~_UMASK


def give_usual_mode(path: str | Path) -> None:
    """Set ``path`` to :func:`usual_file_mode` (for a file made by ``mkstemp``)."""
    os.chmod(path, usual_file_mode())
