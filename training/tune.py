"""Tune a model's thresholds for a target object recall (``idou tune``).

The model runs through detect's engine on validation scenes (see :mod:`idou.training.evaluate`);
for each channel the probability rasters are thresholded at every candidate threshold, scored
with the object rules of :mod:`idou.geo.scoring.metrics` (pooled over scenes), and the *highest*
threshold whose recall reaches the target is kept — the fewest false alarms that still find
what must be found. The thresholds and target go into the ONNX metadata (the model contract),
the card is updated with the measured figures and the new file's sha256, PR curves are saved as
PNG, and everything is logged to mlflow when asked. Nothing here imports torch; mlflow and
matplotlib are imported only when used.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from idou.errors import InvalidOption, OutputConflict, UserInputError
from idou.geo.files.file_mode import give_usual_mode
from idou.geo.scoring import metrics
from idou.geo.scoring.metrics import CHANNELS, ObjectScores, PixelScores
from idou.training.evaluate import ScenePrediction

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 + 0.01 * i, 2) for i in range(91))
TUNE_EXPERIMENT = "idou-tune"


@dataclass
class ChannelTuning:
    """The PR curve of one channel and the threshold picked on it."""

    channel: str
    curve: list[tuple[float, ObjectScores]]
    pixel_curve: list[tuple[float, PixelScores]]
    threshold: float
    scores: ObjectScores
    reached: bool
    detect_scores: ObjectScores | None = None
    no_truth: bool = False  # validation holds no true object of this channel: not tuned

    @property
    def pixels(self) -> PixelScores:
        """Pixel scores at the picked threshold."""
        return dict(self.pixel_curve)[self.threshold]

    @property
    def final(self) -> ObjectScores:
        """Object scores of detect's polygons at the threshold (raster scores if not checked)."""
        return self.detect_scores if self.detect_scores is not None else self.scores


