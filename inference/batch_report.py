"""What a batch run tells its operator: a pollable status file, a log file and an HTML summary.

``OUT/status.json`` is rewritten atomically after each block, so a monitor never reads half a
file::

    {"state": "running", "blocks": {"total": 1900, "done": 412, "failed": 0, ...},
     "km2": {"total": 311.6, "done": 67.6}, "mpx_per_s": 2.1, "eta_s": 21480, ...}

Pixels count the aligned grid (the model's GSD); ``mpx_per_s`` counts input pixels (the after
flight's resolution), as `idou detect` reports its throughput. ``state`` is one of
``planning``, ``running``, ``finishing`` (mosaic, polygons, GeoPackage), ``done``, ``failed``
(blocks failed; re-run to retry them), ``interrupted`` (Ctrl-C or SIGTERM; re-run to resume)
or ``error`` (the run stopped).
"""

from __future__ import annotations

import html
import json
import logging
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from idou.geo.files.file_mode import give_usual_mode
from idou.geo.review.report_numbers import format_area, round_area

STATUS_NAME = "status.json"
SUMMARY_NAME = "summary.html"
LOG_NAME = "idou-batch.log"
LOGGER = "idou.batch"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        give_usual_mode(tmp)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False, indent=2, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class StatusFile:
    """Keeps ``OUT/status.json`` up to date.

    Args:
        out_dir: the run's output folder.
        total_pixels: pixels of the aligned grid (one date).
        pixel_area_m2: ground area of one grid pixel.
        static: fields written unchanged every time (config, grid, model, ...).
        input_scale: input pixels (after flight) per grid pixel, for Mpx/s.
    """

    def __init__(self, out_dir: Path, total_pixels: int, pixel_area_m2: float,
                 static: dict[str, Any] | None = None, input_scale: float = 1.0) -> None:
        self.path = Path(out_dir) / STATUS_NAME
        self.total_pixels = total_pixels
        self.pixel_area_m2 = pixel_area_m2
        self.input_scale = input_scale
        self.static = dict(static or {})
        self.started = time.time()
        # two sittings can start within the same second (a quick resume): a unique id keys them
        self.sitting_id = uuid.uuid4().hex
        self._run_pixels = 0
        self.last: dict[str, Any] = {}

    def add_pixels(self, pixels: int) -> None:
        """Count pixels computed by this run (for Mpx/s and the ETA)."""
        self._run_pixels += pixels

    def update(self, state: str, counts: dict[str, int], done_pixels: int,
               **extra: Any) -> dict[str, Any]:
        """Rewrite the status file and return what was written."""
        now = time.time()
        elapsed = now - self.started
        rate = self._run_pixels / elapsed if elapsed > 0 and self._run_pixels else 0.0
        remaining = max(0, self.total_pixels - done_pixels)
        eta = remaining / rate if rate > 0 else None
        if state in ("done",):
            eta = 0.0
        data: dict[str, Any] = {
            "state": state,
            "updated_at": _iso(now),
            "started_at": _iso(self.started),
            "sitting_id": self.sitting_id,
            "elapsed_s": round(elapsed, 1),
            "blocks": {k: counts.get(k, 0) for k in
                       ("total", "done", "failed", "running", "pending")},
            "pixels": {"total": self.total_pixels, "done": done_pixels,
                       "this_run": self._run_pixels,
                       "input_this_run": round(self._run_pixels * self.input_scale),
                       "input_total": round(self.total_pixels * self.input_scale)},
            "km2": {"total": round(self.total_pixels * self.pixel_area_m2 / 1e6, 4),
                    "done": round(done_pixels * self.pixel_area_m2 / 1e6, 4)},
            "mpx_per_s": round(rate * self.input_scale / 1e6, 3),
            "eta_s": None if eta is None else round(eta, 1),
            "pid": os.getpid(),
            **self.static,
            **extra,
        }
        write_json_atomic(self.path, data)
        self.last = data
        return data


