"""Batch throughput with 1 and 2 workers on a generated flight of many sheets, and a projection.

Generates one synthetic flight pair (``idou.geo.synthetic``), repeats its overlap ``--repeat``
times each way and cuts both dates into ``--sheet`` px sheets (2024 as TIFF + .tfw with the CRS
given in FLIGHT.toml, 2025 as GeoTIFF), then runs ``idou batch`` on it once per worker setting
(a fresh output folder each time) and reports:

- blocks Mpx/s (block computation only) and end-to-end Mpx/s (with mosaic, polygons, parcel
  join and GeoPackage), per worker setting;
- the projection to a Maebashi-size flight (311.6 km² at 0.2 m, 7.79 Gpx per date) on one
  machine like this one and on N such machines (blocks scale out; the final stage runs once).

Usage::

    .venv/bin/python benchmarks/batch_scale.py --size 2048 --repeat 2 --sheet 1000 \\
        --model default --json out/batch_scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

MAEBASHI_KM2 = 311.6
MAEBASHI_GSD = 0.2
MAEBASHI_PX = MAEBASHI_KM2 * 1e6 / (MAEBASHI_GSD * MAEBASHI_GSD)


def _overlap(pair: Any, size: int) -> tuple[Any, Any, tuple[float, float]]:
    """Both dates on the after lattice, cut to the two flights' overlap; and its origin."""
    import numpy as np

    bt, at = pair.before_transform, pair.after_transform
    dc = round((at.c - bt.c) / bt.a)
    dr = round((at.f - bt.f) / bt.e)
    r0, c0 = max(0, dr), max(0, dc)
    r1, c1 = min(size, size + dr), min(size, size + dc)
    before = pair.before[r0:r1, c0:c1]
    after = pair.after[r0 - dr:r1 - dr, c0 - dc:c1 - dc]
    valid = pair.after_valid[r0 - dr:r1 - dr, c0 - dc:c1 - dc]
    before = np.where(valid[..., None], before, 0).astype(np.uint8)
    return before, after, bt @ (c0, r0)


def _write_sheets(folder: Path, data: Any, crs: str | None, transform: Any, sheet: int) -> int:
    """Cut ``data`` into ``sheet`` px TIFFs (a .tfw beside each when ``crs`` is None)."""
    import numpy as np
    import rasterio
    from affine import Affine
    from rasterio.errors import NotGeoreferencedWarning

    folder.mkdir(parents=True)
    sheets = 0
    for r in range(0, data.shape[0], sheet):
        for c in range(0, data.shape[1], sheet):
            part = np.moveaxis(data[r:r + sheet, c:c + sheet], -1, 0)
            t = transform @ Affine.translation(c, r)
            path = folder / f"{r // sheet:03d}{c // sheet:03d}.tif"
            profile = {"driver": "GTiff", "dtype": "uint8", "count": 3,
                       "height": part.shape[1], "width": part.shape[2], "tiled": True,
                       "compress": "deflate", "nodata": 0}
            if crs:
                profile.update(crs=crs, transform=t)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(path, "w", **profile) as dst:
                    dst.write(part)
            if crs is None:
                path.with_suffix(".tfw").write_text("\n".join(str(v) for v in (
                    t.a, 0.0, 0.0, t.e, t.c + t.a / 2, t.f + t.e / 2)) + "\n")
            sheets += 1
    return sheets


def _tiled(frame: Any, repeat: int, w: int, h: int, gsd: float) -> Any:
    """``frame`` repeated ``repeat`` x ``repeat`` times, as the sheets repeat the scene."""
    import geopandas as gpd
    import pandas as pd
    from shapely import affinity

    parts = []
    for i in range(repeat):
        for j in range(repeat):
            moved = frame.copy()
            moved["geometry"] = moved.geometry.apply(
                lambda g, i=i, j=j: affinity.translate(g, j * w * gsd, -i * h * gsd))
            parts.append(moved)
    return gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs=frame.crs)


def make_flight(root: Path, size: int, repeat: int, sheet: int, seed: int) -> dict[str, Any]:
    """Write sheets for both dates, parcels and buildings; return what was made."""
    import numpy as np
    from affine import Affine

    from idou.geo.synthetic.flight import make_flight_pair

    pair = make_flight_pair(seed, size=size)
    before, after, origin = _overlap(pair, size)
    h, w = before.shape[:2]
    big_b = np.tile(before, (repeat, repeat, 1))
    big_a = np.tile(after, (repeat, repeat, 1))
    gsd = pair.before_transform.a
    transform = Affine(gsd, 0, origin[0], 0, -gsd, origin[1])
    sheets = 0
    for name, data, crs in (("2024", big_b, None), ("2025", big_a, pair.crs)):
        sheets += _write_sheets(root / f"sheets_{name}", data, crs, transform, sheet)
    _tiled(pair.parcels, repeat, w, h, gsd).to_file(root / "parcels.gpkg", layer="parcels",
                                                    driver="GPKG")
    _tiled(pair.buildings_before, repeat, w, h, gsd).to_file(
        root / "buildings.gpkg", layer="buildings", driver="GPKG")
    return {"width": w * repeat, "height": h * repeat, "sheets_per_date": sheets // 2,
            "sheet_px": sheet, "gsd_m": gsd, "crs": pair.crs}


