"""`idou samples …`: write a synthetic flight pair with known changes."""

from __future__ import annotations

from pathlib import Path

import typer

samples_app = typer.Typer(help="Synthetic sample flights with known changes.",
                          no_args_is_help=True)


@samples_app.command("make")
def make(
    out_dir: Path = typer.Argument(..., help="Folder to write the flight pair into."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same pair."),
    size: int = typer.Option(2048, "--size", help="Width and height of each flight in pixels."),
    force: bool = typer.Option(False, "--force", help="Replace sample files idou wrote "
                               "before (other files are never replaced)."),
    style: str | None = typer.Option(None, "--style",
                                     help="Another look for the same town: autumn (other "
                                     "roofs, season, vegetation, a low sun). Default: none."),
) -> None:
    """Write two flights (2024, 2025), parcels, building footprints and the truth of changes."""
    from idou.errors import InvalidOption
    from idou.geo.synthetic.cli_support import check_out_dir, make_samples

    if seed < 0:
        raise InvalidOption(f"--seed {seed} is negative; pass --seed 0 or more.")
    if size < 256:
        raise InvalidOption(f"--size {size} is too small; pass --size 256 or more.")
    from idou.geo.synthetic.style import style_names

    if style is not None and style not in style_names():
        raise InvalidOption(f"--style {style} is not a style; pass one of "
                            f"{', '.join(style_names())}, or leave --style out.")
    check_out_dir(out_dir)
    for name, path, note in make_samples(out_dir, seed=seed, size=size, force=force,
                                          style=style):
        typer.echo(f"{name:15s} {path}  {note}")


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the `idou` application."""
    app.add_typer(samples_app, name="samples")
