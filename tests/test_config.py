from __future__ import annotations

from pathlib import Path

import pytest

from harmonrank.config import DatasetConfig, Objective, load_config, simulator_config
from harmonrank.errors import ConfigError


def test_simulator_config_ships_with_package() -> None:
    cfg = load_config(None)
    assert cfg == simulator_config()
    assert cfg.names == ("click", "long_view", "like", "comment", "follow", "buy")
    assert cfg.objective("buy").score == "p_buy" and cfg.objective("buy").label == "y_buy"


def test_real_data_mapping(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('request_column = "sid"\n[[objectives]]\nname = "click"\nlabel = "is_click"\nweight = 2\n'
                 '[features]\ncategorical = ["city"]\nnumeric = ["age"]\n')
    cfg = load_config(p)
    assert cfg.request_column == "sid" and cfg.objectives[0] == Objective("click", "p_click", "is_click", 2.0)
    assert cfg.categorical == ("city",) and cfg.numeric == ("age",)
    assert DatasetConfig.from_dict(cfg.to_dict()) == cfg  # round trip (saved with checkpoints)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('[[objectives]]\nname = "buy"\n[[objectives]]\nname = "buy"\n', "unique.*buy"),
        ("objectives = []\n", "non-empty"),
        ('[[objectives]]\nname = "b uy"\n', "identifier"),
        ('[[objectives]]\nname = "buy"\nweight = -1\n', "weight"),
        ('[[objectives]]\nname = "buy"\ncolour = 1\n', "unknown key"),
        ('oops = 1\n[[objectives]]\nname = "buy"\n', "unknown key.*oops"),
        ('[[objectives]]\nname = "buy"\n[features]\nnumeric = ["a"]\ncategorical = ["a"]\n', "listed twice"),
        ("[[objectives]\n", "not valid TOML"),
    ],
)
def test_bad_configs(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(p)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize(("text", "match"), [
    ('[[objectives]]\nname = "buy"\n[features]\ncatgorical = ["u_city"]\n', "did you mean 'categorical'"),
    ('[[objectives]]\nname = "buy"\nwieght = 2\n', "did you mean 'weight'"),
    ('user_colum = "u"\n[[objectives]]\nname = "buy"\n', "did you mean 'user_column'"),
])
def test_typos_in_every_table_are_errors_with_the_likely_spelling(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(p)


def test_config_round_trips_through_its_dict() -> None:
    cfg = DatasetConfig(objectives=(Objective("buy"),))  # no time or item column
    assert DatasetConfig.from_dict(cfg.to_dict()) == cfg
    assert DatasetConfig.from_dict(simulator_config().to_dict()) == simulator_config()
