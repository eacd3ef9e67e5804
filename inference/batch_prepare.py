"""Preparing a batch run: the model, both flights on one grid, parcels, buildings, blocks.

Shared by the run (:mod:`idou.inference.batch`) and ``idou batch --check``
(:mod:`idou.inference.batch_check`), so both refuse the same inputs with the same sentence.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idou.errors import OutputConflict
from idou.inference.batch_config import FlightConfig
from idou.inference.batch_report import LOG_NAME, STATUS_NAME, SUMMARY_NAME
from idou.inference.batch_worker import RunSpec
from idou.inference.block_mosaic import BLOCKS_DIR, MOSAIC_NAME, PRESENCE_NAME
from idou.inference.blocks import Block, plan_blocks
from idou.inference.journal import JOURNAL_NAME
from idou.inference.model_card import card_paths, sha256_file, write_card
from idou.inference.vector_inputs import read_vectors

log = logging.getLogger("idou.batch")

VRT_DIR = "vrt"
MODEL_DIR = "model"
GPKG_NAME = "review.gpkg"


def open_pair_report(before: str | list[str], after: str | list[str], before_crs: str | None,
                     after_crs: str | None, aoi: str | None, contract: Any, vrt_dir: Path,
                     estimate_misregistration: bool = True) -> Any:
    """Open both flights (sheets mosaicked through VRTs in ``vrt_dir``) and run preflight."""
    from idou.geo.raster.preflight import preflight
    from idou.geo.raster.sources import open_source

    b = open_source(before, crs=before_crs, workdir=vrt_dir)
    a = open_source(after, crs=after_crs, workdir=vrt_dir)
    return preflight(b, a, contract, aoi=aoi, estimate_misregistration=estimate_misregistration)


def stage_model(model: Any, out_dir: Path) -> Path:
    """Copy the checked model into ``OUT/model/`` (shared storage the workers read)."""
    target = out_dir / MODEL_DIR / f"{model.sha256[:16]}.onnx"
    if not target.is_file() or sha256_file(target) != model.sha256:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(model.data)
        os.replace(tmp, target)
    card = getattr(model, "card", None)
    if card is not None and not card_paths(target)[1].is_file():
        write_card(card, *card_paths(target))  # summary.html links it
    return target


def _resolve_model(name: str) -> Any:
    from idou.inference.model_source import resolve_model

    return resolve_model(name)


@dataclass
class PreparedFlight:
    """A flight ready to run: its config, preflight, model, parcels and buildings, blocks."""

    config: FlightConfig
    report: Any
    model: Any
    model_sha: str
    model_path: Path
    blocks: list[Block]
    spec: RunSpec
    parcels: Any = None
    buildings: Any = None


def prepare_flight(config: FlightConfig, out_dir: Path, vrt_dir: Path,
                   estimate_misregistration: bool = True) -> PreparedFlight:
    """Resolve the model, open and align the flights, plan the blocks."""
    _check_outputs_are_not_inputs(config)
    model = _resolve_model(config.model)
    contract = model.contract
    report = open_pair_report(
        config.before.source_spec, config.after.source_spec, config.before.crs,
        config.after.crs, str(config.aoi) if config.aoi else None, contract, vrt_dir,
        estimate_misregistration=estimate_misregistration)
    grid = report.grid
    # read by `idou detect`'s loaders before any block runs, so a wrong ``chiban_column`` or
    # ``encoding`` stops `--check` and the run alike, not the last step
    parcels, buildings = read_vectors(config.parcels, config.buildings, grid.crs, grid=grid,
                                      say=log_say, encoding=config.encoding,
                                      chiban_column=config.chiban_column)
    stride = contract.tile_size - contract.tile_overlap
    blocks = plan_blocks(grid.width, grid.height, config.block_size, halo=contract.tile_overlap,
                         stride=stride)
    model_sha = str(model.sha256)
    key = hashlib.sha256(
        f"{config.fingerprint()}|{model_sha}|{grid.width}x{grid.height}|{grid.transform}".encode()
    ).hexdigest()[:16]
    spec = RunSpec(key=key, report=report, blocks_dir=str(out_dir / BLOCKS_DIR),
                   model_path=str(model.path), model_sha256=model_sha, threads=config.threads,
                   device=config.device)
    return PreparedFlight(config=config, report=report, model=model, model_sha=model_sha,
                          model_path=Path(model.path), blocks=blocks, spec=spec,
                          parcels=parcels, buildings=buildings)


def log_say(level: str, message: str) -> None:
    """Warnings and notes about the parcel and building files, into the batch log."""
    (log.warning if level == "warning" else log.info)("%s", message)


def _check_outputs_are_not_inputs(config: FlightConfig) -> None:
    """No file or folder the batch writes in its output folder is one of its inputs."""
    from idou.geo.files.owned_outputs import same_file
    from idou.geo.vector.vector_files import split_layer

    out = config.output
    written = [out / name for name in (GPKG_NAME, Path(GPKG_NAME).with_suffix(".qgz").name,
                                       JOURNAL_NAME, STATUS_NAME, SUMMARY_NAME, LOG_NAME,
                                       MOSAIC_NAME, PRESENCE_NAME)]
    inputs = [*config.before.sheets, *config.after.sheets]
    inputs += [split_layer(p)[0] for p in (config.parcels, config.buildings, config.aoi) if p]
    if config.model != "default" and not config.model.startswith("models:/"):
        inputs.append(Path(config.model))
    for source in inputs:
        inside = any(Path(source).resolve().is_relative_to((out / d).resolve())
                     for d in (BLOCKS_DIR, VRT_DIR))
        if inside or any(same_file(target, source) for target in written):
            raise OutputConflict(
                f"{source} is an input of {config.source.name} but lies where the batch writes "
                f"its own files in {out}; idou never overwrites its inputs, so move it or "
                "choose another output folder.")
