"""Throughput and memory of `idou detect` (issue #4 item 7), all in one run.

Measures, on a generated flight pair of ``--size`` px (default 8192):

(a) the bare ONNX model on preloaded, normalised batches of the pair's tiles (Mpx/s),
(b) the whole ``idou detect`` command end to end, in a fresh process (Mpx/s),
(c) what a user would write by hand: PyTorch eager with the same network, the whole image in
    memory, tiles looped, overlaps averaged (Mpx/s; skipped with a note without torch),

and the peak RSS (VmHWM) of ``idou detect`` on pairs of 2k, 8k and 20k px, each in its own
process. Mpx are input pixels of the after flight's overlap, whatever the model's
GSD. Pairs are mosaics of one generated scene (``idou.geo.synthetic``), flipped and rotated,
written as tiled JPEG GeoTIFFs and cached in ``--work``. (a), (b) and (c) run ``--repeat``
rounds, interleaved, and their medians are reported: on a shared virtual machine one run's
speed varies by tens of percent.

Usage::

    .venv/bin/python benchmarks/throughput.py        # shipped model; 8k; RSS of 2k, 8k, 20k
    .venv/bin/python benchmarks/throughput.py --model m.onnx --rss-sizes 2048,8192 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

SCENE_SIZE = 2048
SCENE_SEED = 11
CRS = "EPSG:6677"
GSD = 0.2
HERE = Path(__file__).resolve()


# --- data --------------------------------------------------------------------------------------

def _common_crop(pair: Any) -> tuple[np.ndarray, np.ndarray]:
    """The largest window where both flights hold data, as (before, after) HxWx3 on one lattice."""
    size = pair.before.shape[0]
    inv = ~pair.before_transform
    col, row = inv @ (pair.after_transform.c, pair.after_transform.f)
    sx, sy = round(col), round(row)  # after pixel (r, c) is before pixel (r + sy, c + sx)
    r0, r1 = max(0, sy), min(size, size + sy)
    c0, c1 = max(0, sx), min(size, size + sx)
    valid = pair.after_valid[r0 - sy:r1 - sy, c0 - sx:c1 - sx]
    top, bottom, left, right = 0, valid.shape[0], 0, valid.shape[1]
    while not valid[top:bottom, left:right].all():
        bad = ~valid[top:bottom, left:right]
        sides = {"top": bad[0].sum(), "bottom": bad[-1].sum(), "left": bad[:, 0].sum(),
                 "right": bad[:, -1].sum()}
        worst = max(sides, key=lambda k: sides[k])
        top += worst == "top"
        bottom -= worst == "bottom"
        left += worst == "left"
        right -= worst == "right"
    before = pair.before[r0 + top:r0 + bottom, c0 + left:c0 + right]
    after = pair.after[r0 - sy + top:r0 - sy + bottom, c0 - sx + left:c0 - sx + right]
    return before, after


def _scene(work: Path) -> tuple[np.ndarray, np.ndarray]:
    cache = work / f"scene_{SCENE_SEED}_{SCENE_SIZE}.npz"
    if cache.is_file():
        data = np.load(cache)
        return data["before"], data["after"]
    from idou.geo.synthetic import make_flight_pair

    before, after = _common_crop(make_flight_pair(SCENE_SEED, size=SCENE_SIZE, gsd=GSD))
    np.savez(cache, before=before, after=after)
    return before, after


def _variant(array: np.ndarray, k: int) -> np.ndarray:
    out = np.rot90(array, k % 4, axes=(0, 1))
    return out[:, ::-1] if k >= 4 else out


def make_pair(size: int, work: Path) -> tuple[Path, Path]:
    """A ``size`` x ``size`` pair tiled from flipped/rotated copies of one generated scene."""
    folder = work / f"pair_{size}"
    paths = (folder / "before.tif", folder / "after.tif")
    if all(p.is_file() for p in paths):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    before, after = _scene(work)
    side = min(before.shape[:2])
    variants = [(_variant(before[:side, :side], k), _variant(after[:side, :side], k))
                for k in range(8)]
    transform = Affine(GSD, 0, -69400.0, 0, -GSD, 43600.0)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8",
               "crs": CRS, "transform": transform, "tiled": True, "blockxsize": 256,
               "blockysize": 256, "compress": "JPEG", "photometric": "YCBCR",
               "jpeg_quality": 88, "interleave": "pixel", "BIGTIFF": "IF_SAFER"}
    for which, path in enumerate(paths):
        tmp = path.with_suffix(".part.tif")
        with rasterio.open(tmp, "w", **profile) as dst:
            for i, r0 in enumerate(range(0, size, side)):
                strip = np.zeros((3, min(side, size - r0), size), dtype=np.uint8)
                for j, c0 in enumerate(range(0, size, side)):
                    piece = variants[(i * 3 + j) % 8][which]
                    h, w = strip.shape[1], min(side, size - c0)
                    strip[:, :, c0:c0 + w] = np.moveaxis(piece[:h, :w], -1, 0)
                dst.write(strip, window=Window(0, r0, size, strip.shape[1]))
        tmp.rename(path)
    return paths


# --- model -------------------------------------------------------------------------------------

def standin_model(work: Path) -> Path:
    """Before the shipped model exists: the project's network (random weights), exported."""
    path = work / "standin.onnx"
    if path.is_file():
        return path
    import torch

    from idou.inference.contract import ModelContract
    from idou.inference.model_card import ModelCard, card_paths, sha256_file, write_card
    from idou.models.siamese import NetworkConfig, ProbabilityModel, SiameseChangeNet

    torch.manual_seed(0)
    config = NetworkConfig(aux_buildings=False)
    model = ProbabilityModel(SiameseChangeNet(config)).eval()
    x = torch.zeros(1, 3, 256, 256)
    dyn = {0: "N", 2: "H", 3: "W"}
    raw = work / "standin.raw.onnx"
    torch.onnx.export(model, (x, x), str(raw), input_names=["before", "after"],
                      output_names=["probabilities"], opset_version=17, dynamo=False,
                      dynamic_axes={"before": dyn, "after": dyn, "probabilities": dyn})
    import onnx

    proto = onnx.load(str(raw))
    # the training configuration's defaults: 256 px tiles, 32 px overlap, 0.4 m
    contract = ModelContract(model_name="standin", architecture="siamese", tile_size=256,
                             tile_overlap=32, gsd_m=0.4, threshold_new=0.9,
                             threshold_demolished=0.9, extra={"network": config.to_dict()})
    for key, value in contract.to_metadata().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    raw.unlink()
    write_card(ModelCard(name="standin", version="0", sha256=sha256_file(path),
                         notes="random weights; for timing only"), *card_paths(path))
    return path


