"""Training configs: the shipped ones load, mistakes are one-sentence user errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from idou.errors import (
    InputNotFound,
    InvalidOption,
    ModelContractError,
    UnreadableInput,
    UserInputError,
)
from idou.training.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.toml")))
def test_shipped_configs_load(name: str) -> None:
    config = load_config(CONFIGS / name)
    assert config.train_data and config.contract.gsd_m > 0
    assert config.flat_params()["model.backbone"] == config.model.backbone


def test_unknown_key_names_the_section(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[train_data]]\nkind = "synthetic"\n[train]\nepoks = 3\n')
    with pytest.raises(InvalidOption, match=r"unknown key\(s\) epoks in \[train\]"):
        load_config(path)


def test_config_without_training_data_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('name = "x"\n')
    with pytest.raises(UserInputError, match="names no"):
        load_config(path)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("name = \n")
    with pytest.raises(UnreadableInput):
        load_config(path)
    with pytest.raises(InputNotFound):
        load_config(tmp_path / "missing.toml")


def test_idou_train_names_a_missing_config(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from idou.cli import app

    result = CliRunner().invoke(app, ["train", str(tmp_path / "nope.toml")])
    assert isinstance(result.exception, UserInputError)
    assert "nope.toml does not exist" in str(result.exception)


@pytest.mark.parametrize(("contract", "field"), [
    ("tile_size = 100", "tile_size"), ("gsd_m = 0.0001", "gsd_m"),
    ("std = [0.0, 0.2, 0.2]", "std"), ("tile_overlap = 128", "tile_overlap")])
def test_contract_inference_would_refuse_is_refused_before_training(
        tmp_path: Path, contract: str, field: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[[train_data]]\nkind = "synthetic"\n[contract]\n{contract}\n',
                    encoding="utf-8")
    with pytest.raises(ModelContractError, match=rf"c\.toml has invalid .*{field}.*\[contract\]"):
        load_config(path)


@pytest.mark.parametrize("section,line,key", [
    ("[train]", 'epochs = "1"', "epochs"),
    ("[train]", "lr = true", "lr"),
    ("[model]", 'decoder_channels = "8, 8"', "decoder_channels"),
    ("[contract]", 'mean = ["0.4", 0.4, 0.4]', "mean"),
])
def test_a_value_of_the_wrong_type_is_refused(tmp_path: Path, section: str, line: str,
                                              key: str) -> None:
    """A quoted number or a string for a list is one sentence, not a crash mid-training."""
    path = tmp_path / "quoted.toml"
    path.write_text(f'{section}\n{line}\n\n[[train_data]]\nkind = "synthetic"\nseeds = [1]\n',
                    encoding="utf-8")
    with pytest.raises(InvalidOption, match=rf"quoted\.toml.*{key} = .* must be"):
        load_config(path)


def test_seeds_as_a_string_are_not_read_digit_by_digit(tmp_path: Path) -> None:
    """``seeds = "930001"`` once trained on the seeds 9, 3, 0, 0, 0, 1."""
    from typer.testing import CliRunner

    from idou.cli import app

    path = tmp_path / "seeds.toml"
    path.write_text('[[train_data]]\nkind = "synthetic"\nseeds = "930001"\n', encoding="utf-8")
    with pytest.raises(InvalidOption, match=r"seeds\.toml .*seeds = '930001' must be a list"):
        load_config(path)
    result = CliRunner().invoke(app, ["train", str(path)])
    assert isinstance(result.exception, UserInputError)


def test_config_with_a_bom_and_shift_jis_comments_loads(tmp_path: Path) -> None:
    """A config saved by Notepad (UTF-8 with BOM) or in Shift_JIS, with Japanese comments."""
    text = '# 前橋市 2025年度\r\n[[train_data]]\r\nkind = "synthetic"\r\nseeds = [1]\r\n'
    for encoding in ("utf-8-sig", "cp932"):
        path = tmp_path / f"{encoding}.toml"
        path.write_bytes(text.encode(encoding))
        assert load_config(path).train_data[0].params["seeds"] == [1]


def test_contract_section_defaults_are_the_model_contracts() -> None:
    from idou.inference.contract import ModelContract
    from idou.training.config import ContractSection

    section, contract = ContractSection(), ModelContract()
    assert (section.gsd_m, section.tile_size, section.tile_overlap) == (
        contract.gsd_m, contract.tile_size, contract.tile_overlap)
    assert (section.band_order, section.mean, section.std) == (
        list(contract.band_order), list(contract.mean), list(contract.std))