@dataclass
class FootprintTuning:
    """The building map's footprint threshold: 滅失 object scores of the footprints that reach
    each threshold, and the one picked by the same recall-first rule as the channels."""

    curve: list[tuple[float, ObjectScores]]
    threshold: float
    scores: ObjectScores
    reached: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, curve included."""
        return {"threshold": self.threshold, "objects": self.scores.as_dict(),
                "reached": self.reached,
                "curve": [{"threshold": t, **s.as_dict()} for t, s in self.curve]}


@dataclass
class TuneResult:
    """Thresholds picked per channel for a recall target."""

    recall_target: float
    channels: dict[str, ChannelTuning]
    min_area_m2: float = metrics.DEFAULT_MIN_AREA_M2
    cover: float = metrics.DEFAULT_COVER
    scenes: list[str] = field(default_factory=list)
    building_map: FootprintTuning | None = None  # when the scenes hold a building map

    @property
    def thresholds(self) -> dict[str, float]:
        """``{"new": t, "demolished": t}``."""
        return {c: t.threshold for c, t in self.channels.items()}

    @property
    def reached(self) -> bool:
        """Whether every channel reached the recall target."""
        return all(t.reached for t in self.channels.values())

    def flat_metrics(self) -> dict[str, float]:
        """Figures at the picked thresholds, flat (mlflow metrics, card)."""
        out: dict[str, float] = {}
        for c, t in self.channels.items():
            out[f"threshold_{c}"] = t.threshold
            out[f"object_recall_{c}"] = t.final.recall
            out[f"object_precision_{c}"] = t.final.precision
            out[f"objects_true_{c}"] = float(t.final.n_true)
            for key in ("precision", "recall", "f1", "iou"):
                out[f"pixel_{key}_{c}"] = float(getattr(t.pixels, key))
        if self.building_map is not None:
            out["threshold_footprint"] = self.building_map.threshold
            out["map_object_recall_demolished"] = self.building_map.scores.recall
            out["map_object_precision_demolished"] = self.building_map.scores.precision
        return out

    def to_dict(self) -> dict[str, Any]:
        """Everything, curves included, JSON-ready."""
        return {
            "recall_target": self.recall_target, "min_area_m2": self.min_area_m2,
            "cover": self.cover, "scenes": self.scenes, "thresholds": self.thresholds,
            "reached": {c: t.reached for c, t in self.channels.items()},
            "no_truth": [c for c, t in self.channels.items() if t.no_truth],
            "channels": {c: {"threshold": t.threshold, "objects": t.final.as_dict(),
                             "raster_objects": t.scores.as_dict(),
                             "pixels": t.pixels.as_dict(),
                             "curve": [{"threshold": th, **s.as_dict()} for th, s in t.curve],
                             "pixel_curve": [{"threshold": th, **p.as_dict()}
                                             for th, p in t.pixel_curve]}
                         for c, t in self.channels.items()},
            **({"building_map": self.building_map.to_dict()} if self.building_map else {}),
        }


def _check_target(recall_target: float) -> None:
    if not 0.0 < recall_target <= 1.0:
        raise InvalidOption(f"--recall {recall_target} is not a recall; pass a number in (0, 1], "
                            "e.g. --recall 0.869.")


def tune_predictions(predictions: Iterable[ScenePrediction], recall_target: float, *,
                     thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                     min_area_m2: float = metrics.DEFAULT_MIN_AREA_M2,
                     cover: float = metrics.DEFAULT_COVER, confirm: bool = True,
                     max_confirm_steps: int = 10, current: dict[str, float] | None = None
                     ) -> TuneResult:
    """Sweep thresholds over scenes' probability rasters and pick one per channel.

    The sweep thresholds each raster, applies detect's clean-up and scores connected components
    (fast); counts are pooled over scenes (micro average) before recall and precision. With
    ``confirm``, the pick is then checked on the polygons ``idou detect`` itself makes
    (``vectorize``) and lowered step by step (at most ``max_confirm_steps``) while those miss the
    target, so the tuned threshold means what detect will do with it.

    Args:
        predictions: the engine's output per scene (kept in memory while tuning).
        recall_target: object recall to reach per channel.
        thresholds: candidate thresholds in (0, 1).
        min_area_m2: objects under this area are left out (converted to pixels per scene).
        cover: the overlap fraction of the object rules.
        confirm: check (and if needed lower) the pick on detect's polygons.
        max_confirm_steps: how many thresholds below the raster pick may be tried.
        current: the model's thresholds, kept for a channel without any true object in the
            validation data (flagged ``no_truth``); default 0.5.
    """
    _check_target(recall_target)
    keep = {c: float(t) for c, t in (current or {c: 0.5 for c in CHANNELS}).items()}
    ts = sorted({float(t) for t in thresholds} | set(keep.values()))
    if not ts or not all(0.0 < t < 1.0 for t in ts):
        raise InvalidOption("thresholds must lie strictly between 0 and 1.")
    preds = list(predictions)
    if not preds:
        raise UserInputError("no validation scenes to tune on; pass a folder with flights and "
                             "truth.gpkg.")
    obj, pix = _sweep(preds, ts, min_area_m2, cover)
    channels = _pick(ts, obj, pix, keep, recall_target)
    result = TuneResult(recall_target=recall_target, channels=channels, min_area_m2=min_area_m2,
                        cover=cover, scenes=[p.name for p in preds])
    if confirm:
        _confirm_with_detect(preds, result, ts, max_confirm_steps)
    result.building_map = tune_footprints(preds, recall_target, ts, min_area_m2=min_area_m2,
                                          cover=cover)
    return result


def _sweep(preds: Sequence[ScenePrediction], ts: Sequence[float], min_area_m2: float,
           cover: float) -> tuple[dict[str, list[ObjectScores]], dict[str, list[PixelScores]]]:
    """Object and pixel scores of each channel at each threshold, pooled over the scenes."""
    from idou.training.evaluate import detect_clean

    obj = {c: [ObjectScores(0, 0, 0, 0)] * len(ts) for c in CHANNELS}
    pix = {c: [PixelScores(0, 0, 0)] * len(ts) for c in CHANNELS}
    for pred in preds:
        min_px = metrics.min_area_pixels(min_area_m2, pred.gsd)
        for k, c in enumerate(CHANNELS):
            curve = metrics.sweep_thresholds(pred.probs[k], pred.truth_labels[c], ts,
                                             min_area_px=min_px, cover=cover, valid=pred.valid,
                                             clean=detect_clean, labelled=True)
            pcurve = metrics.sweep_pixel_scores(pred.probs[k], pred.truth_mask(c), ts,
                                                valid=pred.valid)
            obj[c] = [a + b for a, (_, b) in zip(obj[c], curve, strict=True)]
            pix[c] = [a + b for a, (_, b) in zip(pix[c], pcurve, strict=True)]
    return obj, pix


def _pick(ts: Sequence[float], obj: dict[str, list[ObjectScores]],
          pix: dict[str, list[PixelScores]], keep: dict[str, float],
          recall_target: float) -> dict[str, ChannelTuning]:
    """Each channel's threshold for the recall target (its ``keep`` one without true objects)."""
    channels = {}
    for c in CHANNELS:
        curve = list(zip(ts, obj[c], strict=True))
        if curve[0][1].n_true == 0:  # nothing to find: keep the threshold it had
            t = keep[c]
            channels[c] = ChannelTuning(channel=c, curve=curve,
                                        pixel_curve=list(zip(ts, pix[c], strict=True)),
                                        threshold=t, scores=dict(curve)[t], reached=False,
                                        no_truth=True)
            continue
        t, s = metrics.pick_threshold(curve, recall_target)
        channels[c] = ChannelTuning(channel=c, curve=curve,
                                    pixel_curve=list(zip(ts, pix[c], strict=True)),
                                    threshold=t, scores=s,
                                    reached=metrics.reaches(s, recall_target))
    return channels


