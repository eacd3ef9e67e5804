"""The `idou` command: help, version, and user errors as one sentence with exit status 2."""

from __future__ import annotations

import subprocess
import sys

from idou import __version__


def _idou(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "idou.cli", *args], capture_output=True,
                          text=True, timeout=120)


def test_version_prints_the_package_version() -> None:
    result = _idou("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"idou {__version__}"


def test_help_lists_the_stages() -> None:
    result = _idou("--help")
    assert result.returncode == 0
    assert "samples" in result.stdout


def test_unknown_command_is_a_usage_error() -> None:
    result = _idou("no-such-command")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def _all_commands() -> list[list[str]]:
    import typer

    from idou.cli import app

    def walk(command: object, path: list[str]) -> list[list[str]]:
        found = [path]
        for name, child in getattr(command, "commands", {}).items():
            found += walk(child, [*path, name])
        return found

    return walk(typer.main.get_command(app), [])


def test_help_is_plain_and_aligned_for_every_command() -> None:
    """No typer type labels, {arg} braces or reST markup; values named by one plain word."""
    import re

    from typer.testing import CliRunner

    from idou.cli import app

    commands = _all_commands()
    assert ["train"] in commands and ["samples", "make"] in commands
    for path in commands:
        result = CliRunner().invoke(app, [*path, "--help"], terminal_width=100)
        text = result.output
        assert result.exit_code == 0, (path, text)
        for noise in ("<bool>", "<list", "<path>", "<str>", "<int", "<float>", "``", ":func:",
                      "╭", "{"):
            assert noise not in text, f"idou {' '.join(path)} --help shows {noise!r}:\n{text}"
        options = text.split("Options:\n", 1)[1].split("\n\n")[0].splitlines()
        starts = {len(re.match(r"  (\S.*?  +)\S", line).group(1))  # type: ignore[union-attr]
                  for line in options if re.match(r"  -", line) and re.match(
                      r"  (\S.*?  +)\S", line)}
        assert len(starts) <= 1, f"idou {' '.join(path)} --help: help not aligned:\n{text}"
    train = CliRunner().invoke(app, ["train", "--help"]).output
    assert "Usage: idou train [OPTIONS] CONFIG" in train
    assert "--resume / --no-resume" in train and "--max-epochs N " in train
    detect = CliRunner().invoke(app, ["detect", "--help"]).output
    assert "Usage: idou detect [OPTIONS] [BEFORE] [AFTER]" in detect
    assert "-o, --output PATH " in detect and "--parcels TEXT " in detect


def test_tune_table_is_printed_whole_in_a_narrow_log() -> None:
    import io

    from rich.console import Console
    from rich.table import Table

    from idou import cli_models

    table = Table(title="idou tune")
    columns = ("channel", "threshold", "recall", "precision", "found/true", "false alarms",
               "pixel P", "pixel R", "pixel F1", "pixel IoU")
    for column in columns:
        table.add_column(column)
    table.add_row("demolished", "0.35", "0.953 (target not reached)", *["0.500"] * 7)
    buffer = io.StringIO()
    original = cli_models._out
    cli_models._out = Console(file=buffer, width=80)
    try:
        cli_models._print_table(table)
    finally:
        cli_models._out = original
    text = buffer.getvalue()
    assert "…" not in text and "(target not reached)" in text
    assert all(column in text for column in columns)
