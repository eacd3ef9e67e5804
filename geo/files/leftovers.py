"""Work folders beside an output, and the leftovers of runs killed outright.

A run keeps its temporary files (probability store, mosaic VRTs, the GeoPackage being written)
in a hidden folder ``.<output stem>.idou-*`` beside the output: the same file system, so the
finished GeoPackage is moved into place atomically. The folder records which process owns it.
A run killed outright (kill -9, power loss) cannot remove it; the next run on the same output
does, once the owning process is gone.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

OWNER_FILE = "owner.json"
UNOWNED_STALE_S = 24 * 3600.0
"""A work folder without a readable owner (killed before it was written) is left alone for
this long, in case it belongs to a run that is just starting."""


def make_work_folder(target: Path) -> Path:
    """A new hidden work folder beside ``target``, owned by this process."""
    folder = Path(tempfile.mkdtemp(prefix=f".{target.stem}.idou-", dir=target.parent))
    (folder / OWNER_FILE).write_text(json.dumps({"host": socket.gethostname(),
                                                 "pid": os.getpid()}), encoding="utf-8")
    return folder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _is_stale(folder: Path, now: float) -> bool:
    try:
        owner = json.loads((folder / OWNER_FILE).read_text(encoding="utf-8"))
        host, pid = str(owner["host"]), int(owner["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        try:
            return now - folder.stat().st_mtime > UNOWNED_STALE_S
        except OSError:
            return False
    return host == socket.gethostname() and pid != os.getpid() and not _alive(pid)


def remove_stale_work_folders(target: Path) -> list[Path]:
    """Remove the work folders of ``target`` whose process is gone; returns what was removed.

    Folders of live processes, and of other hosts (a shared drive), are kept.
    """
    removed = []
    now = time.time()
    pattern = f".{glob.escape(target.stem)}.idou-*"
    for folder in sorted(target.parent.glob(pattern)):
        if folder.is_dir() and not folder.is_symlink() and _is_stale(folder, now):
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                removed.append(folder)
    return removed