def tune_footprints(preds: Sequence[ScenePrediction], recall_target: float,
                    thresholds: Sequence[float], *,
                    min_area_m2: float = metrics.DEFAULT_MIN_AREA_M2,
                    cover: float = metrics.DEFAULT_COVER) -> FootprintTuning | None:
    """The highest footprint threshold whose 滅失 object recall (pooled over the scenes that
    hold a building map) reaches ``recall_target``; None without such scenes or true 滅失.

    With the map, the 滅失 candidates are exactly the footprints whose demolished score reaches
    the threshold (:mod:`idou.geo.changes.building_evidence`), so each threshold is scored on those.
    """
    mapped = [p for p in preds if p.buildings is not None]
    if not mapped:
        return None
    curve = [ObjectScores(0, 0, 0, 0)] * len(thresholds)
    for pred in mapped:
        assert pred.buildings is not None
        score = np.nan_to_num(pred.footprint_scores().score, nan=0.0)
        truth = pred.truth[pred.truth["channel"].astype(str) == "demolished"]
        for k, t in enumerate(thresholds):
            rows = pred.buildings[score >= t]
            curve[k] = curve[k] + metrics.object_scores_from_polygons(
                rows, truth, min_area_m2=min_area_m2, cover=cover)
    pairs = list(zip(thresholds, curve, strict=True))
    if pairs[0][1].n_true == 0:
        return None
    t, s = metrics.pick_threshold(pairs, recall_target)
    return FootprintTuning(curve=pairs, threshold=t, scores=s,
                           reached=metrics.reaches(s, recall_target))


def _detect_scores(preds: list[ScenePrediction], thresholds: dict[str, float],
                   min_area_m2: float, cover: float) -> dict[str, ObjectScores]:
    total = {c: ObjectScores(0, 0, 0, 0) for c in CHANNELS}
    for pred in preds:
        changes = pred.changes(thresholds, min_area_m2)
        for c, s in metrics.channel_scores(changes, pred.truth, min_area_m2=min_area_m2,
                                           cover=cover).items():
            total[c] = total[c] + s
    return total


