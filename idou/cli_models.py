"""`idou` subcommands of the models stage: ``tune``, ``evaluate``, ``register``.

Thin: options are parsed here, the work is done in ``idou.training.tune``,
``idou.training.evaluate`` and ``idou.inference.registry`` (imported inside the commands, so
importing the CLI never pulls in mlflow, matplotlib or torch).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from idou.cli_text import plain, say
from idou.errors import InvalidOption, UserInputError

if TYPE_CHECKING:
    from idou.training.evaluate import Evaluation
    from idou.training.tune import TuneResult

_out = Console()


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def _print_table(table: Table) -> None:
    """Print a table whole, wider than the terminal (or a log's 80 columns) when it must be."""
    natural = _out.measure(table, options=_out.options.update_width(1000)).maximum
    usual = _out.width
    _out.width = max(usual, natural)
    try:
        _out.print(table, crop=False)
    finally:
        _out.width = usual


def _tune_table(result: TuneResult) -> Table:
    table = Table(title=f"idou tune: object recall target {result.recall_target:g} "
                        f"(min area {result.min_area_m2:g} m², cover {result.cover:.0%})")
    for col in ("channel", "threshold", "recall", "precision", "found/true", "false alarms",
                "pixel P", "pixel R", "pixel F1", "pixel IoU"):
        table.add_column(col, justify="left" if col == "channel" else "right")
    for c, t in result.channels.items():
        s, p = t.final, t.pixels
        recall = _pct(s.recall) + ("" if t.reached else " [red](no truth: kept)[/]" if t.no_truth
                                   else " [red](target not reached)[/]")
        table.add_row(c, f"{t.threshold:g}", recall, _pct(s.precision),
                      f"{s.n_found}/{s.n_true}", f"{s.n_false_alarm}/{s.n_pred}",
                      _pct(p.precision), _pct(p.recall), _pct(p.f1), _pct(p.iou))
    return table


def _evaluation_tables(ev: Evaluation) -> list[Table]:
    objects = Table(title=f"objects (min area {ev.min_area_m2:g} m², cover {ev.cover:.0%})")
    cols = ["channel", "threshold", "recall", "precision", "found/true", "false alarms"]
    if ev.thresholds is None:
        cols.remove("threshold")
    for col in cols:
        objects.add_column(col, justify="left" if col == "channel" else "right")
    for c, s in ev.channels.items():
        row = [c, _pct(s.recall), _pct(s.precision), f"{s.n_found}/{s.n_true}",
               f"{s.n_false_alarm}/{s.n_pred}"]
        if ev.thresholds is not None:
            row.insert(1, f"{ev.thresholds[c]:g}")
        objects.add_row(*row)
    tables = [objects]
    if ev.with_map is not None:
        mapped = Table(title=f"objects with the building map (candidates only, footprint "
                             f"threshold {ev.footprint_threshold:g})")
        for col in ("channel", "recall", "precision", "found/true", "false alarms"):
            mapped.add_column(col, justify="left" if col == "channel" else "right")
        for c, s in ev.with_map.items():
            mapped.add_row(c, _pct(s.recall), _pct(s.precision), f"{s.n_found}/{s.n_true}",
                           f"{s.n_false_alarm}/{s.n_pred}")
        tables.append(mapped)
    if ev.change_types:
        types = Table(title="recall per change type")
        for col in ("change type", "recall", "found/true"):
            types.add_column(col, justify="left" if col == "change type" else "right")
        for kind, s in ev.change_types.items():
            types.add_row(kind, _pct(s.recall), f"{s.n_found}/{s.n_true}")
        tables.append(types)
    if ev.pixels is not None:
        pixels = Table(title="pixels")
        for col in ("channel", "precision", "recall", "F1", "IoU"):
            pixels.add_column(col, justify="left" if col == "channel" else "right")
        for c, p in ev.pixels.items():
            pixels.add_row(c, _pct(p.precision), _pct(p.recall), _pct(p.f1), _pct(p.iou))
        tables.append(pixels)
    if ev.parcels is not None:
        parcels = Table(title="parcels (筆)")
        for col in ("recall", "found/changed"):
            parcels.add_column(col, justify="right")
        parcels.add_row(_pct(ev.parcel_recall), f"{ev.parcels[1]}/{ev.parcels[0]}")
        tables.append(parcels)
    return tables


def tune(
    model: Path = typer.Argument(..., help="The ONNX model (its card beside it is updated)."),
    validation: Path = typer.Argument(
        ..., help="A folder with two flights (flight_*.tif, or before.tif/after.tif) and "
                  "truth.gpkg, or a folder of such folders, or a chip folder (A/, B/, label/)."),
    recall: float = typer.Option(..., "--recall", help="Object recall each channel must reach."),
    output: Path | None = typer.Option(
        None, "-o", "--output",
        help="Tuned model to write (default: MODEL.tuned.onnx beside MODEL)."),
    in_place: bool = typer.Option(False, "--in-place", help="Overwrite MODEL and its card."),
    min_area: float = typer.Option(8.0, "--min-area", help="Minimum object area in m²."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (ONNX Runtime)."),
    crs: str | None = typer.Option(None, "--crs", help="CRS of flights that record none."),
    gsd: float | None = typer.Option(
        None, "--gsd", help="Metres per pixel of chips without georeferencing (chip folders)."),
    use_mlflow: bool = typer.Option(
        False, "--mlflow",
        help="Log to mlflow (sqlite:///mlflow.db unless MLFLOW_TRACKING_URI is set). Logging is "
             "also on whenever MLFLOW_TRACKING_URI is set."),
) -> None:
    """Pick the highest thresholds that reach an object recall; write them into the model.

    Runs the model with detect's engine on the validation flights, sweeps thresholds
    0.05..0.95 per channel (new, demolished) and saves the tuned model, its card, a PR curve
    PNG per channel and a JSON report beside the output. On a chip folder (untyped change
    labels) only the new channel is tuned; the demolished threshold is kept. Scenes holding a
    building map (buildings_*.gpkg) also tune the footprint threshold of `idou detect
    --buildings`.
    """
    from idou.training.tune import mlflow_requested, tune_model

    outcome = tune_model(model, validation, recall, output=output, in_place=in_place,
                         min_area_m2=min_area, device=device, crs=crs, gsd=gsd,
                         log_mlflow=mlflow_requested(use_mlflow))
    _print_table(_tune_table(outcome.result))
    fp = outcome.result.building_map
    if fp is not None:
        plain(_out, f"building map (buildings_*.gpkg in the scenes): footprint threshold "
                    f"{fp.threshold:g}, 滅失 recall {fp.scores.recall:.3f}, precision "
                    f"{fp.scores.precision:.3f} ({fp.scores.n_found}/{fp.scores.n_true} found, "
                    f"{fp.scores.n_false_alarm} false alarms)"
                    + ("" if fp.reached else " (recall target not reached)"))
    plain(_out, f"tuned model: {outcome.model}")
    for path in outcome.artifacts:
        plain(_out, f"  {path}")
    if outcome.mlflow_run_id:
        _out.print(f"mlflow run: {outcome.mlflow_run_id}")
    for c, t in outcome.result.channels.items():
        if t.no_truth:
            say(_out, "warning:", "yellow", f"the validation data hold no true {c} object; "
                f"the model's {c} threshold {t.threshold:g} was kept (add scenes with such "
                "changes).")
        elif not t.reached:
            say(_out, "warning:", "yellow", f"{c}: the recall target was not reached; the "
                f"threshold with the best recall ({t.threshold:g}) was kept.")


def evaluate(  # long mostly by its typer options, one per flag
    inputs: list[str] = typer.Argument(
        ..., metavar="(RESULT.gpkg | MODEL BEFORE AFTER | MODEL VALIDATION)",
        help="A detection GeoPackage, or a model (file, 'default' or models:/NAME@ALIAS) with "
             "a flight pair, or a model with a validation folder or a chip folder (A/, B/, "
             "label/)."),
    truth: Path | None = typer.Option(
        None, "--truth", help="Truth GeoPackage (needed except with a validation folder)."),
    min_area: float = typer.Option(8.0, "--min-area", help="Minimum object area in m²."),
    parcel_key: str = typer.Option("地番", "--parcel-key", help="Parcel id column."),
    json_out: Path | None = typer.Option(None, "--json", help="Also save the figures as JSON."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (for a model)."),
    crs: str | None = typer.Option(None, "--crs", help="CRS of flights that record none."),
    gsd: float | None = typer.Option(
        None, "--gsd", help="Metres per pixel of chips without georeferencing (chip folders)."),
    buildings: Path | None = typer.Option(
        None, "--buildings", help="With MODEL BEFORE AFTER: also score with this building map "
        "(a validation folder's buildings_*.gpkg is used by itself)."),
) -> None:
    """Object, per-type, pixel and parcel recall/precision against truth (and with the
    building map when one is at hand).

    A chip folder's untyped change labels score the new channel only.
    """
    result = _evaluation(inputs, truth, min_area, parcel_key, device, crs, gsd, buildings)
    _print_evaluation(result, json_out)


def _evaluation(inputs: list[str], truth: Path | None, min_area: float, parcel_key: str,
                device: str, crs: str | None, gsd: float | None, buildings: Path | None) -> Any:
    """The evaluation the ``inputs`` ask for (a GeoPackage, a model on a pair, scenes or chips)."""
    from idou.training import evaluate as ev
    from idou.training.chips import evaluate_chip_folder, is_chip_folder

    result: Any
    chips = len(inputs) == 2 and is_chip_folder(inputs[1])
    if gsd is not None and not chips:
        raise InvalidOption("--gsd is for chip folders (A/, B/, label/); flights carry their "
                            "own pixel size, so leave --gsd out.")
    if chips and truth is not None:
        raise UserInputError("a chip folder carries its truth in label/; leave --truth out.")
    if chips:
        result = evaluate_chip_folder(inputs[0], inputs[1], gsd=gsd, min_area_m2=min_area,
                                      device=device, crs=crs)
    elif len(inputs) == 1:
        if truth is None:
            raise UserInputError("evaluating a GeoPackage needs --truth truth.gpkg.")
        result = ev.evaluate_geopackage(inputs[0], truth, min_area_m2=min_area,
                                        parcels_key=parcel_key)
    elif len(inputs) == 2:
        result = ev.evaluate_model(inputs[0], scenes=ev.find_scenes(inputs[1]),
                                   min_area_m2=min_area, device=device, crs=crs)
    elif len(inputs) == 3:
        if truth is None:
            raise UserInputError("evaluating a model on a flight pair needs --truth truth.gpkg.")
        result = ev.evaluate_model(inputs[0], pair=(inputs[1], inputs[2], truth),
                                   min_area_m2=min_area, device=device, crs=crs,
                                   buildings=buildings)
    else:
        raise UserInputError("pass RESULT.gpkg, or MODEL BEFORE AFTER, or MODEL VALIDATION.")
    return result


def _print_evaluation(result: Any, json_out: Path | None) -> None:
    """The evaluation's tables (and its JSON when asked)."""
    plain(_out, f"evaluated: {result.source}")
    if result.truth_outside:
        _out.print(f"{result.truth_outside} truth object(s) lie outside the area the run "
                   "processed (coverage layer) and are left out.")
    if result.not_candidates:
        _out.print(f"{result.not_candidates} その他の変化 row(s) (change the building map does "
                   "not support) are not candidates and are left out.")
    for table in _evaluation_tables(result):
        _print_table(table)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result.to_dict(), indent=1, ensure_ascii=False) + "\n",
                            encoding="utf-8")
        plain(_out, f"saved {json_out}")


def register_cmd(
    model: Path = typer.Argument(..., help="The ONNX model; its card must be beside it."),
    name: str = typer.Option("idou", "--name", help="Registered model name."),
    alias: str = typer.Option("champion", "--alias", help="Alias to point at the new version."),
    run_id: str | None = typer.Option(
        None, "--run-id", help="Log into this mlflow run (default: the model's training run "
                               "if in this store, else a new run)."),
) -> None:
    """Put a model and its card in the mlflow model registry and set an alias.

    The store is MLFLOW_TRACKING_URI, or sqlite:///mlflow.db in the working directory. Use
    the model with `idou detect --model models:/NAME@ALIAS`.
    """
    from idou.inference.registry import register_model, tracking_uri

    version = register_model(model, name=name, alias=alias or None, run_id=run_id)
    plain(_out, f"registered {version.name} version {version.version} "
          f"(sha256 {version.sha256[:12]}…) in {tracking_uri()}")
    plain(_out, f"use it with: idou detect --model {version.uri}")


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the `idou` application."""
    app.command("tune")(tune)
    app.command("evaluate")(evaluate)
    app.command("register")(register_cmd)