# --- (b) and peak RSS: idou detect in a fresh process -------------------------------------------

def _spawn(cmd: list[str]) -> tuple[int, float]:
    """Run a command; its exit code and the CPU seconds (user + system) it used."""
    pid = os.posix_spawn(cmd[0], cmd, dict(os.environ))
    _, status, usage = os.wait4(pid, 0)
    return os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM) in MiB.

    Not ``ru_maxrss``: Linux carries that over ``exec`` from the process that spawned us, so a
    child of a large benchmark process would report the parent's size.
    """
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_detect_child(before: Path, after: Path, model: str, threads: int, out_dir: Path
                     ) -> dict[str, Any]:
    """Run ``idou detect`` in a new process; wall time and that process's peak RSS."""
    out = out_dir / "changes.gpkg"
    for leftover in (out, out.with_suffix(".qgz")):
        leftover.unlink(missing_ok=True)
    summary = out_dir / "summary.json"
    cmd = [sys.executable, str(HERE), "_detect", str(before), str(after), str(out), model,
           str(threads), str(summary)]
    t0 = time.perf_counter()
    code, cpu = _spawn(cmd)
    wall = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"idou detect failed (exit {code}) on {before}")
    result = json.loads(summary.read_text())
    result.update(wall_seconds=wall, cpu_seconds=cpu)
    return result


def _detect_main(args: list[str]) -> None:
    from idou.inference.detect import DetectJob, run_detect

    before, after, out, model, threads, summary = args
    t0 = time.perf_counter()
    result = run_detect(DetectJob(before, after, out, model=model, threads=int(threads),
                                  force=True, write_project=False))
    data = {"detect_seconds": time.perf_counter() - t0, "input_mpx": result.input_megapixels,
            "infer_seconds": result.infer_seconds, "tiles_run": result.tiles_run,
            "tiles_skipped": result.tiles_skipped, "grid": result.grid_shape,
            "gsd_m": result.gsd_m, "changes": result.changes_by_type,
            "peak_rss_mib": peak_rss_mib()}
    Path(summary).write_text(json.dumps(data))