def _confirm_with_detect(preds: list[ScenePrediction], result: TuneResult, ts: list[float],
                         max_steps: int) -> None:
    """Score the picks on detect's polygons; lower a channel's pick while those miss the target.
    """
    curves = {c: dict(t.curve) for c, t in result.channels.items()}
    for step in range(max_steps + 1):
        scores = _detect_scores(preds, result.thresholds, result.min_area_m2, result.cover)
        lowered = False
        for c, tuning in result.channels.items():
            tuning.detect_scores = scores[c]
            if not tuning.reached or metrics.reaches(scores[c], result.recall_target):
                continue
            below = [t for t in ts if t < tuning.threshold]
            if below and step < max_steps:
                tuning.threshold = below[-1]
                tuning.scores = curves[c][tuning.threshold]
                lowered = True
            else:
                tuning.reached = False
        if not lowered:
            return


# ---------------------------------------------------------------------------------- writing out

def default_output(model_path: Path) -> Path:
    """``<stem>.tuned.onnx`` beside the model."""
    return model_path.with_name(f"{model_path.stem}.tuned.onnx")


def write_tuned_model(loaded: Any, result: TuneResult, output: str | Path, *,
                      source_label: str = "") -> Path:
    """Write the model with tuned thresholds in its metadata, and its updated card beside it.

    The model bytes are the checked ones (``loaded.data``); only the ``idou.contract`` metadata
    entry changes. The write is atomic (temporary file, then rename). The card keeps what the
    source card said and records the thresholds, recall target, measured figures and new sha256.

    Args:
        loaded: ``idou.inference.model_source.LoadedModel`` of the source model.
        result: the tuning result.
        output: where to write the model (may be the source path to overwrite it).
        source_label: what it was tuned on, for the card (e.g. the validation folder).
    """
    from idou.inference.model_card import card_paths, write_card

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    contract = _tuned_contract(loaded, result)
    _save_with_metadata(loaded.data, contract, output)
    write_card(_tuned_card(loaded.card, contract, result, output, source_label),
               *card_paths(output))
    return output


def _tuned_contract(loaded: Any, result: TuneResult) -> Any:
    """The source model's contract with the tuned thresholds (and building-map threshold)."""
    contract = loaded.contract.with_thresholds(result.thresholds["new"],
                                               result.thresholds["demolished"],
                                               result.recall_target)
    if result.building_map is not None:
        from idou.geo.changes.building_evidence import DEFAULT_INSET_M

        contract = dataclasses.replace(contract, extra={
            **contract.extra, "building_map": {
                "threshold_demolished": result.building_map.threshold,
                "recall_target": result.recall_target, "inset_m": DEFAULT_INSET_M}})
    return contract


def _save_with_metadata(data: bytes, contract: Any, output: Path) -> None:
    """Write the model ``data`` with ``contract`` in its metadata, atomically."""
    import onnx

    from idou.inference.contract import METADATA_KEY

    model = onnx.load_model_from_string(data)
    props = {p.key: p.value for p in model.metadata_props}
    props.update(contract.to_metadata())
    del model.metadata_props[:]
    for key in sorted(props):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, props[key]
    assert METADATA_KEY in props
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    os.close(fd)
    try:
        give_usual_mode(tmp)
        onnx.save(model, tmp)
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _tuned_card(source_card: Any, contract: Any, result: TuneResult, output: Path,
                source_label: str) -> Any:
    """The source model's card (or a new one) with the written model's sha256 and the tuning."""
    from idou.inference.model_card import ModelCard, sha256_file

    card = source_card or ModelCard(name=contract.model_name, version=contract.model_version,
                                    sha256="")
    card.sha256 = sha256_file(output)
    card.thresholds = dict(result.thresholds)
    card.recall_target = result.recall_target
    card.metrics = {**card.metrics, **{f"tuned.{k}": round(v, 4)
                                       for k, v in result.flat_metrics().items()}}
    card.metrics["tuned.on"] = f"{source_label or 'validation'} ({len(result.scenes)} scene(s))"
    card.metrics["tuned.min_area_m2"] = result.min_area_m2
    card.metrics["tuned.date"] = datetime.now(UTC).strftime("%Y-%m-%d")
    return card


