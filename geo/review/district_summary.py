"""Per-district (大字/町丁目 = ``地区``) summary of a run: a CSV and a static HTML report.

Each change counts once, in the district (``地区``: 大字/町丁目, the 所在 without its 小字) of
the parcel holding most of it (from the ``changes`` layer, else found from
``candidate_parcels``); changes on no parcel go to ``(筆なし)``. Changes marked
``再実行で未検出`` by a later run are left out. A change's 調査状況 is counted by the rule
``idou harvest`` uses (:mod:`idou.geo.review.review_status`): a result entered on its candidate
parcel counts when the change itself is 未確認. Areas are summed exactly and rounded once
(:mod:`idou.geo.review.report_numbers`). Output:

* ``DIR/district_summary.csv`` (UTF-8 with BOM so Excel opens it): ``地区``, then per class
  ``<class>_件数`` and ``<class>_面積㎡``, then ``合計_件数``, ``合計_面積㎡``, per 調査状況
  ``<status>_件数`` (未確認, 課税対象, 対象外, 誤検出, 要再調査: the survey's progress),
  and ``調査対象筆数``.
* ``DIR/district_summary.png``: a map of changes by class over the candidate parcels.
* ``DIR/district_summary.html``: the table and the map (PNG beside it), no scripts.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import pandas as pd

from idou.geo.review.report_numbers import format_area, round_area
from idou.geo.review.review_fields import (
    CLASS_COLOURS,
    CLASS_ORDER_JA,
    DETECTION,
    NOT_DETECTED_AGAIN,
    STATUS_VALUES,
)
from idou.geo.review.review_status import change_results, read_review_layers
from idou.geo.vector.parcels import district_of

NO_PARCEL = "(筆なし)"


@dataclass
class SummaryFiles:
    """The files written."""

    csv: Path
    html: Path
    png: Path
    table: pd.DataFrame


def summarize_districts(frame_changes: gpd.GeoDataFrame,
                        candidate_parcels: gpd.GeoDataFrame | None) -> pd.DataFrame:
    """Counts and areas by class per 地区 (one row per district plus a 合計 row)."""
    changes = frame_changes
    if DETECTION in changes:
        changes = changes[changes[DETECTION].fillna("") != NOT_DETECTED_AGAIN]
    district = _districts(changes, candidate_parcels)
    table = pd.DataFrame({"地区": district, "異動区分": changes["異動区分"].astype(str),
                          "area": changes.geometry.area.to_numpy(),
                          "status": change_results(changes, candidate_parcels).to_numpy()})
    rows = []
    for place, group in table.groupby("地区", sort=True):
        row: dict[str, object] = {"地区": place}
        for kind in CLASS_ORDER_JA:
            part = group[group["異動区分"] == kind]
            row[f"{kind}_件数"] = len(part)
            row[f"{kind}_面積㎡"] = float(part["area"].sum())
        row["合計_件数"] = len(group)
        row["合計_面積㎡"] = float(group["area"].sum())
        for status in STATUS_VALUES:
            row[f"{status}_件数"] = int((group["status"] == status).sum())
        rows.append(row)
    columns = (["地区"] + [f"{k}_{m}" for k in CLASS_ORDER_JA for m in ("件数", "面積㎡")]
               + ["合計_件数", "合計_面積㎡"] + [f"{s}_件数" for s in STATUS_VALUES])
    out = pd.DataFrame(rows, columns=columns)
    if candidate_parcels is not None and not candidate_parcels.empty:
        live = candidate_parcels
        if DETECTION in live:
            live = live[live[DETECTION].fillna("") != NOT_DETECTED_AGAIN]
        counts = live.groupby(_district_column(live)).size()
        out["調査対象筆数"] = out["地区"].map(counts).fillna(0).astype(int)
    else:
        out["調査対象筆数"] = 0
    total: dict[str, object] = {"地区": "合計"}
    for column in out.columns[1:]:
        total[column] = out[column].sum()
    out = pd.concat([out, pd.DataFrame([total])], ignore_index=True)
    for column in out.columns:
        if column.endswith("_面積㎡"):
            out[column] = out[column].map(round_area)
    return out


def _districts(changes: gpd.GeoDataFrame, parcels: gpd.GeoDataFrame | None) -> list[str]:
    if "所在" in changes and changes["所在"].fillna("").astype(str).str.len().gt(0).any():
        return list(_district_column(changes))
    if parcels is None or parcels.empty or changes.empty:
        return [NO_PARCEL] * len(changes)
    from idou.geo.changes.classify import changes_on_parcels

    links = changes_on_parcels(changes.reset_index(drop=True), parcels.reset_index(drop=True))
    main = links[links["main"]].drop_duplicates("change_row")
    places = _district_column(parcels).to_numpy()
    out = [NO_PARCEL] * len(changes)
    for change_row, parcel_row in zip(main["change_row"], main["parcel_row"], strict=True):
        out[int(change_row)] = places[int(parcel_row)]
    return out


def _district_column(frame: pd.DataFrame) -> pd.Series:
    """地区 per row: the 地区 column, else the 所在 without its 小字; empty → (筆なし)."""
    shozai = frame["所在"].fillna("").astype(str) if "所在" in frame \
        else pd.Series("", index=frame.index)
    district = frame["地区"].fillna("").astype(str) if "地区" in frame \
        else shozai.map(district_of)
    district = district.where(district != "", shozai.map(district_of))
    return district.replace("", NO_PARCEL)


def write_district_summary(gpkg: Path, out_dir: Path) -> SummaryFiles:
    """Write the CSV, map PNG and HTML report for the review GeoPackage ``gpkg``.

    Raises:
        UserInputError: ``gpkg`` missing or not an idou review GeoPackage.
    """
    gpkg = Path(gpkg)
    review = read_review_layers(gpkg, "the run's .gpkg")
    changes, parcels = review.changes, review.parcels
    table = summarize_districts(changes, parcels)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv = out_dir / "district_summary.csv"
    table.to_csv(csv, index=False, encoding="utf-8-sig")
    png = out_dir / "district_summary.png"
    _map_png(changes, parcels, png)
    page = out_dir / "district_summary.html"
    from idou.geo.review.gpkg_output import read_run_info

    try:
        credit = str(read_run_info(gpkg).get("attribution") or "")
    except Exception:  # noqa: BLE001 - a file without run_info still gets its report
        credit = ""
    page.write_text(_html(gpkg, table, png.name, credit), encoding="utf-8")
    return SummaryFiles(csv=csv, html=page, png=png, table=table)


def _map_png(changes: gpd.GeoDataFrame, parcels: gpd.GeoDataFrame | None, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(8, 8), dpi=110)
    try:
        if parcels is not None and not parcels.empty:
            parcels.plot(ax=ax, facecolor="none", edgecolor="#555555", linewidth=0.6)
        handles = []
        for kind in CLASS_ORDER_JA:
            part = changes[changes["異動区分"] == kind] if "異動区分" in changes else changes[:0]
            if not part.empty:
                part.plot(ax=ax, color=CLASS_COLOURS[kind], alpha=0.8, linewidth=0)
            handles.append(Patch(color=CLASS_COLOURS[kind], label=_latin(kind)))
        ax.legend(handles=handles, loc="upper right", fontsize=8)
        ax.set_aspect("equal")
        ax.ticklabel_format(useOffset=False, style="plain")
        ax.tick_params(labelsize=6)
        ax.set_title(f"changes by class ({len(changes)})", fontsize=9)
        fig.tight_layout()
        fig.savefig(png)
    finally:
        plt.close(fig)


def _latin(kind: str) -> str:
    """Legend text readable without a Japanese font (the HTML explains the classes)."""
    names = {"新築": "new (shinchiku)", "増築": "extension (zouchiku)",
             "滅失": "demolished (messhitsu)", "建替": "rebuilt (tatekae)"}
    return names.get(kind, kind)


def _html(gpkg: Path, table: pd.DataFrame, png_name: str, credit: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
        for row in table.itertuples(index=False))
    legend = "".join(
        f'<span style="background:{CLASS_COLOURS[k]};color:#fff;padding:2px 6px;'
        f'margin-right:6px">{k}</span>' for k in CLASS_ORDER_JA)
    return f"""<!DOCTYPE html>
<html lang="ja"><head><meta charset="utf-8">
<title>異動判読 地区別集計 {html.escape(gpkg.stem)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #999;padding:3px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}tr:last-child{{font-weight:bold}}</style>
</head><body>
<h1>異動判読 地区別集計</h1>
<p>対象ファイル: {html.escape(gpkg.name)}。件数と面積（㎡）を大字・町丁目（地区）ごとに集計。
各異動は面積の最も大きい筆の所在で 1 件として数える。</p>
<p>{legend}</p>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<h2>異動の分布</h2>
<p><img src="{html.escape(png_name)}" alt="異動の分布図" style="max-width:100%"></p>
{"".join(f"<p><small>{html.escape(line)}</small></p>" for line in credit.splitlines())}
</body></html>
"""


def _cell(value: object) -> str:
    if isinstance(value, float):
        return format_area(value)
    return str(value)
