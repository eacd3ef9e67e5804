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