# --- (a) the bare model on preloaded batches ----------------------------------------------------

def bare_model(before: Path, after: Path, model: str, threads: int, batches: int,
               batch_size: int) -> dict[str, Any]:
    """Seconds per tile of the model alone, on real tiles of the pair read beforehand."""
    from idou.geo.raster.align import AlignedPair
    from idou.geo.raster.preflight import preflight
    from idou.geo.raster.sources import open_source
    from idou.inference.engine import Normaliser, run_model
    from idou.inference.model_source import resolve_model
    from idou.inference.session import make_session
    from idou.inference.tiling import TilePlan

    loaded = resolve_model(model)
    contract = loaded.contract
    report = preflight(open_source(before), open_source(after), contract,
                       estimate_misregistration=False)
    plan = TilePlan.for_grid(report.grid.height, report.grid.width, contract.tile_size,
                             contract.tile_overlap)
    size, channels = contract.tile_size, len(contract.band_order)
    normalise = Normaliser(contract)
    tiles = list(plan.tiles())
    if len(tiles) <= batch_size:
        print(f"the {report.grid.width} x {report.grid.height} px model grid of {before} holds "
              f"{len(tiles)} tile(s), too few to time the model after a warm-up batch of "
              f"{batch_size}; pass a larger --size (e.g. --size 2048).", file=sys.stderr)
        raise SystemExit(2)
    step = max(1, len(tiles) // (batches * batch_size + 1))
    chosen = tiles[::step][:batches * batch_size + batch_size]
    preloaded = []
    with AlignedPair(report) as pair:
        for k in range(0, len(chosen), batch_size):
            b = np.empty((batch_size, channels, size, size), dtype=np.float32)
            a = np.empty_like(b)
            for n, tile in enumerate(chosen[k:k + batch_size]):
                bb, aa, _ = pair.read(tile.window)
                normalise(bb, b[n])
                normalise(aa, a[n])
            preloaded.append((b, a))
    session = make_session(loaded.data, threads=threads)
    run_model(session, *preloaded[0])  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    for b, a in preloaded[1:]:
        run_model(session, b, a)
    timed = len(preloaded[1:]) * batch_size
    per_tile = (time.perf_counter() - t0) / timed
    cpu_per_tile = (time.process_time() - c0) / timed
    return {"seconds_per_tile": per_tile, "cpu_seconds_per_tile": cpu_per_tile,
            "tiles_timed": timed,
            "tile_size": size, "batch_size": batch_size, "model_gsd_m": contract.gsd_m}


# --- (c) PyTorch eager by hand ------------------------------------------------------------------

def _torch_network(contract: Any, data: bytes) -> tuple[Any, str]:
    """The project's network as the model's contract describes it, with the model's weights."""
    from idou.models.siamese import NetworkConfig, ProbabilityModel, SiameseChangeNet

    network = contract.extra.get("network") if isinstance(contract.extra, dict) else None
    config = NetworkConfig.from_dict(network) if network else NetworkConfig()
    config = NetworkConfig.from_dict({**config.to_dict(), "aux_buildings": False})
    net = ProbabilityModel(SiameseChangeNet(config)).eval()
    return net, _load_onnx_weights(net, data)


def _tile_starts(length: int, size: int, stride: int) -> list[int]:
    """Tile origins along one side, the last one flush with the edge."""
    return list(range(0, max(length - size, 0) + 1, stride)) + (
        [length - size] if length > size and (length - size) % stride else [])


def _torch_average(net: Any, b: Any, a: Any, contract: Any) -> tuple[Any, int]:
    """Tiles looped over the whole normalised images, overlaps averaged; (probs, tiles)."""
    import torch

    _, _, h, w = b.shape
    size, stride = contract.tile_size, contract.tile_size - contract.tile_overlap
    # every output the exported model gives: probabilities, and presence when it has a head
    channels = 2 + 2 * len(net.extra_outputs)
    total = torch.zeros(1, channels, h, w)
    count = torch.zeros(1, 1, h, w)
    rows, cols = _tile_starts(h, size, stride), _tile_starts(w, size, stride)
    with torch.inference_mode():
        for r in rows:
            for c in cols:
                p = net(b[:, :, r:r + size, c:c + size], a[:, :, r:r + size, c:c + size])
                p = torch.cat(p, 1) if isinstance(p, tuple) else p
                total[:, :, r:r + size, c:c + size] += p
                count[:, :, r:r + size, c:c + size] += 1
    return total / count, len(rows) * len(cols)


def _torch_main(args: list[str]) -> None:
    """The hand-written baseline: whole images in memory, tiles looped, overlaps averaged."""
    before_path, after_path, model, threads, summary = args
    import torch
    import torch.nn.functional as F

    from idou.inference.model_source import resolve_model

    torch.set_num_threads(int(threads))
    loaded = resolve_model(model)
    contract = loaded.contract
    net, matched = _torch_network(contract, loaded.data)
    t0, c0 = time.perf_counter(), time.process_time()
    with rasterio.open(before_path) as src:
        before = src.read()
        in_gsd = src.res[0]
    with rasterio.open(after_path) as src:
        after = src.read()
    mean = torch.tensor(contract.mean).view(1, -1, 1, 1)
    std = torch.tensor(contract.std).view(1, -1, 1, 1)

    def prepare(img: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(img).unsqueeze(0).float() / 255.0
        if abs(in_gsd - contract.gsd_m) > 1e-6:
            factor = in_gsd / contract.gsd_m
            t = F.interpolate(t, scale_factor=factor, mode="area" if factor < 1 else "bilinear")
        return (t - mean) / std

    b, a = prepare(before), prepare(after)
    del before, after
    probs, tiles = _torch_average(net, b, a, contract)
    _ = (probs[:, :2] > 0.5).sum()
    seconds = time.perf_counter() - t0
    Path(summary).write_text(json.dumps({"seconds": seconds, "tiles": tiles,
                                         "cpu_seconds": time.process_time() - c0,
                                         "weights_matched": matched,
                                         "peak_rss_mib": peak_rss_mib()}))


def _load_onnx_weights(net: Any, data: bytes) -> str:
    """Copy ONNX initialisers into the torch network where names and shapes match."""
    import onnx
    import torch
    from onnx import numpy_helper

    proto = onnx.load_model_from_string(data)
    weights = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    state = net.state_dict()
    hits = 0
    for name, tensor in state.items():
        value = weights.get(name)
        if value is not None and tuple(value.shape) == tuple(tensor.shape):
            state[name] = torch.from_numpy(value.copy())
            hits += 1
    net.load_state_dict(state)
    return f"{hits}/{len(state)}"


def run_torch_child(before: Path, after: Path, model: str, threads: int, out_dir: Path
                    ) -> dict[str, Any]:
    summary = out_dir / "torch.json"
    cmd = [sys.executable, str(HERE), "_torch", str(before), str(after), model, str(threads),
           str(summary)]
    code, cpu = _spawn(cmd)
    if code != 0:
        return {"skipped": "the PyTorch baseline failed (see its output above)"}
    return {**json.loads(summary.read_text()), "cpu_seconds_process": cpu}


# --- the run -----------------------------------------------------------------------------------

def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="default, or a path to a model")
    parser.add_argument("--size", type=int, default=8192, help="side of the throughput pair")
    parser.add_argument("--rss-sizes", default="2048,8192,20480",
                        help="comma-separated sides of the peak-RSS pairs")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--bare-batches", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of (a), (b), (c) on the main pair; medians are reported "
                             "(this machine's speed varies by tens of percent from run to run)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/idou-bench"))
    parser.add_argument("--json", type=Path, default=None, help="where to write the figures")
    return parser.parse_args()


