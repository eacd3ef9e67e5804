"""The batch journal: one SQLite row per block, in the output folder, so a run can resume.

States: ``pending`` → ``running`` → ``done`` or ``failed``. A block is marked ``done`` only
after its probability file is in place (written atomically), so a crash at any point leaves the
journal saying less than the disk holds, never more. The database runs in WAL mode with a busy
timeout, so a monitor (or a second process) may read it while a run writes.

SQLite's locking needs a local file system: the run's driver process writes the journal, the
workers (which may be other machines on shared storage) only write block files.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from idou.errors import OutputConflict, UnreadableInput
from idou.inference.blocks import Block

JOURNAL_NAME = "journal.sqlite"
STATES = ("pending", "running", "done", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    id TEXT PRIMARY KEY,
    row INTEGER NOT NULL, col INTEGER NOT NULL,
    row_off INTEGER NOT NULL, col_off INTEGER NOT NULL,
    height INTEGER NOT NULL, width INTEGER NOT NULL, halo INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    worker TEXT, started_at REAL, finished_at REAL, seconds REAL,
    setup_seconds REAL, read_seconds REAL, model_seconds REAL, write_seconds REAL,
    tiles_run INTEGER, tiles_skipped INTEGER,
    error TEXT
);
CREATE INDEX IF NOT EXISTS blocks_state ON blocks(state);
"""


@dataclass(frozen=True)
class BlockRecord:
    """A journal row."""

    block: Block
    state: str
    attempts: int
    worker: str | None
    seconds: float | None
    error: str | None


