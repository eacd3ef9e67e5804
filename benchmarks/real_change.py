"""Real-photograph change benchmark: models, published peers and a trivial baseline side by side.

Each set is a chip folder (``A/`` before, ``B/`` after, ``label/`` change; the LEVIR-CD / WHU-CD /
open-cd layout, see :mod:`idou.training.chips`). Every model under test runs through the engine
``idou detect`` uses, at the thresholds in its own contract, and is scored with the survey's
object rules (:mod:`idou.geo.scoring.metrics`: found at >= 25% cover, false alarm under 25% overlap,
objects under the minimum area left out) and pixel F1/IoU. Beside them, for the crops they
cover, the masks of published peers (one folder of PNG masks per network, named like the
chips), and the trivial "everything changed" baseline (one object per crop). One table per set.

Untyped labels judge the ``new`` channel; a second row per model, ``any change``, scores new or
demolished (what an untyped peer mask predicts) against the same labels. The last column counts
the model's new objects that overlap one of its demolished objects (both channels claiming one
house).

The default set, ``shared/data/real_change/levir_samples`` (11 LEVIR-CD pairs, 0.5 m), is for
measuring only: never train, tune thresholds or choose checkpoints on it. Its default minimum
area, 4 m², is 16 px at 0.5 m, the rule its peers' published figures use.

Example::

    .venv/bin/python benchmarks/real_change.py --model default --render /tmp/idou_real_change
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SET = REPO.parent / "shared" / "data" / "real_change" / "levir_samples"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--set", dest="sets", type=Path, action="append",
                   help=f"chip folder with A/, B/, label/ (repeatable; default {DEFAULT_SET})")
    p.add_argument("--model", dest="models", action="append",
                   help="ONNX model path or 'default' (repeatable; default: default)")
    p.add_argument("--peers", type=Path, action="append",
                   help="folder of a peer's masks named like the chips (repeatable; default: "
                        "every folder in SET/peers/)")
    p.add_argument("--gsd", type=float, default=0.5,
                   help="metres per pixel of chips without georeferencing (LEVIR-CD: 0.5)")
    p.add_argument("--crs", default=None, help="CRS to wrap such chips in (any projected CRS)")
    p.add_argument("--min-area", type=float, default=4.0, help="minimum object area in m²")
    p.add_argument("--device", default="cpu", help="cpu or cuda (ONNX Runtime)")
    p.add_argument("--json", dest="json_out", type=Path, help="also save every figure as JSON")
    p.add_argument("--render", type=Path,
                   help="write PNG panels before | after | label | prediction per pair here")
    return p.parse_args(argv)


@dataclasses.dataclass
class Row:
    """One line of a set's table."""

    name: str
    kind: str  # model | peer | baseline
    scope: str  # all | peers
    pairs: int
    objects: Any  # ObjectScores
    pixels: Any  # PixelScores
    thresholds: dict[str, float] | None = None
    both: int | None = None  # new objects overlapping a demolished object (models only)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "scope": self.scope, "pairs": self.pairs,
                "objects": self.objects.as_dict(), "pixels": self.pixels.as_dict(),
                "thresholds": self.thresholds, "new_objects_also_demolished": self.both}


def new_also_demolished(preds: list[Any], thresholds: dict[str, float], min_area: float) -> int:
    """How many new-channel objects overlap a demolished-channel object (one house claimed by
    both channels; on pairs whose changes are all new buildings, each is a mistake)."""
    import shapely

    count = 0
    for pred in preds:
        changes = pred.changes(thresholds, min_area)
        new = changes.geometry[changes["channel"] == "new"].to_numpy()
        dem = changes.geometry[changes["channel"] == "demolished"].to_numpy()
        if len(new) and len(dem):
            union = shapely.union_all(dem)
            count += int((shapely.area(shapely.intersection(new, union)) > 0).sum())
    return count


