"""Work folders of runs killed outright are removed by the next run, and only those."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from idou.geo.files.leftovers import OWNER_FILE, make_work_folder, remove_stale_work_folders


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _folder(parent: Path, name: str, owner: dict[str, object] | None, age_s: float = 0.0
            ) -> Path:
    folder = parent / name
    folder.mkdir()
    (folder / "changes.tmp.gpkg").write_bytes(b"half written")
    if owner is not None:
        (folder / OWNER_FILE).write_text(json.dumps(owner))
    if age_s:
        then = time.time() - age_s
        os.utime(folder, (then, then))
    return folder


def test_only_folders_of_gone_processes_on_this_host_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "changes.gpkg"
    host = socket.gethostname()
    dead = _folder(tmp_path, ".changes.idou-dead", {"host": host, "pid": _dead_pid()})
    live = _folder(tmp_path, ".changes.idou-live", {"host": host, "pid": os.getppid()})
    remote = _folder(tmp_path, ".changes.idou-remote", {"host": host + "-other", "pid": 1})
    fresh = _folder(tmp_path, ".changes.idou-fresh", None)
    old = _folder(tmp_path, ".changes.idou-old", None, age_s=2 * 24 * 3600)
    other_output = _folder(tmp_path, ".roads.idou-dead", {"host": host, "pid": _dead_pid()})
    mine = make_work_folder(target)

    removed = remove_stale_work_folders(target)

    assert sorted(removed) == sorted([dead, old])
    assert not dead.exists() and not old.exists()
    for kept in (live, remote, fresh, other_output, mine):
        assert kept.exists()
