"""Provenance of a run: the ``run_info`` `idou detect` and `idou batch` record in the GeoPackage.

One builder for both, so the two commands describe the model, thresholds, grid and input files
in the same words; each caller appends only what is its own (tile counts, the batch's blocks).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from idou.version import __version__

FULL_HASH_LIMIT = 512 * 1024 * 1024


def file_fingerprint(path: Path) -> dict[str, object]:
    """sha256 of a file (of its size, first and last MiB when larger than 512 MiB)."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        if size <= FULL_HASH_LIMIT:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
            method = "sha256"
        else:
            digest.update(str(size).encode())
            digest.update(fh.read(1 << 20))
            fh.seek(size - (1 << 20))
            digest.update(fh.read(1 << 20))
            method = "sha256(size, first MiB, last MiB)"
    return {"path": str(path.resolve()), "bytes": size, "hash": digest.hexdigest(),
            "hash_method": method}


def run_info(model: Any, report: Any, before: Any, after: Any,
             thresholds: tuple[float, float] | None = None,
             hashes: bool = True, tiles: Any = None,
             warnings: list[str] | None = None) -> dict[str, Any]:
    """The provenance shared by `idou detect` and `idou batch`, in the order they record it.

    Args:
        model: the loaded model (``spec``, ``sha256``, ``card``, ``contract``).
        report: the preflight report (grid, misregistration).
        before: the before flight's raster source (``label``, ``files``).
        after: the after flight's raster source.
        thresholds: the thresholds used, when they may differ from the tuned ones (both are
            then recorded); ``None`` records the model's own.
        hashes: fingerprint each input file (else only its path).
        tiles: the engine's counts (``tiles_run``, ``tiles_skipped``), when one pass made the
            probabilities (`idou detect`); ``None`` records none.
        warnings: the run's warnings, recorded last; ``None`` records none.
    """
    contract, card = model.contract, model.card
    used = thresholds if thresholds is not None else contract.thresholds

    def files(source: Any) -> list[Any]:
        paths = [Path(f) for f in source.files]
        return [file_fingerprint(p) for p in paths] if hashes else [str(p) for p in paths]

    info: dict[str, Any] = {
        "idou_version": __version__,
        "run_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": model.spec, "model_name": contract.model_name,
        "model_version": contract.model_version, "model_sha256": model.sha256,
        "model_card": None if card is None else {"name": card.name, "version": card.version,
                                                 "metrics": card.metrics},
        "mlflow_run_id": contract.mlflow_run_id,
        "threshold_new": used[0],
        "threshold_demolished": used[1],
        "recall_target": contract.recall_target,
    }
    if thresholds is not None:
        info["thresholds_tuned"] = (contract.threshold_new, contract.threshold_demolished)
    info.update({
        "crs": report.grid.crs.to_string(), "gsd_m": report.grid.gsd,
        "grid": {"width": report.grid.width, "height": report.grid.height,
                 "transform": list(report.grid.transform)[:6]},
        "before": {"label": before.label, "files": files(before)},
        "after": {"label": after.label, "files": files(after)},
        "misregistration_px": report.misregistration_px,
    })
    if tiles is not None:
        info.update(tiles_run=tiles.tiles_run, tiles_skipped=tiles.tiles_skipped)
    if warnings is not None:
        info["warnings"] = warnings
    return info