def _any_change(pred: Any, thresholds: dict[str, float]) -> Any:
    """The prediction with new-or-demolished (each at its threshold) in the new channel."""
    from idou.geo.scoring.metrics import threshold_mask

    either = (threshold_mask(pred.probs[0], thresholds["new"])
              | threshold_mask(pred.probs[1], thresholds["demolished"]))
    probs = np.zeros_like(pred.probs)
    probs[0][either] = 255
    return dataclasses.replace(pred, probs=probs, truth_labels=dict(pred.truth_labels))


def _score(name: str, kind: str, scope: str, preds: list[Any], thresholds: dict[str, float],
           min_area: float, shown: dict[str, float] | None = None) -> Row:
    from idou.training.chips import LABELLED_CHANNELS
    from idou.training.evaluate import score_predictions

    ev = score_predictions(preds, thresholds, min_area_m2=min_area, channels=LABELLED_CHANNELS)
    assert ev.pixels is not None
    return Row(name, kind, scope, len(preds), ev.channels["new"], ev.pixels["new"], shown)


def _model_label(spec: str) -> str:
    return spec if spec == "default" else Path(spec).stem


def _render(folder: Path, chip: Any, pred: Any, thresholds: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from idou.geo.scoring.metrics import threshold_mask
    from idou.training.chips import open_chip, read_change_label

    def rgb(path: Path) -> np.ndarray:
        with open_chip(path) as src:
            data = src.read([1, 2, 3] if src.count >= 3 else [1, 1, 1])
        return np.clip(data, 0, 255).astype(np.uint8).transpose(1, 2, 0)

    before, after = rgb(chip.before), rgb(chip.after)
    label = read_change_label(chip.label)
    h, w = label.shape
    rows = np.minimum((np.arange(h) + 0.5) * pred.grid.height / h, pred.grid.height - 1)
    cols = np.minimum((np.arange(w) + 0.5) * pred.grid.width / w, pred.grid.width - 1)
    pick = np.ix_(rows.astype(int), cols.astype(int))
    new = threshold_mask(pred.probs[0], thresholds["new"])[pick]
    dem = threshold_mask(pred.probs[1], thresholds["demolished"])[pick]
    overlay = (after * 0.55).astype(np.uint8)
    overlay[new] = (255, 40, 40)
    overlay[dem] = (40, 200, 255)
    overlay[new & dem] = (255, 0, 255)
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.3), dpi=80)
    titles = ("before (A)", "after (B)", "label: change",
              f"new ≥ {thresholds['new']:g} red, demolished ≥ {thresholds['demolished']:g} "
              "cyan, both magenta")
    for ax, img, title in zip(axes, (before, after, label, overlay), titles, strict=True):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.suptitle(chip.name, fontsize=10)
    fig.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(folder / f"{chip.name}.png")
    plt.close(fig)