def write_toml(root: Path, out: Path, model: str, block_size: int, workers: int,
               threads: int, crs: str) -> Path:
    path = root / f"{out.name}.toml"
    path.write_text(
        f'output = "{out}"\nmodel = "{model}"\nparcels = "parcels.gpkg"\n'
        f'buildings = "buildings.gpkg"\nblock_size = {block_size}\nworkers = {workers}\n'
        f'threads = {threads}\n[before]\npath = "sheets_2024"\ncrs = "{crs}"\n'
        '[after]\npath = "sheets_2025"\n', encoding="utf-8")
    return path


def run_once(toml: Path) -> dict[str, Any]:
    """One `idou batch` run in this process, timed in three phases.

    setup: model, sheets, preflight, plan, cluster start; blocks: from the first block handed
    out to the last one done (the journal's timestamps); final: mosaic, polygons, parcel join,
    GeoPackage. Blocks Mpx/s is the part that scales with workers and machines.
    """
    import sqlite3

    from idou.inference.batch import run_batch
    from idou.inference.batch_config import load_flight_config

    config = load_flight_config(toml)
    t0 = time.time()
    result = run_batch(config)
    t1 = time.time()
    if result.exit_code != 0:
        raise SystemExit(f"batch run failed with exit code {result.exit_code}")
    con = sqlite3.connect(config.output / "journal.sqlite")
    first, last, busy = con.execute(
        "SELECT MIN(started_at), MAX(finished_at), SUM(seconds) FROM blocks").fetchone()
    con.close()
    px = result.status["pixels"]["input_total"]  # at the flight's resolution, as detect counts
    blocks_s = last - first
    return {"seconds_total": round(t1 - t0, 2), "seconds_setup": round(first - t0, 2),
            "seconds_blocks": round(blocks_s, 2), "seconds_final_stage": round(t1 - last, 2),
            "worker_busy_s": round(busy, 2), "pixels": px, "blocks": result.blocks_total,
            "grid": [result.status["grid"]["width"], result.status["grid"]["height"]],
            "mpx_s_blocks": round(px / blocks_s / 1e6, 3),
            "mpx_s_end_to_end": round(px / (t1 - t0) / 1e6, 3)}


def tile_overhead(width: int, height: int, block_size: int, tile: int, overlap: int) -> float:
    """Tiles computed block by block over tiles of one whole-grid pass (>= 1: the halo cost)."""
    from idou.inference.blocks import plan_blocks
    from idou.inference.tiling import TilePlan

    plan = TilePlan.for_grid(height, width, tile, overlap)
    total = 0
    for block in plan_blocks(width, height, block_size, halo=overlap, stride=plan.stride):
        (i0, i1), (j0, j1) = plan.index_ranges(block.window)
        total += (i1 - i0) * (j1 - j0)
    return total / len(plan)


def project(runs: dict[str, dict[str, Any]], machines: list[int], overhead_run: float,
            overhead_target: float) -> dict[str, Any]:
    """Hours for a Maebashi-size flight: blocks split over N machines, final stage once.

    The measured block rate is corrected from this flight's block halo cost to that of the
    production block size on a Maebashi-size grid (the model's cost is per tile).
    """
    best = max(runs.values(), key=lambda r: r["mpx_s_blocks"])
    block_rate = best["mpx_s_blocks"] * 1e6 * overhead_run / overhead_target
    final_rate = best["pixels"] / max(best["seconds_final_stage"], 1e-3)
    out = {}
    for n in machines:
        seconds = MAEBASHI_PX / (block_rate * n) + MAEBASHI_PX / final_rate
        out[str(n)] = round(seconds / 3600, 2)
    return {"pixels_per_date": MAEBASHI_PX, "best_setting": best["setting"],
            "tile_overhead_measured_run": round(overhead_run, 3),
            "tile_overhead_production_blocks": round(overhead_target, 3),
            "block_mpx_s_per_machine": round(block_rate / 1e6, 3),
            "final_stage_mpx_s": round(final_rate / 1e6, 3), "hours_by_machines": out}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="generated pair side (px)")
    parser.add_argument("--repeat", type=int, default=2, help="repeat the scene N x N")
    parser.add_argument("--sheet", type=int, default=1000, help="sheet side (px)")
    parser.add_argument("--block-size", type=int, default=2048, help="blocks of this run")
    parser.add_argument("--production-block-size", type=int, default=4096,
                        help="block size the Maebashi projection assumes")
    parser.add_argument("--model", default="default", help="default, a path, models:/NAME@ALIAS")
    parser.add_argument("--workers", default="1,2", help="worker counts to measure")
    parser.add_argument("--machines", default="1,2,4,8,16")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, default=None, help="keep the flight in this folder")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args(argv)