def _pick_model(args: argparse.Namespace, notes: list[str]) -> str:
    """The model to time: ``--model``, or a stand-in when the shipped one is missing."""
    model = str(args.model)
    if model == "default":
        from idou.inference.model_source import default_model_path

        if not default_model_path().is_file():
            model = str(standin_model(args.work))
            notes.append("no shipped model: a stand-in (the project's network, random "
                         "weights) was used")
    return model


def _detect_all(args: argparse.Namespace, sizes: list[int], pairs: dict[int, tuple[Path, Path]],
                model: str) -> dict[int, dict[str, Any]]:
    """One ``idou detect`` per pair size: its timings and peak RSS."""
    runs: dict[int, dict[str, Any]] = {}
    for s in sizes:
        out_dir = args.work / f"out_{s}"
        out_dir.mkdir(exist_ok=True)
        runs[s] = run_detect_child(*pairs[s], model, args.threads, out_dir)
        r = runs[s]
        print(f"detect {s}px: {r['input_mpx']:.1f} Mpx in {r['wall_seconds']:.1f} s, "
              f"peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)
    return runs


def _torch_check(skip: bool) -> tuple[bool, dict[str, Any]]:
    """Whether (c) runs, and its result until it has run (why it is skipped)."""
    if skip:
        return False, {"skipped": "--skip-torch"}
    try:
        import torch  # noqa: F401

        from idou.models import siamese  # noqa: F401
    except ImportError as exc:
        return False, {"skipped": f"PyTorch or the network is not available ({exc})"}
    return True, {"skipped": "--skip-torch"}


def _rounds(args: argparse.Namespace, pair: tuple[Path, Path], model: str,
            main_run: dict[str, Any]) -> dict[str, Any]:
    """Rounds of (a), (b), (c), interleaved: each round's (wall, CPU) Mpx/s, last results."""
    mpx = main_run["input_mpx"]
    tiles = main_run["tiles_run"]
    use_torch, torch_result = _torch_check(args.skip_torch)
    a_runs: list[tuple[float, float]] = []
    b_runs: list[tuple[float, float, float]] = []
    c_runs: list[tuple[float, float]] = []
    bare: dict[str, Any] = {}
    out_dir = args.work / f"out_{args.size}"
    for k in range(max(1, args.repeat)):
        run = main_run if k == 0 else run_detect_child(*pair, model, args.threads, out_dir)
        b_runs.append((mpx / run["wall_seconds"], mpx / run["cpu_seconds"],
                       mpx / run["detect_seconds"]))
        bare = bare_model(*pair, model, args.threads, args.bare_batches, args.batch_size)
        a_runs.append((mpx / (bare["seconds_per_tile"] * tiles),
                       mpx / (bare["cpu_seconds_per_tile"] * tiles)))
        if use_torch:
            torch_result = run_torch_child(*pair, model, args.threads, out_dir)
            if "seconds" not in torch_result:
                use_torch = False
            else:
                c_runs.append((mpx / torch_result["seconds"], mpx / torch_result["cpu_seconds"]))
        print(f"round {k + 1}: (a) {a_runs[-1][0]:.2f}, (b) {b_runs[-1][0]:.2f}"
              + (f", (c) {c_runs[-1][0]:.2f}" if c_runs and len(c_runs) == k + 1 else "")
              + " Mpx/s", flush=True)
    return {"a": a_runs, "b": b_runs, "c": c_runs, "bare": bare, "torch": torch_result}


def _medians(rounds: dict[str, Any]) -> dict[str, float | None]:
    """Each measure's median over the rounds (None for (c) when it did not run)."""
    def median(key: str, i: int) -> float:
        return float(np.median([r[i] for r in rounds[key]]))

    c = bool(rounds["c"])
    return {"a_wall": median("a", 0), "a_cpu": median("a", 1), "b_wall": median("b", 0),
            "b_cpu": median("b", 1), "b_inproc": median("b", 2),
            "c_wall": median("c", 0) if c else None, "c_cpu": median("c", 1) if c else None}


def _figures(args: argparse.Namespace, model: str, notes: list[str],
             runs: dict[int, dict[str, Any]], rounds: dict[str, Any],
             m: dict[str, Any]) -> dict[str, Any]:
    """Everything measured, as written to ``--json``."""
    main_run = runs[args.size]
    sizes = sorted(runs)
    rss = {s: runs[s]["peak_rss_mib"] for s in sizes if str(s) in args.rss_sizes.split(",")}
    rss_values = list(rss.values())
    a_wall, a_cpu, b_wall, b_cpu = m["a_wall"], m["a_cpu"], m["b_wall"], m["b_cpu"]
    c_wall, c_cpu = m["c_wall"], m["c_cpu"]
    return {
        "machine": {"cpus": len(os.sched_getaffinity(0)), "threads": args.threads,
                    "loadavg_at_end": os.getloadavg(),
                    "python": platform.python_version(), "platform": platform.platform()},
        "model": model, "notes": notes, "size_px": args.size, "input_mpx": main_run["input_mpx"],
        "mpx_s": {"a_bare_model": a_wall, "b_detect_end_to_end": b_wall,
                  "b_detect_in_process": m["b_inproc"], "c_torch_eager": c_wall},
        "mpx_per_cpu_s": {"a_bare_model": a_cpu, "b_detect_end_to_end": b_cpu,
                          "c_torch_eager": c_cpu},
        "rounds_mpx_s_wall_cpu": {"a": rounds["a"], "b": rounds["b"], "c": rounds["c"]},
        "ratio_b_over_a": {"wall": b_wall / a_wall, "cpu": b_cpu / a_cpu},
        "ratio_b_over_c": ({"wall": b_wall / c_wall, "cpu": b_cpu / c_cpu}
                           if c_wall and c_cpu else None),
        "bare": rounds["bare"], "detect": main_run, "torch": rounds["torch"],
        "peak_rss_mib": rss,
        "rss_spread": (max(rss_values) / min(rss_values) - 1) if rss_values else None,
        "detect_runs": runs,
    }


def _print_table(args: argparse.Namespace, figures: dict[str, Any], m: dict[str, Any]) -> None:
    """The figures as the table a reader compares."""
    def row(name: str, wall: float | None, cpu: float | None, unit: str = "") -> None:
        shown = [f"{v:>12.2f}" if v is not None else f"{'-':>12}" for v in (wall, cpu)]
        print(f"{name:<46}{shown[0]}{shown[1]}{unit}")

    a_wall, a_cpu, b_wall, b_cpu = m["a_wall"], m["a_cpu"], m["b_wall"], m["b_cpu"]
    c_wall, c_cpu = m["c_wall"], m["c_cpu"]
    mpx = figures["input_mpx"]
    print()
    print(f"{'measure (' + str(args.size) + ' px pair, ' + f'{mpx:.1f} Mpx)':<46}"
          f"{'Mpx/s':>12}{'Mpx/CPU-s':>12}")
    print("-" * 70)
    row("(a) bare ONNX model, preloaded batches", a_wall, a_cpu)
    row("(b) idou detect end to end (fresh process)", b_wall, b_cpu)
    row("(c) PyTorch eager by hand", c_wall, c_cpu)
    if c_wall is None:
        print(f"    (c) skipped: {figures['torch'].get('skipped')}")
    row("(b)/(a)", b_wall / a_wall, b_cpu / a_cpu)
    if c_wall and c_cpu:
        row("(b)/(c)", b_wall / c_wall, b_cpu / c_cpu)
    for size, value in figures["peak_rss_mib"].items():
        print(f"{f'peak RSS of idou detect, {size} px pair':<46}{value:>9.0f} MiB")
    if figures["rss_spread"] is not None:
        print(f"{'peak RSS spread (max/min - 1)':<46}{figures['rss_spread']:>12.1%}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on "
          f"{len(os.sched_getaffinity(0))} cores")
    for note in figures["notes"]:
        print(f"note: {note}")


def main() -> None:
    args = _parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    model = _pick_model(args, notes)
    sizes = sorted({args.size, *(int(s) for s in args.rss_sizes.split(",") if s)})
    t0 = time.perf_counter()
    pairs = {s: make_pair(s, args.work) for s in sizes}
    print(f"pairs ready in {time.perf_counter() - t0:.0f} s", flush=True)
    runs = _detect_all(args, sizes, pairs, model)
    rounds = _rounds(args, pairs[args.size], model, runs[args.size])
    medians = _medians(rounds)
    figures = _figures(args, model, notes, runs, rounds, medians)
    _print_table(args, figures, medians)
    target = args.json or (args.work / "throughput.json")
    target.write_text(json.dumps(figures, indent=2, default=str))
    print(f"figures written to {target}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_detect":
        _detect_main(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "_torch":
        _torch_main(sys.argv[2:])
    else:
        main()
