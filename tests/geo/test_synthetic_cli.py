"""`idou samples make`: writes a pair and refuses a bad OUT_DIR as a user error."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from idou.cli import app
from idou.geo.errors import UserInputError


def test_samples_make_writes_and_prints(tmp_path: Path) -> None:
    out = tmp_path / "samples"
    result = CliRunner().invoke(app, ["samples", "make", str(out), "--seed", "1", "--size",
                                      "256"])
    assert result.exit_code == 0, result.output
    for name in ("flight_2024.tif", "flight_2025.tif", "parcels.gpkg", "buildings_2024.gpkg",
                 "buildings_2025.gpkg", "truth.gpkg"):
        assert (out / name).is_file()
        assert name in result.output


def test_out_dir_that_is_a_file_is_a_user_error(tmp_path: Path) -> None:
    target = tmp_path / "a_file"
    target.write_text("x")
    result = CliRunner().invoke(app, ["samples", "make", str(target), "--size", "256"])
    assert isinstance(result.exception, UserInputError)
    assert "a_file" in str(result.exception)


def test_out_dir_below_a_file_is_a_user_error(tmp_path: Path) -> None:
    target = tmp_path / "a_file"
    target.write_text("x")
    result = CliRunner().invoke(app, ["samples", "make", str(target / "sub"), "--size", "256"])
    assert isinstance(result.exception, UserInputError)


def test_too_small_size_is_a_user_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["samples", "make", str(tmp_path), "--size", "16"])
    assert isinstance(result.exception, UserInputError)
    with pytest.raises(ValueError):
        from idou.geo.synthetic import make_flight_pair

        make_flight_pair(0, size=16)