def run_set(root: Path, args: argparse.Namespace) -> list[Row]:
    """Every row of one set's table."""
    from idou.geo.scoring.metrics import CHANNELS
    from idou.training.chips import find_chips, mask_prediction, predict_chips, read_change_label
    from idou.training.evaluate import load_model

    chips = find_chips(root)
    peer_dirs = args.peers or sorted(p for p in (root / "peers").glob("*") if p.is_dir())
    covered = sorted({c.name for c in chips for d in peer_dirs
                      if any((d / f"{c.name}{s}").is_file() for s in (".png", ".tif", ".jpg"))})
    scopes = [("all", chips)] + ([("peers", [c for c in chips if c.name in covered])]
                                 if covered and len(covered) < len(chips) else [])
    rows: list[Row] = []
    half = {c: 0.5 for c in CHANNELS}
    for spec in args.models or ["default"]:
        loaded, session = load_model(spec, device=args.device)
        thresholds = dict(zip(CHANNELS, loaded.contract.thresholds, strict=True))
        preds = list(predict_chips(loaded, session, chips, gsd=args.gsd, crs=args.crs))
        label = _model_label(spec)
        for scope, subset in scopes:
            names = {c.name for c in subset}
            mine = [p for p in preds if p.name in names]
            rows.append(_score(f"{label}: new", "model", scope, mine, thresholds, args.min_area,
                               thresholds))
            rows[-1].both = new_also_demolished(mine, thresholds, args.min_area)
            rows.append(_score(f"{label}: any change", "model", scope,
                               [_any_change(p, thresholds) for p in mine], half, args.min_area,
                               thresholds))
        if args.render:
            for chip, pred in zip(chips, preds, strict=True):
                _render(args.render / root.name / label, chip, pred, thresholds)
    for d in peer_dirs:
        preds = []
        for chip in chips:
            mask = next((d / f"{chip.name}{s}" for s in (".png", ".tif", ".jpg")
                         if (d / f"{chip.name}{s}").is_file()), None)
            if mask is not None:
                preds.append(mask_prediction(chip, read_change_label(mask), gsd=args.gsd,
                                             crs=args.crs))
        if preds:
            scope = "all" if len(preds) == len(chips) else "peers"
            rows.append(_score(f"peer {d.name}", "peer", scope, preds, half, args.min_area))
    for scope, subset in scopes:
        everything = [mask_prediction(c, np.ones_like(read_change_label(c.label)), gsd=args.gsd,
                                      crs=args.crs) for c in subset]
        rows.append(_score("everything changed", "baseline", scope, everything, half,
                           args.min_area))
    return rows


def _table(root: Path, rows: list[Row], n_chips: int, min_area: float) -> Any:
    from rich.table import Table

    n_peers = max((r.pairs for r in rows if r.scope == "peers"), default=0)
    table = Table(title=f"{root} — {n_chips} pairs, objects >= {min_area:g} m², found at >= 25% "
                        "cover, false alarm under 25% overlap",
                  caption=(f"below the line: the {n_peers} pairs the peer masks cover"
                           if n_peers else None))
    for col in ("model / peer", "pairs", "thresholds", "found/true", "false/pred",
                "obj recall", "obj precision", "obj F1", "pixel F1", "pixel IoU",
                "new ∩ dem."):
        table.add_column(col, justify="left" if col == "model / peer" else "right")
    for scope in ("all", "peers"):
        chosen = [r for r in rows if r.scope == scope]
        if scope == "peers" and chosen:
            table.add_section()
        for r in chosen:
            o, p = r.objects, r.pixels
            th = ("—" if r.thresholds is None
                  else f"{r.thresholds['new']:g}" if r.name.endswith(": new")
                  else f"{r.thresholds['new']:g}/{r.thresholds['demolished']:g}")
            table.add_row(r.name, str(r.pairs), th, f"{o.n_found}/{o.n_true}",
                          f"{o.n_false_alarm}/{o.n_pred}", f"{o.recall:.3f}",
                          f"{o.precision:.3f}", f"{o.f1:.3f}", f"{p.f1:.3f}", f"{p.iou:.3f}",
                          "—" if r.both is None else f"{r.both}/{o.n_pred}")
    return table


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    from idou.geo.errors import UserInputError
    from idou.training.chips import find_chips

    args = parse_args(argv)
    sets = args.sets or [DEFAULT_SET]
    console = Console(width=160)
    report: dict[str, Any] = {"min_area_m2": args.min_area, "gsd": args.gsd, "sets": {}}
    try:
        for root in sets:
            rows = run_set(root, args)
            thresholds = {r.name: r.thresholds for r in rows if r.thresholds}
            console.print(_table(root, rows, len(find_chips(root)), args.min_area))
            report["sets"][str(root)] = {"rows": [r.as_dict() for r in rows],
                                         "thresholds": thresholds}
    except UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n",
                                 encoding="utf-8")
        console.print(f"saved {args.json_out}")
    if args.render:
        console.print(f"panels in {args.render}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
