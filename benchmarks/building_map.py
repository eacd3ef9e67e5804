"""False alarms with and without the building map (家屋現況図), at the same object recall.

Runs a model once per pair with detect's engine and scores what ``idou detect`` lists as
candidates (the survey's object rules of :mod:`idou.geo.scoring.metrics`) twice: without the map
(every change polygon) and with it (``--buildings``: 滅失 decided per footprint, その他の変化 left
out). For 滅失 it also sweeps the footprint threshold and reports the highest threshold whose
recall is within 0.01 of the recall without the map, and false alarms there. Parcel recall
(candidate parcels that hold a true change) is reported for both.

Pairs: generated flights (``idou samples make DIR --seed S --size 2048``: folders holding
``flight_*.tif``, ``truth.gpkg``, ``parcels.gpkg``, ``buildings_2024.gpkg``), and/or pairs made
from the real robosat evaluation tiles (``--robosat``: buildings removed or pasted as
:mod:`idou.training.datasets.single_date` does; the tile's building mask before the edit is the
map). The robosat data carries AGPL-3.0 terms: only figures leave this script.

Example::

    .venv/bin/python benchmarks/building_map.py --scenes /tmp/flights/s3000* \
        --robosat --json /tmp/building_map.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np

REPO = Path(__file__).resolve().parents[1]
ROBOSAT = next((base / "shared" / "data" / "real_buildings" / "robosat" / "evaluation"
                for base in (REPO.parent, REPO.parent.parent)
                if (base / "shared" / "data").is_dir()),
               REPO.parent / "shared" / "data" / "real_buildings" / "robosat" / "evaluation")
ROBOSAT_GSD_M = 0.54
EVAL_WEIGHTS = {"unchanged": 0.25, "new_by_removal": 0.25, "demolished_by_removal": 0.25,
                "new_by_paste": 0.125, "demolished_by_paste": 0.125}
SWEEP = [round(0.05 + 0.01 * i, 2) for i in range(91)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenes", type=Path, nargs="*", default=[],
                   help="generated scene folders (idou samples make)")
    p.add_argument("--robosat", action="store_true", help="also pairs from robosat evaluation")
    p.add_argument("--robosat-root", type=Path, default=ROBOSAT)
    p.add_argument("--robosat-seed", type=int, default=1)
    p.add_argument("--model", default="default")
    p.add_argument("--footprint-thresholds", type=float, nargs="*", default=[],
                   help="footprint thresholds to score with the map (default: the model's)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def _zero() -> Any:
    from idou.geo.scoring.metrics import ObjectScores

    return ObjectScores(0, 0, 0, 0)


class Tally:
    """Pooled object counts per variant and channel, the 滅失 sweep, and parcel counts.

    Variants: ``without`` the map, and ``with@T`` for each footprint threshold T.
    """

    def __init__(self, fp_thresholds: list[float]) -> None:
        self.fp_thresholds = fp_thresholds
        self.variants = ["without", *(f"with@{t:g}" for t in fp_thresholds)]
        self.objects: dict[str, dict[str, Any]] = {v: {"new": _zero(), "demolished": _zero()}
                                                   for v in self.variants}
        self.sweep = [_zero() for _ in SWEEP]
        self.parcels = {v: [0, 0] for v in self.variants}
        self.pairs = 0

    def add(self, pred: Any, thresholds: dict[str, float],
            parcels: gpd.GeoDataFrame | None) -> None:
        from idou.geo.changes.classify import candidate_changes, classify_changes
        from idou.geo.changes.parcel_join import join_parcels
        from idou.geo.scoring import metrics

        self.pairs += 1
        changes = pred.changes(thresholds)
        frames = [("without", classify_changes(changes, None, parcels))]
        for t in self.fp_thresholds:
            frames.append((f"with@{t:g}", candidate_changes(classify_changes(
                changes, pred.buildings, parcels, footprints=pred.footprint_scores(),
                footprint_threshold=t, demolished_threshold=thresholds["demolished"]))))
        for variant, frame in frames:
            for c, s in metrics.channel_scores(frame, pred.truth).items():
                self.objects[variant][c] = self.objects[variant][c] + s
            if parcels is not None:
                n, found = metrics.parcel_counts(join_parcels(frame, parcels), pred.truth)
                self.parcels[variant][0] += n
                self.parcels[variant][1] += found
        score = np.nan_to_num(pred.footprint_scores().score, nan=0.0)
        truth = pred.truth[pred.truth["channel"] == "demolished"]
        for k, t in enumerate(SWEEP):
            self.sweep[k] = self.sweep[k] + metrics.object_scores_from_polygons(
                pred.buildings[score >= t], truth)

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pairs": self.pairs}
        for variant in self.variants:
            out[variant] = {c: s.as_dict() for c, s in self.objects[variant].items()}
            if self.parcels[variant][0]:
                n, found = self.parcels[variant]
                out[variant]["parcels"] = {"n_changed": n, "n_found": found,
                                           "recall": found / n}
        base = self.objects["without"]["demolished"].recall
        close = [(t, s) for t, s in zip(SWEEP, self.sweep, strict=True)
                 if s.recall >= base - 0.01]
        if close:
            t, s = max(close, key=lambda ts: ts[0])
            out["demolished_at_equal_recall"] = {"threshold_footprint": t, **s.as_dict()}
        return out


def scene_predictions(args: argparse.Namespace, loaded: Any, session: Any) -> Any:
    from idou.training.evaluate import find_scenes, predict_pair, read_truth

    for folder in args.scenes:
        for scene in find_scenes(folder):
            pred = predict_pair(loaded, session, scene.before, scene.after,
                                read_truth(scene.truth), name=scene.name,
                                buildings=scene.buildings)
            parcels = gpd.read_file(folder / "parcels.gpkg") \
                if (folder / "parcels.gpkg").is_file() else None
            yield pred, parcels


def _polygons(mask: np.ndarray, transform: Any) -> list[Any]:
    """One polygon per 8-connected component of ``mask``."""
    import rasterio.features
    from scipy import ndimage
    from shapely.geometry import shape

    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    out = []
    for geom, value in rasterio.features.shapes(labels.astype(np.int32), mask=labels > 0,
                                                transform=transform):
        out.append((int(value), shape(geom)))
    merged: dict[int, Any] = {}
    for value, geom in out:
        merged[value] = geom if value not in merged else merged[value].union(geom)
    return list(merged.values())


def robosat_predictions(args: argparse.Namespace, loaded: Any, session: Any) -> Any:
    """Pairs of the robosat evaluation tiles, written as GeoTIFFs and run like flights."""
    import rasterio
    from affine import Affine

    from idou.training.datasets.single_date import SingleDateChangeDataset
    from idou.training.evaluate import predict_pair

    dataset = SingleDateChangeDataset(args.robosat_root, pairs_per_tile=1,
                                      weights=EVAL_WEIGHTS, seed=args.robosat_seed)
    crs = "EPSG:6677"
    with tempfile.TemporaryDirectory(prefix="idou-building-map-") as tmp:
        for index in range(len(dataset)):
            item = dataset[index]
            h, w = item["before"].shape[:2]
            transform = Affine(ROBOSAT_GSD_M, 0, 0.0, 0, -ROBOSAT_GSD_M, h * ROBOSAT_GSD_M)
            paths = []
            for side in ("before", "after"):
                path = Path(tmp) / f"{side}.tif"
                with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=3,
                                   dtype="uint8", crs=crs, transform=transform) as dst:
                    dst.write(np.moveaxis(item[side], -1, 0))
                paths.append(path)
            rows = [(c, g) for k, c in enumerate(("new", "demolished"))
                    for g in _polygons(item["target"][k] == 1, transform)]
            truth = gpd.GeoDataFrame({"channel": [c for c, _ in rows]},
                                     geometry=[g for _, g in rows], crs=crs)
            footprints = _polygons(item["buildings_before"] > 0, transform)
            pred = predict_pair(loaded, session, paths[0], paths[1], truth,
                                name=f"robosat{index}")
            pred.buildings = gpd.GeoDataFrame(  # the map may be empty: then nothing is 滅失
                {"building_id": [f"R{k}" for k in range(len(footprints))]},
                geometry=gpd.GeoSeries(footprints, crs=crs), crs=crs).to_crs(pred.grid.crs)
            yield pred, None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from idou.inference.footprint_evidence import footprint_threshold
    from idou.training.evaluate import load_model

    loaded, session = load_model(args.model, threads=args.threads)
    thresholds = dict(zip(("new", "demolished"), loaded.contract.thresholds, strict=True))
    fps = args.footprint_thresholds or [footprint_threshold(loaded.contract)]
    result: dict[str, Any] = {"model": f"{loaded.contract.model_name} "
                                       f"{loaded.contract.model_version}",
                              "thresholds": thresholds,
                              "model_threshold_footprint": footprint_threshold(loaded.contract)}
    sets = [("generated", scene_predictions)] if args.scenes else []
    if args.robosat:
        sets.append(("robosat", robosat_predictions))
    for name, source in sets:
        tally = Tally(fps)
        for pred, parcels in source(args, loaded, session):
            tally.add(pred, thresholds, parcels)
        result[name] = tally.report()
        print(json.dumps({name: result[name]}, indent=1, ensure_ascii=False), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n",
                             encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