def read_status(out_dir: str | Path) -> dict[str, Any]:
    """The last status a run wrote (an empty dict when none)."""
    path = Path(out_dir) / STATUS_NAME
    if not path.is_file():
        return {}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def setup_run_log(out_dir: Path, level: int = logging.INFO) -> logging.Handler:
    """Append the ``idou`` loggers' records to ``OUT/idou-batch.log``; returns the handler."""
    out_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out_dir / LOG_NAME, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(level)
    root = logging.getLogger("idou")
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > level:
        root.setLevel(level)
    return handler


def close_run_log(handler: logging.Handler) -> None:
    """Detach and close a handler from `setup_run_log`."""
    logging.getLogger("idou").removeHandler(handler)
    handler.close()


def changes_by_class(gpkg: Path, layer: str = "changes") -> dict[str, dict[str, float]]:
    """Count and area (m²) of changes per class in a GeoPackage layer ({} when unreadable)."""
    try:
        import pyogrio

        frame = pyogrio.read_dataframe(gpkg, layer=layer)
    except Exception:  # noqa: BLE001 - a summary never fails the run
        return {}
    column = next((c for c in ("異動区分", "change_type", "change_class", "class", "type")
                   if c in frame.columns), None)
    out: dict[str, dict[str, float]] = {}
    if column is None:
        return {"all": {"count": len(frame), "area_m2": round_area(frame.geometry.area.sum())}}
    for name, group in frame.groupby(column):
        out[str(name)] = {"count": len(group), "area_m2": round_area(group.geometry.area.sum())}
    return out


def sitting(status: dict[str, Any]) -> dict[str, Any]:
    """One sitting (one start of ``idou batch`` on a folder) as ``status.json`` last saw it."""
    return {"started_at": status.get("started_at", ""),
            "sitting_id": status.get("sitting_id") or status.get("started_at", ""),
            "updated_at": status.get("updated_at", ""),
            "elapsed_s": float(status.get("elapsed_s") or 0.0),
            "input_px": int(status.get("pixels", {}).get("input_this_run") or 0),
            "state": status.get("state", "")}


def merge_sitting(sittings: list[dict[str, Any]], current: dict[str, Any]
                  ) -> list[dict[str, Any]]:
    """``sittings`` with ``current`` replacing the entry of the same sitting, or appended."""
    kept = [s for s in sittings if _sitting_key(s) != _sitting_key(current)]
    return sorted([*kept, current], key=lambda s: str(s.get("started_at")))


def _sitting_key(one: dict[str, Any]) -> str:
    """A sitting's identity: its id, or its start for sittings saved before ids existed."""
    return str(one.get("sitting_id") or one.get("started_at") or "")


def _rate(sittings: list[dict[str, Any]]) -> float:
    seconds = sum(float(s.get("elapsed_s") or 0.0) for s in sittings)
    return sum(int(s.get("input_px") or 0) for s in sittings) / 1e6 / seconds if seconds else 0.0


def _model_row(run_info: dict[str, Any], card_href: str | None) -> str:
    """Name, version, sha256 and thresholds of the model, with a link to its card."""
    esc = html.escape
    name = run_info.get("model_name") or run_info.get("model") or ""
    sha = str(run_info.get("model_sha256") or "")
    thresholds = ", ".join(f"{channel} {run_info[f'threshold_{channel}']:g}"
                           for channel in ("new", "demolished")
                           if isinstance(run_info.get(f"threshold_{channel}"), int | float))
    text = (f"{esc(str(name))} {esc(str(run_info.get('model_version') or ''))}, sha256 "
            f"<code>{esc(sha[:16])}…</code>" + (f", thresholds {esc(thresholds)}"
                                               if thresholds else ""))
    if card_href:
        text += f' — <a href="{esc(card_href)}">model card</a>'
    return text