def _run_settings(args: argparse.Namespace, root: Path, model: str, crs: str, cores: int
                  ) -> dict[str, dict[str, Any]]:
    """One ``idou batch`` run per ``--workers`` setting, each into a fresh output folder."""
    runs: dict[str, dict[str, Any]] = {}
    for workers in (int(w) for w in args.workers.split(",")):
        threads = max(1, cores // workers)
        setting = f"{workers} worker(s) x {threads} thread(s)"
        out = root / f"out_w{workers}"
        shutil.rmtree(out, ignore_errors=True)
        toml = write_toml(root, out, model, args.block_size, workers, threads, crs)
        runs[setting] = {"setting": setting, "workers": workers, "threads": threads,
                         **run_once(toml)}
    return runs


def _projection(args: argparse.Namespace, model: str, runs: dict[str, dict[str, Any]]
                ) -> dict[str, Any]:
    """The Maebashi projection, with the model's tile and overlap it was computed for."""
    from idou.inference.model_source import resolve_model

    contract = resolve_model(model).contract
    tile, overlap = contract.tile_size, contract.tile_overlap
    side = int(MAEBASHI_PX ** 0.5 * MAEBASHI_GSD / contract.gsd_m)  # the grid at the model's GSD
    grid_w, grid_h = next(iter(runs.values()))["grid"]
    overhead_run = tile_overhead(grid_w, grid_h, args.block_size, tile, overlap)
    overhead_target = tile_overhead(side, side, args.production_block_size, tile, overlap)
    projection = project(runs, [int(m) for m in args.machines.split(",")], overhead_run,
                         overhead_target)
    projection["production_block_size"] = args.production_block_size
    return {"projection": projection, "tile": tile, "overlap": overlap,
            "overhead_run": overhead_run, "overhead_target": overhead_target}


def _print_report(args: argparse.Namespace, flight: dict[str, Any],
                  runs: dict[str, dict[str, Any]], p: dict[str, Any], cores: int) -> None:
    """The runs' table and the projection, as a reader compares them."""
    projection = p["projection"]
    print(f"flight: {flight['width']} x {flight['height']} px "
          f"({flight['width'] * flight['height'] / 1e6:.1f} Mpx per date), "
          f"{flight['sheets_per_date']} sheets of {flight['sheet_px']} px per date, "
          f"model {args.model}, blocks of {args.block_size} px, {cores} cores")
    print(f"{'setting':<28}{'blocks':>7}{'setup s':>9}{'blocks s':>10}{'final s':>9}"
          f"{'blocks Mpx/s':>14}{'end-to-end Mpx/s':>18}")
    for r in runs.values():
        print(f"{r['setting']:<28}{r['blocks']:>7}{r['seconds_setup']:>9.1f}"
              f"{r['seconds_blocks']:>10.1f}{r['seconds_final_stage']:>9.1f}"
              f"{r['mpx_s_blocks']:>14.2f}{r['mpx_s_end_to_end']:>18.2f}")
    print(f"tiles computed / tiles of one whole-grid pass: {p['overhead_run']:.3f} in this run, "
          f"{p['overhead_target']:.3f} with {args.production_block_size} px blocks on a "
          f"Maebashi-size grid (model tile {p['tile']} px, overlap {p['overlap']} px)")
    print(f"Maebashi-size flight ({MAEBASHI_KM2} km² at {MAEBASHI_GSD} m = "
          f"{MAEBASHI_PX / 1e9:.2f} Gpx per date), best setting {projection['best_setting']}, "
          f"{projection['block_mpx_s_per_machine']:.2f} Mpx/s of blocks per machine:")
    for n, hours in projection["hours_by_machines"].items():
        print(f"  {n:>3} machine(s) like this one: {hours:8.1f} h")


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

    root = args.keep or Path(tempfile.mkdtemp(prefix="idou-batch-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    model = args.model
    if model != "default" and not model.startswith("models:/"):
        model = str(Path(model).resolve())
    t0 = time.perf_counter()
    flight = make_flight(root, args.size, args.repeat, args.sheet, args.seed)
    flight["generate_s"] = round(time.perf_counter() - t0, 1)
    cores = os.cpu_count() or 1
    try:
        runs = _run_settings(args, root, model, flight["crs"], cores)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    p = _projection(args, model, runs)
    report = {"machine": {"cpu_cores": cores, "python": sys.version.split()[0]},
              "flight": flight, "model": args.model, "block_size": args.block_size,
              "runs": list(runs.values()), "maebashi_projection": p["projection"]}
    _print_report(args, flight, runs, p, cores)
    print(json.dumps(report, ensure_ascii=False))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
