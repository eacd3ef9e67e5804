"""Turn a reviewed GeoPackage into training labels and the deployed model's observed accuracy.

Outcome of each change (its 調査状況 by
:func:`idou.geo.review.review_status.change_results`, the rule
``idou summary`` counts by: its own, or when that is 未確認 the strongest entered on the parcels
it lies on):

* 課税対象 and 対象外 → ``positive`` (対象外 is a real change that is not taxable);
* 誤検出 → ``negative``;
* 要再調査 → ``ignore`` (kept so training can mask the area out);
* 未確認 → skipped (no label).

Polygons staff drew in ``missed`` → ``positive`` with ``source = missed`` and their ``channel``
(``new`` when empty). The label's channel is the change's detection channel: ``new`` for
新築/増築/the new half of 建替, ``demolished`` for 滅失/the old half of 建替.

Output, read by the training datasets: ``DIR/labels.gpkg`` layer ``labels`` (``channel``,
``label``, ``source``, ``change_id``, ``異動区分``, geometry in the flight CRS) and
``DIR/harvest.json`` (orthophoto paths and CRS from ``run_info``, counts, observed precision
= confirmed / (confirmed + false alarms) and recall = found / (found + missed)).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio

from idou.geo.review.gpkg_output import read_run_info
from idou.geo.review.gpkg_sqlite import connect
from idou.geo.review.review_fields import (
    STATUS,
    STATUS_FALSE_ALARM,
    STATUS_NOT_TAXABLE,
    STATUS_RECHECK,
    STATUS_TAXABLE,
    STATUS_VALUES,
)
from idou.geo.review.review_status import (
    change_results,
    normalise_values,
    read_review_layers,
)

LABEL_BY_STATUS = {STATUS_TAXABLE: "positive", STATUS_NOT_TAXABLE: "positive",
                   STATUS_FALSE_ALARM: "negative", STATUS_RECHECK: "ignore"}
LABEL_COLUMNS = ["channel", "label", "source", "change_id", "異動区分"]
_CHANNEL_ALIASES = {"new": "new", "demolished": "demolished", "新築": "new", "増築": "new",
                    "滅失": "demolished"}


@dataclass
class HarvestReport:
    """What ``harvest.json`` holds."""

    source: str
    before: str | None
    after: str | None
    crs: str | None
    model: dict[str, object]
    counts: dict[str, int]
    counts_by_channel: dict[str, dict[str, int]]
    precision: float | None
    recall: float | None
    precision_by_channel: dict[str, float | None] = field(default_factory=dict)
    recall_by_channel: dict[str, float | None] = field(default_factory=dict)
    unknown_values: dict[str, dict[str, int]] = field(default_factory=dict)


def harvest(reviewed: Path, out_dir: Path) -> HarvestReport:
    """Write ``out_dir/labels.gpkg`` and ``out_dir/harvest.json`` from a reviewed GeoPackage.

    Raises:
        UserInputError: the file is missing or is not an idou review GeoPackage.
    """
    reviewed = Path(reviewed)
    review = read_review_layers(reviewed, "the reviewed .gpkg written by idou detect")
    changes, parcels, layers = review.changes, review.parcels, review.names
    missed = pyogrio.read_dataframe(reviewed, layer="missed") if "missed" in layers else None
    info = read_run_info(reviewed) if _has_table(reviewed) else {}

    unknown: dict[str, dict[str, int]] = {}
    for layer, frame, column, known in (
            ("changes", changes, STATUS, STATUS_VALUES),
            ("candidate_parcels", parcels, STATUS, STATUS_VALUES),
            ("missed", missed, "channel", ("new", "demolished"))):
        if frame is not None and column in frame:
            frame[column] = normalise_values(frame[column])
            if layer == "missed":  # "NEW", "滅失": what staff type in QGIS
                frame[column] = frame[column].map(
                    lambda v: _CHANNEL_ALIASES.get(v.lower(), v) if isinstance(v, str) else None)
            found = Counter(v for v in frame[column].dropna() if v not in known)
            if found:
                unknown[f"{layer}.{column}"] = dict(sorted(found.items()))
    reviewed_changes = label_changes(changes, parcels)
    missed_labels = _missed_labels(missed, changes.crs)
    labels = gpd.GeoDataFrame(pd.concat([reviewed_changes, missed_labels], ignore_index=True),
                              geometry="geometry", crs=changes.crs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "labels.gpkg"
    temp = out_dir / ".labels.tmp.gpkg"
    temp.unlink(missing_ok=True)
    pyogrio.write_dataframe(labels, temp, layer="labels", driver="GPKG",
                            geometry_type="MultiPolygon", promote_to_multi=True)
    os.replace(temp, target)

    report = _report(reviewed, info, labels, changes.crs)
    report.unknown_values = unknown
    (out_dir / "harvest.json").write_text(
        json.dumps(asdict(report), ensure_ascii=False, indent=2), encoding="utf-8")
    return report


def unknown_values_sentences(report: HarvestReport, reviewed: Path) -> list[str]:
    """One warning sentence per column holding values harvest does not know (rows skipped)."""
    out = []
    for where, found in report.unknown_values.items():
        layer, column = where.split(".", 1)
        known = STATUS_VALUES if column == STATUS else ("new", "demolished")
        shown = ", ".join(f"'{v}' ({n})" for v, n in list(found.items())[:5])
        action = ("were not used as labels" if column == STATUS
                  else "were taken as new")
        out.append(f"{Path(reviewed).name}: {sum(found.values())} rows of layer {layer} have a "
                   f"{column} idou does not know ({shown}); they {action}: set one of "
                   f"{', '.join(known)} and harvest again.")
    return out


def _has_table(path: Path) -> bool:
    with connect(path, read_only=True) as con:
        row = con.execute("SELECT 1 FROM sqlite_master WHERE name = 'run_info'").fetchone()
    return row is not None


def label_changes(changes: gpd.GeoDataFrame, parcels: gpd.GeoDataFrame | None
                  ) -> gpd.GeoDataFrame:
    """One label row per reviewed change (unchecked changes are left out)."""
    labels = change_results(changes, parcels).map(LABEL_BY_STATUS)
    keep = labels.notna()
    out = gpd.GeoDataFrame({
        "channel": changes.loc[keep, "channel"].astype(str),
        "label": labels[keep].astype(str),
        "source": "review",
        "change_id": changes.loc[keep, "change_id"].astype(str)
        if "change_id" in changes else "",
        "異動区分": changes.loc[keep, "異動区分"].astype(str) if "異動区分" in changes else "",
    }, geometry=changes.geometry[keep], crs=changes.crs)
    return out.reset_index(drop=True)


def _missed_labels(missed: gpd.GeoDataFrame | None, crs: object) -> gpd.GeoDataFrame:
    if missed is None or missed.empty:
        return gpd.GeoDataFrame({c: pd.Series(dtype=object) for c in LABEL_COLUMNS},
                                geometry=gpd.GeoSeries([], crs=crs), crs=crs)
    missed = missed[missed.geometry.notna() & ~missed.geometry.is_empty]
    if missed.crs is not None and crs is not None and missed.crs != crs:
        missed = missed.to_crs(crs)
    channel = missed["channel"].fillna("new").astype(str) if "channel" in missed \
        else pd.Series("new", index=missed.index)
    channel = channel.where(channel.isin(["new", "demolished"]), "new")
    return gpd.GeoDataFrame({"channel": channel, "label": "positive", "source": "missed",
                             "change_id": "", "異動区分": channel.map(
                                 {"new": "新築", "demolished": "滅失"})},
                            geometry=missed.geometry, crs=crs).reset_index(drop=True)


def _ratio(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def _report(reviewed: Path, info: dict[str, object], labels: gpd.GeoDataFrame,
            crs: object) -> HarvestReport:
    def count(frame: pd.DataFrame) -> dict[str, int]:
        review = frame[frame["source"] == "review"]
        confirmed = int((review["label"] == "positive").sum())
        false_alarms = int((review["label"] == "negative").sum())
        return {"confirmed": confirmed, "false_alarms": false_alarms,
                "ignored": int((review["label"] == "ignore").sum()),
                "missed": int((frame["source"] == "missed").sum())}

    counts = count(labels)
    by_channel = {ch: count(labels[labels["channel"] == ch]) for ch in ("new", "demolished")}
    model: dict[str, object] = {k: v for k, v in info.items() if k.startswith("model")
                                or k.startswith("threshold") or k.startswith("recall")}
    crs_text = str(info.get("crs") or (gpd.GeoSeries([], crs=crs).crs.to_string()
                                        if crs is not None else None))
    return HarvestReport(
        source=str(reviewed.resolve()),
        before=_path_from(info, "orthophoto_before", "before", "before_path"),
        after=_path_from(info, "orthophoto_after", "after", "after_path"),
        crs=crs_text, model=model, counts=counts, counts_by_channel=by_channel,
        precision=_ratio(counts["confirmed"], counts["confirmed"] + counts["false_alarms"]),
        recall=_ratio(counts["confirmed"], counts["confirmed"] + counts["missed"]),
        precision_by_channel={ch: _ratio(c["confirmed"], c["confirmed"] + c["false_alarms"])
                              for ch, c in by_channel.items()},
        recall_by_channel={ch: _ratio(c["confirmed"], c["confirmed"] + c["missed"])
                           for ch, c in by_channel.items()},
    )


def _path_from(info: dict[str, object], *keys: str) -> str | None:
    for key in keys:
        value = info.get(key)
        if isinstance(value, dict):
            value = value.get("path") or value.get("label")
        if value:
            return str(value)
    return None


__all__ = ["HarvestReport", "harvest", "label_changes", "normalise_values",
           "unknown_values_sentences"]