def write_summary_html(path: Path, status: dict[str, Any], classes: dict[str, dict[str, float]],
                       run_info: dict[str, Any], failed: list[tuple[str, str]] | None = None,
                       sittings: list[dict[str, Any]] | None = None,
                       card_href: str | None = None) -> Path:
    """A one-page HTML summary of a run: blocks, km², Mpx/s, changes by class, run_info.

    ``sittings`` (each start of the run, resumes included, oldest first) make the start,
    elapsed time and Mpx/s those of the whole run, with one row per sitting below; the model
    is one row (name, version, sha256, thresholds) linking ``card_href``.
    """
    esc = html.escape
    sittings = merge_sitting(list(sittings or []), sitting(status)) if status.get(
        "started_at") else list(sittings or [])
    parts = [
        "<!doctype html><html lang='ja'><head><meta charset='utf-8'>",
        "<title>idou batch summary</title><style>body{font-family:sans-serif;margin:2em}"
        "table{border-collapse:collapse;margin-bottom:1.5em}td,th{border:1px solid #999;"
        "padding:4px 8px;text-align:left}th{background:#eee}</style></head><body>",
        "<h1>idou batch — 異動判読 一括処理</h1>",
        "<h2>Run</h2><table>",
        *(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>"
          for k, v in _run_rows(status, sittings)),
        f"<tr><th>モデル model</th><td>{_model_row(run_info, card_href)}</td></tr>",
        "</table>",
    ]
    if len(sittings) > 1:
        parts += _sittings_table(sittings)
    parts += _classes_table(classes)
    if failed:
        parts.append("<h2>Failed blocks</h2><table><tr><th>block</th><th>error</th></tr>")
        parts.extend(f"<tr><td>{esc(b)}</td><td>{esc(e)}</td></tr>" for b, e in failed)
        parts.append("</table>")
    parts += _run_info_table(run_info)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _run_rows(status: dict[str, Any], sittings: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """The run table's rows; with several sittings, the whole run's start, time and rate."""
    blocks = status.get("blocks", {})
    km2 = status.get("km2", {})
    whole = len(sittings) > 1
    elapsed = (sum(float(s["elapsed_s"]) for s in sittings) if whole
               else status.get("elapsed_s", 0))
    return [
        ("状態 state", status.get("state", "")),
        ("ブロック blocks", f"{blocks.get('done', 0)} / {blocks.get('total', 0)} done, "
                         f"{blocks.get('failed', 0)} failed"),
        ("面積 km²", f"{km2.get('done', 0):.3f} of {km2.get('total', 0):.3f}"),
        ("処理速度 Mpx/s", f"{_rate(sittings) if whole else status.get('mpx_per_s', 0):.2f}"),
        ("経過 elapsed", f"{elapsed:.0f} s" + (f" in {len(sittings)} sittings" if whole
                                              else "")),
        ("開始 started", sittings[0]["started_at"] if whole else status.get("started_at", "")),
        ("更新 updated", status.get("updated_at", "")),
    ]


def _sittings_table(sittings: list[dict[str, Any]]) -> list[str]:
    esc = html.escape
    parts = ["<h2>実行回 Sittings</h2><table><tr><th>#</th><th>開始 started</th>"
             "<th>最終更新 last update</th><th>経過 elapsed</th><th>Mpx</th>"
             "<th>Mpx/s</th><th>終了時の状態 state</th></tr>"]
    for number, one in enumerate(sittings, 1):
        parts.append(
            f"<tr><td>{number}</td><td>{esc(str(one['started_at']))}</td>"
            f"<td>{esc(str(one['updated_at']))}</td><td>{one['elapsed_s']:.0f} s</td>"
            f"<td>{one['input_px'] / 1e6:.1f}</td><td>{_rate([one]):.2f}</td>"
            f"<td>{esc(str(one['state']))}</td></tr>")
    parts.append("</table>")
    return parts


def _classes_table(classes: dict[str, dict[str, float]]) -> list[str]:
    parts = ["<h2>異動区分 Changes by class</h2><table>"
             "<tr><th>異動区分 class</th><th>件数 count</th><th>面積㎡ area m²</th></tr>"]
    for name, values in sorted(classes.items()):
        parts.append(f"<tr><td>{html.escape(name)}</td><td>{int(values['count'])}</td>"
                     f"<td>{format_area(values['area_m2'])}</td></tr>")
    if not classes:
        parts.append("<tr><td colspan='3'>none</td></tr>")
    parts.append("</table>")
    return parts


def _run_info_table(run_info: dict[str, Any]) -> list[str]:
    parts = ["<h2>run_info</h2><table>"]
    for key, value in run_info.items():
        if key == "model_card":  # the model row above names it and links the whole card
            continue
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                               default=str)
        parts.append(f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(text)}</td></tr>")
    parts.append("</table></body></html>")
    return parts


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
