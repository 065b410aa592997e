"""Model configuration: defaults, TOML parsing, effective configuration and error messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from factor_engine.config import ConfigError, ModelConfig, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "model.toml"
    path.write_text(text)
    return path


def test_defaults_are_documented_values() -> None:
    effective = load_config(None).effective()
    assert effective["universe"] == {"size": 3000, "include": []}  # the seed's universe_size
    assert effective["styles"]["names"] is None  # every registered style whose inputs the panel has
    assert effective["styles"]["modules"] == []
    assert effective["sectors"] == {"taxonomy": None, "allowed": None, "relabel": {}, "min_assets": 5}
    assert effective["styles"]["params"]["momentum"] == {
        "trailing_days": 252,
        "half_life": 126,
        "lag": 20,
        "winsor_factor": 0.01,
    }
    assert effective["regression"] == {
        "method": "barra",
        "exposure_lag": 1,
        "winsor_factor": 0.05,
        "residualize_styles": True,
    }
    json.dumps(effective)  # JSON-compatible, so a model can record it


def test_toml_overrides_merge_over_defaults(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
            [universe]
            size = 3000
            [styles]
            names = ["momentum", "size"]
            [styles.momentum]
            trailing_days = 504
            [regression]
            method = "toraniko"
            winsor_factor = false
            """,
        )
    )
    effective = config.effective()
    assert effective["universe"]["size"] == 3000
    assert effective["styles"]["params"]["momentum"]["trailing_days"] == 504
    assert effective["styles"]["params"]["momentum"]["half_life"] == 126
    assert effective["regression"]["exposure_lag"] == 0  # toraniko's default lag
    assert effective["regression"]["winsor_factor"] is None
    assert ModelConfig.from_mapping(json.loads(json.dumps(effective))).effective() == effective


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[unknown]\nx = 1", r"unknown section\(s\) \['unknown'\]"),
        ("[universe]\nsize = -1", r"\[universe\] size must be a non-negative integer, got -1"),
        ("[universe]\ncount = 5", r"\[universe\] unknown key\(s\) \['count'\]"),
        ('[universe]\ninclude = "AAPL"', r"\[universe\] include must be a list of symbols"),
        ('[styles]\nnames = ["momentum", "quality"]', r"\[styles\] names: .*quality"),
        ("[styles.momentum]\nwindow = 5", r"\[styles.momentum\] configures a style that is not in|unknown parameter"),
        ('[styles]\nnames = ["momentum"]\n[styles.momentum]\nwindow = 5', r"\[styles.momentum\] unknown parameter"),
        ('[styles]\nnames = ["momentum"]\n[styles.value]\nwinsorize_features = 0.1', r"\[styles.value\] configures"),
        ('[regression]\nmethod = "ols"', r"\[regression\] method must be 'barra' or 'toraniko', got 'ols'"),
        ("[regression]\nexposure_lag = -2", r"\[regression\] exposure_lag must be a non-negative integer"),
        ("[regression]\nwinsor_factor = 0.7", r"\[regression\] winsor_factor must be a fraction"),
        ("[regression\nmethod = 1", r"is not valid TOML"),
    ],
)
def test_errors_name_section_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"configuration file .*nope.toml does not exist"):
        load_config(tmp_path / "nope.toml")


def test_style_presets_choose_the_candidate_styles() -> None:
    returns_and_caps = ("date", "symbol", "asset_returns", "market_cap", "sector")
    default = ModelConfig.from_mapping({})
    assert default.styles.resolve(returns_and_caps) == (
        ("momentum", "size"),
        {"value": "the panel has no book_price, sales_price, cf_price columns"},
    )
    use4 = ModelConfig.from_mapping({"styles": {"preset": "use4"}})
    used, skipped = use4.styles.resolve(returns_and_caps)
    assert used == ("momentum", "size", "beta", "resvol", "nlsize")
    assert list(skipped) == ["value"]
    toraniko = ModelConfig.from_mapping({"styles": {"preset": "toraniko", "momentum": {"lag": 5}}})
    assert toraniko.styles.resolve((*returns_and_caps, "book_price", "sales_price", "cf_price"))[0] == (
        "momentum",
        "value",
        "size",
    )
    assert toraniko.effective()["styles"]["preset"] == "toraniko"
    assert set(toraniko.effective()["styles"]["params"]) == {"momentum", "value", "size"}
    assert toraniko.effective()["styles"]["params"]["momentum"]["lag"] == 5
    again = ModelConfig.from_mapping(toraniko.effective())
    assert again.effective() == toraniko.effective()
    named = ModelConfig.from_mapping({"styles": {"names": ["momentum", "beta"], "beta": {"half_life": 42}}})
    assert named.styles.resolve(returns_and_caps) == (("momentum", "beta"), {})


def test_style_preset_errors() -> None:
    with pytest.raises(ConfigError, match=r"\[styles\] preset must be one of \['toraniko', 'use4'\], got 'barra'"):
        ModelConfig.from_mapping({"styles": {"preset": "barra"}})
    with pytest.raises(ConfigError, match=r"\[styles\] give names or a preset, not both"):
        ModelConfig.from_mapping({"styles": {"preset": "use4", "names": ["beta"]}})
    with pytest.raises(ConfigError, match=r"\[styles\] preset must be a string, got 4"):
        ModelConfig.from_mapping({"styles": {"preset": 4}})
