"""The ``idou`` command line: wires the stages together, holds no logic of its own."""

from __future__ import annotations

import errno
import sys
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console

from idou import __version__
from idou.cli_help import PlainHelpGroup
from idou.cli_text import say
from idou.errors import UserInputError

app = typer.Typer(
    name="idou",
    help="Find new and demolished buildings between two aerial flights (家屋異動判読).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
    cls=PlainHelpGroup,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"idou {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """idou: building change detection for property-tax survey."""


def _register_stages() -> None:
    """Each stage's module adds its own subcommands."""
    from idou import (
        cli_batch,
        cli_detect,
        cli_finetune,
        cli_models,
        cli_preflight,
        cli_review,
        cli_samples,
        cli_train,
    )

    for module in (cli_samples, cli_preflight, cli_detect, cli_train, cli_models, cli_review,
                   cli_batch, cli_finetune):
        module.register(app)


_register_stages()


def main() -> None:
    """Entry point: user errors are one sentence and exit status 2, internal errors exit 1."""
    err = Console(stderr=True)
    try:
        app()
    except UserInputError as exc:
        say(err, "error:", "bold red", exc)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted", highlight=False)
        sys.exit(130)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            say(err, "error:", "bold red", _not_permitted(exc))
            sys.exit(2)
        if exc.errno != errno.ENOSPC:
            _internal_error(err, exc)
        where = f" writing {Path(exc.filename).name}" if exc.filename else ""
        say(err, "error:", "bold red", f"the disk is full (no space left{where}); free some "
            "space or choose another output folder.")
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        _internal_error(err, exc)


def _not_permitted(exc: OSError) -> str:
    """One sentence for a file or folder the system does not let idou use."""
    path = Path(exc.filename) if exc.filename else None
    if path is None:
        what = "a file"
    elif path.name.startswith("."):  # idou's own temporary files: the folder is what matters
        what = f"files in folder {path.parent}"
    else:
        what = str(path)
    why = ("the disk is mounted read-only" if exc.errno == errno.EROFS
           else "permission denied: the folder is read-only, locked (immutable) or another "
                "user's")
    return (f"idou may not create or change {what} ({why}); fix the folder's permissions or "
            "choose another output folder.")


def _internal_error(err: Console, exc: BaseException) -> NoReturn:
    """Exit 1 with the one-line description of a bug."""
    say(err, "internal error:", "bold red", f"{type(exc).__name__}: {exc}")
    err.print("This is a bug in idou; please report it with the command you ran.")
    sys.exit(1)


if __name__ == "__main__":
    main()
