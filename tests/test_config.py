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
        (
            '[styles]\nnames = ["beta"]\n[styles.beta]\nat = "2024-01-02"',
            r"\[styles.beta\] unknown parameter\(s\) \['at'\]; accepted: \['half_life', 'min_observations', 'window'\]",
        ),
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


USE4_STYLES = (
    "momentum",
    "size",
    "beta",
    "resvol",
    "nlsize",
    "liquidity",
    "earnings_yield",
    "growth",
    "leverage",
    "dividend_yield",
    "btop",
)
USE4_COLUMNS = (
    "turnover",
    "earnings_price",
    "forecast_earnings_price",
    "dividend_yield",
    "earnings_growth",
    "sales_growth",
    "market_leverage",
    "book_leverage",
    "debt_to_assets",
)


def test_style_presets_choose_the_candidate_styles() -> None:
    returns_and_caps = ("date", "symbol", "asset_returns", "market_cap", "sector")
    default = ModelConfig.from_mapping({})
    assert default.styles.resolve(returns_and_caps) == (
        ("momentum", "size", "beta", "resvol", "nlsize"),
        {
            "value": "the panel has no book_price, sales_price, cf_price columns",
            "liquidity": "the panel has none of turnover, volume + shares_outstanding",
            "earnings_yield": "the panel has no earnings_price column",
            "growth": "the panel has none of earnings_growth, sales_growth",
            "leverage": "the panel has none of market_leverage, debt_to_assets, book_leverage",
            "dividend_yield": "the panel has no dividend_yield column",
            "btop": "the panel has no book_price column",
        },
    )
    use4 = ModelConfig.from_mapping({"styles": {"preset": "use4"}})
    assert [style.name for style in use4.styles.candidates()] == list(USE4_STYLES)
    used, skipped = use4.styles.resolve(returns_and_caps)
    assert used == ("momentum", "size", "beta", "resvol", "nlsize")
    assert list(skipped) == ["liquidity", "earnings_yield", "growth", "leverage", "dividend_yield", "btop"]
    # every USE4 style once the panel has its columns; book-to-price too, as toraniko's value is not in the preset
    everything = (*returns_and_caps, "book_price", "sales_price", "cf_price", *USE4_COLUMNS)
    assert use4.styles.resolve(everything) == (USE4_STYLES, {})
    assert set(use4.effective()["styles"]["params"]) == set(USE4_STYLES)
    assert use4.effective()["styles"]["params"]["liquidity"] == {"month_days": 21, "min_fraction": 0.5}
    # USE4's size is the plain log cap (LNCAP): the preset zeroes no middle quantiles; the user's keys win
    assert use4.effective()["styles"]["params"]["size"] == {"lower_decile": 0.0, "upper_decile": 0.0}
    assert default.effective()["styles"]["params"]["size"] == {"lower_decile": 0.2, "upper_decile": 0.8}
    mine = ModelConfig.from_mapping({"styles": {"preset": "use4", "size": {"upper_decile": 0.5}}})
    assert mine.styles.effective_params(["size"]) == {"size": {"lower_decile": 0.0, "upper_decile": 0.5}}
    # the default set has value and book-to-price: book-to-price is left out, covered by value
    used, skipped = default.styles.resolve(everything)
    assert used == ("momentum", "value", *(s for s in USE4_STYLES if s not in ("momentum", "btop")))
    assert skipped == {"btop": "covered by style 'value', which is used (name both styles to use both)"}
    # without all of value's columns value is not used, and book-to-price takes its place
    assert default.styles.resolve((*returns_and_caps, "book_price"))[0][-1] == "btop"
    # liquidity from volume and shares outstanding; growth from sales growth alone
    used, _ = default.styles.resolve((*returns_and_caps, "volume", "shares_outstanding", "sales_growth"))
    assert {"liquidity", "growth"} <= set(used) and "leverage" not in used
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
    both = ModelConfig.from_mapping({"styles": {"names": ["value", "btop"]}})
    assert both.styles.resolve(everything) == (("value", "btop"), {})  # named: unless does not apply


def test_named_styles_missing_any_of_columns() -> None:
    columns = ("date", "symbol", "asset_returns", "market_cap", "sector", "volume")
    config = ModelConfig.from_mapping({"styles": {"names": ["liquidity"]}})
    with pytest.raises(
        ConfigError,
        match=r"style 'liquidity' needs one of the columns turnover, volume \+ shares_outstanding, which the panel "
        r"lacks; remove it from \[styles\] names",
    ):
        config.styles.resolve(columns)
    growth = ModelConfig.from_mapping({"styles": {"names": ["growth"]}})
    with pytest.raises(
        ConfigError,
        match=r"style 'growth' needs one of the columns earnings_growth, sales_growth, which the panel lacks",
    ):
        growth.styles.resolve(("date", "symbol", "forecast_growth"))  # market_cap only weights it: not required
    nlsize = ModelConfig.from_mapping({"styles": {"names": ["nlsize"]}})
    with pytest.raises(ConfigError, match=r"style 'nlsize' needs column\(s\) \['market_cap'\], which the panel lacks"):
        nlsize.styles.resolve(("date", "symbol", "asset_returns"))
    assert growth.styles.resolve(("date", "symbol", "earnings_growth")) == (("growth",), {})
    with pytest.raises(ConfigError, match=r"\[styles.growth\] unknown parameter\(s\) \['window'\]; accepted: \[\]"):
        ModelConfig.from_mapping({"styles": {"names": ["growth"], "growth": {"window": 3}}})


def test_style_preset_errors() -> None:
    with pytest.raises(ConfigError, match=r"\[styles\] preset must be one of \['toraniko', 'use4'\], got 'barra'"):
        ModelConfig.from_mapping({"styles": {"preset": "barra"}})
    with pytest.raises(ConfigError, match=r"\[styles\] give names or a preset, not both"):
        ModelConfig.from_mapping({"styles": {"preset": "use4", "names": ["beta"]}})
    with pytest.raises(ConfigError, match=r"\[styles\] preset must be a string, got 4"):
        ModelConfig.from_mapping({"styles": {"preset": 4}})
