"""One writer per output: a lock file beside the output that records its owner (host, pid).

``.<output name>.idou.lock`` is created exclusively (``O_EXCL``) when a run starts and removed
when it ends. A second run on the same output is refused with one sentence naming the owner.
A lock left by a process that is gone (kill -9, power loss) on the same host is taken over;
a lock of another host (a shared drive) is never taken over, the user is told whose it is.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from idou.errors import OutputConflict
from idou.geo.files.leftovers import _alive

UNREADABLE_STALE_S = 60.0
"""A lock file without a readable owner (its writer died between create and write) is taken
over once it is this old."""


def lock_path(target: Path) -> Path:
    """The lock file of ``target``."""
    return target.with_name(f".{target.name}.idou.lock")


@contextlib.contextmanager
def output_lock(target: Path) -> Iterator[Path]:
    """Hold ``target``'s lock for the ``with`` block.

    Raises:
        UserInputError: another live run (this host, or any run of another host) holds it.
    """
    path = lock_path(Path(target))
    acquire(path, Path(target))
    try:
        yield path
    finally:
        release(path)


def _owner_text() -> str:
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                       "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def _read_owner(path: Path) -> dict[str, object] | None:
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
        return owner if isinstance(owner, dict) and "host" in owner and "pid" in owner \
            else None
    except (OSError, ValueError):
        return None


def _stale(path: Path, owner: dict[str, object] | None) -> bool:
    if owner is None:
        try:
            return time.time() - path.stat().st_mtime > UNREADABLE_STALE_S
        except OSError:
            return True
    try:
        pid = int(str(owner["pid"]))
    except ValueError:
        return False
    return owner["host"] == socket.gethostname() and pid != os.getpid() and not _alive(pid)


def acquire(path: Path, target: Path) -> None:
    """Create the lock file exclusively, taking over one left by a dead process."""
    for _ in range(5):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            owner = _read_owner(path)
            if not _stale(path, owner):
                who = (f"pid {owner['pid']} on {owner['host']}, started {owner.get('started')}"
                       if owner else "a run that is starting")
                raise OutputConflict(
                    f"another idou run ({who}) is writing {target}; wait for it to finish or "
                    f"choose another output path (if that run is gone, delete {path}).") from None
            _take_over(path, owner)
            continue
        except OSError as exc:
            raise OutputConflict(f"the output folder {path.parent} cannot be written "
                                 f"({exc.strerror}: no lock file {path.name} can be made there); "
                                 "choose another output folder.") from exc
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(_owner_text())
        return
    raise OutputConflict(f"could not take the lock {path} from a finished run; delete it and "
                         "run again.")


def _take_over(path: Path, owner: dict[str, object] | None) -> None:
    """Move a stale lock aside; put it back if it turned out to be a fresh one (a race)."""
    aside = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.stale")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    if _read_owner(aside) != owner:  # another run took it over and locked it meanwhile
        with contextlib.suppress(OSError):
            os.link(aside, path)
    aside.unlink(missing_ok=True)


def release(path: Path) -> None:
    """Remove the lock file if this process owns it."""
    owner = _read_owner(path)
    if owner is not None and owner.get("pid") == os.getpid() and \
            owner.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)
