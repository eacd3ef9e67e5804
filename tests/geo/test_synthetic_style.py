"""Generator styles: the same town in another look; no style leaves the default untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from idou.cli import app
from idou.geo.errors import UserInputError
from idou.geo.synthetic import make_flight_pair
from idou.geo.synthetic.style import style_names

SIZE = 256


def test_autumn_is_the_same_town_in_another_look() -> None:
    default = make_flight_pair(seed=11, size=SIZE)
    autumn = make_flight_pair(seed=11, size=SIZE, style="autumn")
    assert autumn.truth.geometry.equals(default.truth.geometry)
    assert list(autumn.buildings_after.building_id) == list(default.buildings_after.building_id)
    np.testing.assert_array_equal(autumn.after_valid, default.after_valid)
    # other colours: the mean colour moves, and greens give way to straw and brown
    diff = np.abs(autumn.before.astype(float) - default.before.astype(float)).mean()
    assert diff > 8
    def green_share(img: np.ndarray) -> float:
        return float((img[..., 1].astype(int) > img[..., 0].astype(int) + 4).mean())

    assert green_share(autumn.before) < 0.5 * green_share(default.before)
    assert autumn.info["style"] == "autumn" and "style" not in default.info
    assert autumn.info["sun_elevation_2024"] <= 36


def test_style_is_deterministic() -> None:
    a = make_flight_pair(seed=12, size=SIZE, style="autumn")
    b = make_flight_pair(seed=12, size=SIZE, style="autumn")
    np.testing.assert_array_equal(a.before, b.before)
    np.testing.assert_array_equal(a.after, b.after)


def test_unknown_style_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown style"):
        make_flight_pair(seed=1, size=SIZE, style="neon")


def test_cli_style(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["samples", "make", str(tmp_path / "x"), "--style", "neon"])
    assert isinstance(bad.exception, UserInputError) and "--style neon" in str(bad.exception)
    assert not (tmp_path / "x").exists()
    assert "autumn" in style_names()
    ok = runner.invoke(app, ["samples", "make", str(tmp_path / "y"), "--size", "256",
                             "--style", "autumn"])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "y" / "flight_2024.tif").is_file()