def plot_pr_curves(result: TuneResult, folder: str | Path, stem: str) -> list[Path]:
    """One PNG per channel: object precision vs recall over thresholds, the pick marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for c, tuning in result.channels.items():
        recall = [s.recall for _, s in tuning.curve]
        precision = [s.precision for _, s in tuning.curve]
        fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
        ax.plot(recall, precision, marker=".", lw=1)
        ax.axvline(result.recall_target, color="grey", ls="--", lw=0.8,
                   label=f"target recall {result.recall_target:g}")
        ax.scatter([tuning.scores.recall], [tuning.scores.precision], color="red", zorder=3,
                   label=f"threshold {tuning.threshold:g}")
        ax.set(xlabel="object recall", ylabel="object precision", xlim=(0, 1.02),
               ylim=(0, 1.02), title=f"{stem}: {c}")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
        path = folder / f"{stem}.pr_{c}.png"
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def log_to_mlflow(result: TuneResult, model: Path, artifacts: Sequence[Path], *,
                  source_model: Path, training_run_id: str | None = None) -> str:
    """Log a tuning run (params, metrics, curves, tuned model and card); return the run id.

    The store is ``MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db``; the run goes to the
    ``idou-tune`` experiment and is tagged with the training run id when known. Uses an explicit
    client, so mlflow's process-wide tracking URI is left as it was.
    """
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    from idou.inference.model_card import card_paths
    from idou.inference.registry import ensure_experiment, tracking_uri

    client = MlflowClient(tracking_uri=tracking_uri())
    exp_id = ensure_experiment(client, TUNE_EXPERIMENT)
    tags = {"idou.stage": "tune", "mlflow.runName": f"tune {model.name}"}
    if training_run_id:
        tags["idou.training_run_id"] = training_run_id
    run_id = str(client.create_run(exp_id, run_name=f"tune {model.name}", tags=tags).info.run_id)
    try:
        params = {"recall_target": result.recall_target, "min_area_m2": result.min_area_m2,
                  "cover": result.cover, "source_model": source_model.name,
                  "scenes": ",".join(result.scenes)[:500],
                  "n_thresholds": len(next(iter(result.channels.values())).curve)}
        stamp = int(time.time() * 1000)
        points = [Metric(k, float(v), stamp, 0) for k, v in result.flat_metrics().items()]
        points += [Metric(f"curve_{key}_{c}", float(value), stamp, step)
                   for c, tuning in result.channels.items()
                   for step, (t, s) in enumerate(tuning.curve)
                   for key, value in (("threshold", t), ("recall", s.recall),
                                      ("precision", s.precision))]
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
        for start in range(0, len(points), 900):  # one request per 900 points (limit: 1000)
            client.log_batch(run_id, metrics=points[start:start + 900])
        for path in artifacts:
            client.log_artifact(run_id, str(path), "tune")
        for path in (model, *card_paths(model)):
            if path.is_file():
                client.log_artifact(run_id, str(path), "model")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id)
    return run_id


@dataclass
class TuneOutcome:
    """What ``idou tune`` produced."""

    result: TuneResult
    model: Path
    artifacts: list[Path]
    mlflow_run_id: str | None = None


def tune_model(model: str | Path, validation: str | Path, recall_target: float, *,
               output: str | Path | None = None, in_place: bool = False,
               min_area_m2: float = metrics.DEFAULT_MIN_AREA_M2,
               cover: float = metrics.DEFAULT_COVER,
               thresholds: Sequence[float] = DEFAULT_THRESHOLDS, device: str = "cpu",
               crs: str | None = None, batch_size: int = 4, log_mlflow: bool = False,
               gsd: float | None = None) -> TuneOutcome:
    """Tune a model file on validation scenes and write the tuned model, card and curves.

    Args:
        model: the ``.onnx`` file (its card, when beside it, is checked and carried over).
        validation: a scene folder or a folder of them (see :func:`~idou.training.evaluate.
            find_scenes`), or a chip folder (see :mod:`idou.training.chips`; its untyped
            labels tune the new channel only).
        recall_target: object recall each channel must reach.
        output: where to write the tuned model; default ``<stem>.tuned.onnx`` beside it.
        in_place: overwrite ``model`` (and its card) instead.
        min_area_m2: minimum object area.
        cover: the overlap fraction of the object rules.
        thresholds: candidate thresholds.
        device: 'cpu' or 'cuda' for ONNX Runtime.
        crs: CRS of flights that record none.
        batch_size: tiles per model call.
        log_mlflow: log the run to mlflow.
        gsd: metres per pixel of chips without georeferencing (chip folders only).
    """
    from idou.training.chips import chip_grid, find_chips, is_chip_folder, predict_chips
    from idou.training.evaluate import find_scenes, load_model, predict_scenes

    _check_target(recall_target)
    src = Path(model).expanduser()
    target = _tune_target(src, output, in_place, Path(validation))
    chips = is_chip_folder(validation)
    if gsd is not None and not chips:
        raise InvalidOption("--gsd is for chip folders (A/, B/, label/); flights carry their "
                            "own pixel size, so leave --gsd out.")
    if chips:
        chip_pairs = find_chips(validation)
        chip_grid(chip_pairs[0], gsd, crs)  # refuse a missing --gsd before loading the model
    else:
        scenes = find_scenes(validation)
    loaded, session = load_model(str(src), device=device)
    predictions = (predict_chips(loaded, session, chip_pairs, gsd=gsd, crs=crs,
                                 batch_size=batch_size) if chips else
                   predict_scenes(loaded, session, scenes, crs=crs, batch_size=batch_size))
    result = tune_predictions(
        predictions, recall_target,
        thresholds=thresholds, min_area_m2=min_area_m2, cover=cover,
        current=dict(zip(CHANNELS, loaded.contract.thresholds, strict=True)))
    written = write_tuned_model(loaded, result, target, source_label=Path(validation).name)
    return _outcome(result, written, src, loaded.contract.mlflow_run_id, log_mlflow)


def _tune_target(src: Path, output: str | Path | None, in_place: bool, validation: Path
                 ) -> Path:
    """Where the tuned model goes, refusing an output that is the model itself or not idou's."""
    if in_place and output is not None and Path(output).resolve() != src.resolve():
        raise InvalidOption("pass either -o TUNED.onnx or --in-place, not both.")
    target = src if in_place else Path(output) if output is not None else default_output(src)
    if not in_place and target.resolve() == src.resolve():
        raise OutputConflict(f"-o {target} is the model itself; pass --in-place to overwrite "
                             "it, or another -o path.")
    if not in_place:  # a tuned model (and card) idou wrote may be replaced, nothing else
        from idou.training.owned_models import check_model_targets

        check_model_targets(target, True, True, [src, validation])
    return target


def _outcome(result: TuneResult, written: Path, src: Path, training_run_id: str | None,
             log_mlflow: bool) -> TuneOutcome:
    """The PR curves and JSON report beside the tuned model, logged to mlflow when asked."""
    stem = written.stem
    artifacts = plot_pr_curves(result, written.parent, stem)
    report = written.with_name(f"{stem}.tune.json")
    report.write_text(json.dumps(result.to_dict(), indent=1, ensure_ascii=False) + "\n",
                      encoding="utf-8")
    artifacts.append(report)
    run_id = None
    if log_mlflow:
        run_id = log_to_mlflow(result, written, artifacts, source_model=src,
                               training_run_id=training_run_id)
    return TuneOutcome(result=result, model=written, artifacts=artifacts, mlflow_run_id=run_id)


def mlflow_requested(flag: bool) -> bool:
    """Log to mlflow when ``--mlflow`` is given or ``MLFLOW_TRACKING_URI`` is set."""
    return flag or bool(os.environ.get("MLFLOW_TRACKING_URI"))

