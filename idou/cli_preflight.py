"""`idou preflight`: check a pair of flights against the model before a run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from idou.geo.raster.preflight import PreflightReport
    from idou.inference.contract import ModelContract


def load_contract(spec: str) -> tuple[ModelContract, str | None]:
    """The model contract named by ``spec`` and a note when defaults stand in for it.

    Uses ``idou.inference.model_source.resolve_model`` when available. Only for ``default``
    with no packaged model yet do the :class:`ModelContract` defaults stand in (with a note).
    """
    from idou.inference.contract import ModelContract

    try:
        from idou.inference import model_source
    except ImportError:
        model_source = None  # type: ignore[assignment]
    if model_source is None:
        if spec == "default":
            return ModelContract(), "the model loader is not available; default contract used."
        raise typer.BadParameter("loading a model file needs idou.inference.model_source")
    if spec == "default" and not model_source.default_model_path().is_file():
        return ModelContract(), "no packaged default model yet; the default contract is used."
    return model_source.resolve_model(spec).contract, None


def preflight_command(
    before: str = typer.Argument(..., help="Earlier flight: GeoTIFF/COG/VRT, TIFF+.tfw, a "
                                 "folder of sheets, or a .txt list of sheets."),
    after: str = typer.Argument(..., help="Later flight (its CRS and pixel grid are kept)."),
    crs: str | None = typer.Option(None, "--crs", help="CRS of inputs that record none "
                                   "(world files), e.g. EPSG:6677; also the grid in metres "
                                   "that latitude/longitude or Web Mercator flights are "
                                   "warped onto."),
    model: str = typer.Option("default", "--model", help="default, a path to an .onnx "
                              "model, or models:/NAME@ALIAS."),
    aoi: Path | None = typer.Option(None, "--aoi", help="Vector file limiting the area."),
    allow_network: bool = typer.Option(False, "--allow-network", help="Accept inputs read "
                                       "from the network; refused by default."),
) -> None:
    """Check two flights against the model: CRS, pixel size, overlap, bands, masks, shift."""
    from idou.geo.files.network import allow_network_sources
    from idou.geo.raster.preflight import preflight
    from idou.geo.raster.sources import open_source

    contract, model_note = load_contract(model)
    with allow_network_sources(allow_network):
        src_before = open_source(before, crs=crs)
        src_after = open_source(after, crs=crs)
        report = preflight(src_before, src_after, contract, aoi=aoi)
    if model_note:
        report.notes.insert(0, model_note)
    print_report(report)


def print_report(report: PreflightReport) -> None:
    """Print the report as a rich table with notes and warnings below it."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from idou.cli_text import say

    console = Console()
    table = Table(title="idou preflight", show_lines=False)
    table.add_column("", style="bold")
    table.add_column("before")
    table.add_column("after")
    b, a = report.before, report.after

    def crs_name(src: object) -> str:
        crs = src.crs  # type: ignore[attr-defined]
        epsg = crs.to_epsg()
        return f"EPSG:{epsg}" if epsg else "custom"

    table.add_row("input", Text(b.label), Text(a.label))
    table.add_row("files", str(len(b.files)), str(len(a.files)))
    table.add_row("CRS", crs_name(b), crs_name(a))
    table.add_row("size (px)", f"{b.width} x {b.height}", f"{a.width} x {a.height}")
    table.add_row("pixel size", f"{b.gsd:.4g}", f"{a.gsd:.4g}")
    table.add_row("bands (type)", f"{b.count} ({b.dtypes[0]})", f"{a.count} ({a.dtypes[0]})")
    table.add_row("bands used", _bands(report.band_indexes_before),
                  _bands(report.band_indexes_after))
    console.print(table)
    g = report.grid
    left, bottom, right, top = g.bounds
    area_km2 = g.width * g.height * g.gsd * g.gsd / 1e6
    console.print(f"common grid: {g.width} x {g.height} px at {g.gsd:.4g} m "
                  f"({area_km2:.3f} km²), bounds {left:.1f}, {bottom:.1f}, {right:.1f}, {top:.1f}")
    console.print(f"overlap: {report.overlap_fraction:.1%} of the after flight; valid in both "
                  f"(sampled): {report.valid_fraction or 0.0:.1%}")
    shift = report.misregistration_px
    console.print("misregistration: " + ("not measurable" if shift is None else
                                         f"dx {shift[0]:+.2f} px, dy {shift[1]:+.2f} px"))
    for note in report.notes:
        say(console, "note:", "cyan", note)
    for warning in report.warnings:
        say(console, "warning:", "yellow", warning)
    console.print("[green]ok[/]: the pair can be processed.")


def _bands(indexes: list[int]) -> str:
    return ", ".join(str(i) for i in indexes)


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the `idou` application."""
    app.command("preflight")(preflight_command)
