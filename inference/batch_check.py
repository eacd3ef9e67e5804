"""``idou batch --check``: validate a flight without running a block or writing anything."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from idou.errors import OutputConflict
from idou.geo.files.network import allow_network_sources
from idou.inference.batch_config import FlightConfig
from idou.inference.batch_prepare import VRT_DIR, prepare_flight
from idou.inference.blocks import snap_block_size
from idou.inference.journal import JOURNAL_NAME, Journal


@dataclass
class CheckReport:
    """What `idou batch --check` found (everything passed when it returns)."""

    grid_width: int
    grid_height: int
    gsd_m: float
    km2: float
    blocks: int
    block_size: int
    sheets_before: int
    sheets_after: int
    model: str
    model_sha256: str
    resumable_blocks_done: int
    notes: list[str] = field(default_factory=list)
    requested_block_size: int | None = None  # FLIGHT.toml's block_size, before snapping
    stride: int | None = None  # the model's tile size minus its overlap

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        out = [
            f"before: {self.sheets_before} sheet(s); after: {self.sheets_after} sheet(s) — "
            "all open",
            f"grid: {self.grid_width} x {self.grid_height} px at {self.gsd_m:g} m "
            f"= {self.km2:.3f} km²",
            f"blocks: {self.blocks} of {self.block_size} px",
            f"model: {self.model} (sha256 {self.model_sha256[:16]}…)",
        ]
        if self.requested_block_size not in (None, self.block_size):
            out.insert(3, f"note: block_size = {self.requested_block_size} became "
                          f"{self.block_size} px, the nearest multiple of the model's tile "
                          f"stride ({self.stride} px: tile size minus overlap), so blocks "
                          "share the tile lattice")
        if self.resumable_blocks_done:
            out.append(f"output folder holds {self.resumable_blocks_done} done block(s); "
                       "a run resumes there")
        out.extend(self.notes)
        return out


def check_flight(config: FlightConfig) -> CheckReport:
    """Validate a flight without running any block and without writing to its output folder.

    Opens every sheet of both dates (mosaics go to a temporary folder), checks CRS, overlap and
    band layout through preflight, loads the model (hash against its card, metadata), reads the
    parcel, building and AOI files with the run's own loaders, and checks a journal already in
    the output folder was made by the same inputs.

    Raises:
        UserInputError: the first problem found, as one sentence.
    """
    with allow_network_sources(config.allow_network):
        return _check_flight(config)


def _check_flight(config: FlightConfig) -> CheckReport:
    with tempfile.TemporaryDirectory(prefix="idou-check-") as tmp:
        prepared = prepare_flight(config, Path(tmp), Path(tmp) / VRT_DIR,
                                  estimate_misregistration=False)
    _check_output_writable(config.output)
    grid = prepared.report.grid
    done = 0
    journal_path = config.output / JOURNAL_NAME
    notes: list[str] = []
    for w in getattr(prepared.report, "warnings", []) or []:
        notes.append(f"preflight: {w}")
    if journal_path.is_file():
        with Journal(journal_path) as journal:
            known = journal.meta().get("fingerprint")
            if known is not None and known != prepared.spec.key:
                raise OutputConflict(
                    f"{config.output} holds a run with other inputs, model or block size; "
                    "choose a new output folder or delete that one.")
            done = journal.counts()["done"]
    pixel_area = abs(grid.transform.a * grid.transform.e - grid.transform.b * grid.transform.d)
    card = getattr(prepared.model, "card", None)
    name = getattr(card, "name", None) or prepared.model.contract.model_name
    version = prepared.model.contract.model_version
    stride = prepared.model.contract.tile_size - prepared.model.contract.tile_overlap
    return CheckReport(
        grid_width=grid.width, grid_height=grid.height, gsd_m=grid.gsd,
        km2=grid.width * grid.height * pixel_area / 1e6, blocks=len(prepared.blocks),
        block_size=snap_block_size(config.block_size, stride),
        sheets_before=len(config.before.sheets), sheets_after=len(config.after.sheets),
        model=f"{name} {version}", model_sha256=prepared.model_sha,
        resumable_blocks_done=done, notes=notes, requested_block_size=config.block_size,
        stride=stride)


def _check_output_writable(out: Path) -> None:
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise OutputConflict(f"output folder {out} cannot be written here; choose another one.")
