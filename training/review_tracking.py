"""Field-review outcomes to mlflow: the deployed model's observed precision and recall.

`idou harvest` (``idou.geo.review.harvest``) turns a reviewed GeoPackage into labels; this logs what
it observed to the experiment ``idou-field-review`` when a tracking store is set. It lives in
training because geo never imports mlflow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from idou.geo.review.harvest import HarvestReport


def log_harvest(report: HarvestReport) -> None:
    """Log the observed precision/recall when MLFLOW_TRACKING_URI is set (lazy import)."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        return
    import mlflow

    mlflow.set_experiment("idou-field-review")
    with mlflow.start_run(run_name=f"harvest {Path(report.source).stem}"):
        mlflow.set_tags({"idou.stage": "harvest", "idou.source": report.source})
        for key, value in report.model.items():
            mlflow.set_tag(f"model.{key}", json.dumps(value, ensure_ascii=False)
                           if not isinstance(value, str) else value)
        metrics: dict[str, float] = {f"count_{k}": float(v) for k, v in report.counts.items()}
        if report.precision is not None:
            metrics["observed_precision"] = report.precision
        if report.recall is not None:
            metrics["observed_recall"] = report.recall
        for ch in ("new", "demolished"):
            p = report.precision_by_channel.get(ch)
            r = report.recall_by_channel.get(ch)
            if p is not None:
                metrics[f"observed_precision_{ch}"] = p
            if r is not None:
                metrics[f"observed_recall_{ch}"] = r
        mlflow.log_metrics(metrics)