class Journal:
    """The SQLite journal of one output folder.

    Args:
        path: the database file (usually ``OUT/journal.sqlite``).
        timeout: seconds to wait for another process's lock.
    """

    def __init__(self, path: str | Path, timeout: float = 60.0) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            damage = [row[0] for row in self._db.execute("PRAGMA quick_check").fetchall()]
            if damage != ["ok"]:
                raise sqlite3.DatabaseError("; ".join(map(str, damage[:2])))
            self._db.executescript(_SCHEMA)
        except sqlite3.OperationalError:  # locked or busy: not damage
            self._db.close()
            raise
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise UnreadableInput(
                f"the journal {self.path} is damaged ({exc}); move it aside or delete it to "
                "start this output folder afresh (its blocks are then computed again).") from exc

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- planning ------------------------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        """The run's recorded settings (fingerprint, grid, model, ...)."""
        return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def initialise(self, blocks: Iterable[Block], fingerprint: str,
                   meta: dict[str, str] | None = None) -> bool:
        """Record the plan of a new run, or check that a resumed run has the same plan.

        Args:
            blocks: the run's blocks.
            fingerprint: what decides the block results; a journal with another one refuses.
            meta: further settings to record (grid, model sha256, ...).

        Returns:
            True when the journal was new, False when an earlier run's journal was found.

        Raises:
            UserInputError: the folder holds a run with other inputs, model or block size.
        """
        blocks = list(blocks)
        with self._write():
            known = self._db.execute(
                "SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()
            if known is not None:
                if known[0] != fingerprint:
                    raise OutputConflict(
                        f"{self.path.parent} holds a run with other inputs, model or block size; "
                        "choose a new output folder or delete that one."
                    )
                count = self._db.execute("SELECT COUNT(*) FROM blocks").fetchone()[0]
                if count != len(blocks):
                    raise OutputConflict(
                        f"{self.path} plans {count} blocks but this run plans {len(blocks)}; "
                        "choose a new output folder or delete that one."
                    )
                return False
            entries = {"fingerprint": fingerprint, "created_at": f"{time.time():.3f}",
                       **(meta or {})}
            self._db.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", entries.items())
            self._db.executemany(
                "INSERT INTO blocks(id, row, col, row_off, col_off, height, width, halo) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(b.id, b.row, b.col, b.row_off, b.col_off, b.height, b.width, b.halo)
                 for b in blocks],
            )
            return True

    def set_meta(self, key: str, value: str) -> None:
        """Record or replace one setting."""
        with self._write():
            self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                             (key, value))

    def delete_meta(self, key: str) -> None:
        """Forget one setting (e.g. ``finished_at`` when blocks must be computed again)."""
        with self._write():
            self._db.execute("DELETE FROM meta WHERE key = ?", (key,))

    def reset_interrupted(self) -> int:
        """Blocks left ``running`` by a run that died go back to ``pending``; returns how many."""
        with self._write():
            cur = self._db.execute(
                "UPDATE blocks SET state = 'pending', worker = NULL WHERE state = 'running'")
            return cur.rowcount

    # -- state changes -------------------------------------------------------------------------

    def mark_running(self, block_id: str, worker: str | None = None) -> None:
        """A block was handed to a worker: one more attempt."""
        with self._write():
            self._db.execute(
                "UPDATE blocks SET state = 'running', attempts = attempts + 1, worker = ?, "
                "started_at = ?, error = NULL WHERE id = ?",
                (worker, time.time(), block_id))

    def mark_done(self, block_id: str, seconds: float, worker: str | None = None,
                  timings: dict[str, float] | None = None) -> None:
        """The block's file is in place.

        Args:
            block_id: the block.
            seconds: wall time of the block on its worker.
            worker: the worker's name.
            timings: optional ``setup``, ``read``, ``model``, ``write`` seconds and
                ``tiles_run``, ``tiles_skipped`` counts.
        """
        t = timings or {}
        with self._write():
            self._db.execute(
                "UPDATE blocks SET state = 'done', finished_at = ?, seconds = ?, "
                "worker = COALESCE(?, worker), setup_seconds = ?, read_seconds = ?, "
                "model_seconds = ?, write_seconds = ?, tiles_run = ?, tiles_skipped = ?, "
                "error = NULL WHERE id = ?",
                (time.time(), seconds, worker, t.get("setup"), t.get("read"), t.get("model"),
                 t.get("write"), t.get("tiles_run"), t.get("tiles_skipped"), block_id))

    def mark_failed(self, block_id: str, error: str, worker: str | None = None,
                    seconds: float | None = None) -> None:
        """The block raised; ``error`` is one line for the operator."""
        with self._write():
            self._db.execute(
                "UPDATE blocks SET state = 'failed', finished_at = ?, seconds = ?, "
                "worker = COALESCE(?, worker), error = ? WHERE id = ?",
                (time.time(), seconds, worker, error[:2000], block_id))

    def mark_pending(self, block_ids: Iterable[str]) -> None:
        """Send blocks back to the queue (their file went missing, or a retry)."""
        with self._write():
            self._db.executemany("UPDATE blocks SET state = 'pending' WHERE id = ?",
                                 [(i,) for i in block_ids])

    # -- queries -------------------------------------------------------------------------------

    def records(self, states: Iterable[str] | None = None) -> list[BlockRecord]:
        """Rows in plan order, optionally only those in ``states``."""
        sql = ("SELECT row, col, row_off, col_off, height, width, halo, state, attempts, worker, "
               "seconds, error FROM blocks")
        args: tuple[str, ...] = ()
        if states is not None:
            wanted = tuple(states)
            sql += f" WHERE state IN ({', '.join('?' * len(wanted))})"
            args = wanted
        sql += " ORDER BY row, col"
        out = []
        for r in self._db.execute(sql, args).fetchall():
            block = Block(row=r[0], col=r[1], row_off=r[2], col_off=r[3], height=r[4],
                          width=r[5], halo=r[6])
            out.append(BlockRecord(block=block, state=r[7], attempts=r[8], worker=r[9],
                                   seconds=r[10], error=r[11]))
        return out

    def counts(self) -> dict[str, int]:
        """Blocks per state (every state present, zero when none) and ``total``."""
        counts = dict.fromkeys(STATES, 0)
        for state, n in self._db.execute("SELECT state, COUNT(*) FROM blocks GROUP BY state"):
            counts[state] = n
        counts["total"] = sum(counts[s] for s in STATES)
        return counts

    def done_seconds(self) -> tuple[int, float]:
        """Pixels and summed worker seconds of the done blocks (for throughput estimates)."""
        px, secs = self._db.execute(
            "SELECT COALESCE(SUM(height * width), 0), COALESCE(SUM(seconds), 0) FROM blocks "
            "WHERE state = 'done'").fetchone()
        return int(px), float(secs)

    def _write(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error): one writer at a time."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
