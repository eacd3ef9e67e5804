"""What ``idou samples make`` does, kept out of the command line module."""

from __future__ import annotations

import os
from pathlib import Path

from idou.errors import OutputConflict
from idou.geo.synthetic.flight import make_flight_pair
from idou.geo.synthetic.writer import check_sample_targets, write_flight_pair


def check_out_dir(out_dir: Path) -> None:
    """Create the output folder, or refuse one that is a file or not writable, in one sentence."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputConflict(f"{out_dir} is a file, not a folder; pass a folder path as OUT_DIR.")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputConflict(f"cannot create {out_dir} ({exc.strerror}); pass an OUT_DIR you "
                             "can write to.") from exc
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise OutputConflict(f"{out_dir} is not writable; pass an OUT_DIR you can write to.")


def make_samples(out_dir: Path, seed: int, size: int, force: bool = False,
                 style: str | None = None) -> list[tuple[str, Path, str]]:
    """Generate and write a flight pair; return (name, path, what it holds) per file.

    Files of the same names are replaced only with ``force`` and only when idou wrote them.
    """
    check_sample_targets(out_dir, force)
    pair = make_flight_pair(seed, size, style=style)
    try:
        paths = write_flight_pair(pair, out_dir, force=force)
    except OSError as exc:
        raise OutputConflict(f"{out_dir} is not writable ({exc.strerror}); pass an OUT_DIR "
                             "you can write to.") from exc
    counts = pair.truth.groupby("change_type")["change_id"].nunique().to_dict()
    notes = {
        "flight_2024": f"{pair.before.shape[1]}x{pair.before.shape[0]} px RGB, EPSG:6677",
        "flight_2025": f"{pair.after.shape[1]}x{pair.after.shape[0]} px RGB, shifted extent",
        "parcels": f"{len(pair.parcels)} parcels",
        "buildings_2024": f"{len(pair.buildings_before)} buildings",
        "buildings_2025": f"{len(pair.buildings_after)} buildings",
        "truth": ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
    }
    return [(name, path, notes[name]) for name, path in paths.items()]
