"""factor_engine.update: a model extended by new dates equals a build on the whole panel (issue 13)."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from cli_runner import invoke
from factor_engine import styles
from factor_engine.config import ModelConfig
from factor_engine.model import RiskModel, build_model, load_model
from factor_engine.model_folder import ModelError
from factor_engine.synthetic import generate_market
from factor_engine.update import differences, update_model

USE4 = ("momentum", "value", "size", "beta", "resvol", "nlsize", "liquidity", "earnings_yield", "growth",
        "leverage", "dividend_yield", "btop")  # fmt: skip
NEW = 3  # dates added by the updates
TOLERANCE = 1e-10  # relative to each quantity's largest value (the bar is 1e-8)


def assert_equal_on_new_dates(updated: RiskModel, full: RiskModel, since: datetime.date) -> None:
    """The updated model equals the full build within TOLERANCE, on its new dates and its earlier exposures
    (factor returns, exposures, specific risk, factor covariance; the same factors, dates and missing values)."""
    gaps = differences(updated, full, since)
    assert set(gaps) >= {"factor returns", "exposures", "specific risk", "factor covariance", "earlier exposures"}
    assert all(gap < TOLERANCE for gap in gaps.values()), gaps


@pytest.fixture(scope="module")
def panel() -> pl.DataFrame:
    return generate_market(160, 460, seed=2).panel


@pytest.fixture(scope="module")
def full(panel: pl.DataFrame) -> RiskModel:
    return build_model(panel)


def _cut(panel: pl.DataFrame, new: int = NEW) -> datetime.date:
    return panel.get_column("date").unique().sort()[-new - 1]


@pytest.fixture(scope="module")
def saved(panel: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("update") / "model"
    build_model(panel.filter(pl.col("date") <= _cut(panel))).save(folder)
    return folder


def test_update_from_the_whole_panel_equals_a_build(
    panel: pl.DataFrame, full: RiskModel, saved: Path, tmp_path: Path
) -> None:
    result = update_model(saved, panel, out=tmp_path / "updated")
    assert result.new_dates == tuple(panel.get_column("date").unique().sort()[-NEW:].to_list())
    assert result.history_start is not None and result.history_start < _cut(panel)
    assert_equal_on_new_dates(load_model(tmp_path / "updated"), full, _cut(panel))
    assert load_model(saved).factor_returns.height == full.factor_returns.height - NEW  # out= left it unchanged


def test_update_from_the_recent_rows_only_equals_a_build(
    panel: pl.DataFrame, full: RiskModel, saved: Path, tmp_path: Path
) -> None:
    start = update_model(saved, panel, out=tmp_path / "probe").history_start
    assert start is not None
    recent = panel.filter(pl.col("date") >= start)
    update_model(saved, recent, out=tmp_path / "updated")
    assert_equal_on_new_dates(load_model(tmp_path / "updated"), full, _cut(panel))
    with pytest.raises(ModelError, match=rf"the panel starts on .*needs its rows from {start} on"):
        update_model(saved, panel.filter(pl.col("date") > start), out=tmp_path / "late")


def test_daily_updates_in_place_equal_a_build(panel: pl.DataFrame, full: RiskModel, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    build_model(panel.filter(pl.col("date") <= _cut(panel))).save(folder)
    dates = panel.get_column("date").unique().sort()
    for day in dates[-NEW:]:
        result = update_model(folder, panel.filter(pl.col("date") <= day))
        assert result.new_dates == (day,)
    assert_equal_on_new_dates(load_model(folder), full, _cut(panel))
    again = update_model(folder, panel)  # nothing after the model's last date
    assert again.folder is None and again.new_dates == ()


def test_update_with_every_use4_style_equals_a_build(tmp_path: Path) -> None:
    panel = generate_market(150, 420, seed=4, styles=USE4).panel
    config = ModelConfig.from_mapping({"styles": {"preset": "use4"}, "universe": {"size": 120}})
    cut = _cut(panel, 2)
    build_model(panel.filter(pl.col("date") <= cut), config).save(tmp_path / "model")
    full = build_model(panel, config)
    assert {"liq_score", "ey_score", "btop_score"} <= set(full.factors)
    update_model(tmp_path / "model", panel)
    assert_equal_on_new_dates(load_model(tmp_path / "model"), full, cut)


def test_refusals_name_the_reason(panel: pl.DataFrame, saved: Path, tmp_path: Path) -> None:
    relabelled = panel.with_columns(
        pl.when((pl.col("date") > _cut(panel)) & (pl.col("symbol") == panel["symbol"][0]))
        .then(pl.lit("Brand New Sector"))
        .otherwise(pl.col("sector"))
        .alias("sector")
    )
    with pytest.raises(ModelError, match=r"sector 'Brand New Sector' appears in the new dates but is not in the model"):
        update_model(saved, relabelled, out=tmp_path / "new-sector")
    assert not (tmp_path / "new-sector").exists()  # nothing written
    cut_model = load_model(saved).between(end=_cut(panel, NEW + 1))
    cut_model.save(tmp_path / "cut")
    with pytest.raises(ModelError, match=r"has no update state"):
        update_model(tmp_path / "cut", panel)


def test_the_command_extends_the_model_and_says_what_it_added(
    panel: pl.DataFrame, full: RiskModel, saved: Path, tmp_path: Path
) -> None:
    path = tmp_path / "panel.parquet"
    panel.write_parquet(path)
    code, out, err = invoke("update", "--model", str(saved), "--data", str(path), "--out", str(tmp_path / "updated"))
    assert code == 0, err
    new = panel.get_column("date").unique().sort()[-NEW:]
    assert f"added: {NEW} date(s), {new[0]} → {new[-1]}" in out.replace("\n", " ")
    assert_equal_on_new_dates(load_model(tmp_path / "updated"), full, _cut(panel))
    code, out, _ = invoke("update", "--model", str(tmp_path / "updated"), "--data", str(path))
    assert code == 0 and "nothing to add" in out
    code, _, err = invoke("update", "--model", str(tmp_path / "missing"), "--data", str(path))
    assert code == 1 and err.startswith("error:") and "missing" in err


def test_an_asset_with_sparse_rows_makes_the_update_read_further_back(tmp_path: Path) -> None:
    """An asset with a row on one date in four needs its own 272 rows, over 1,000 dates: beyond the keys an
    update reads first, so it reads them all; the result still equals the build."""
    panel = generate_market(60, 900, seed=6).panel
    sparse = panel["symbol"].unique().sort()[5]
    day = pl.col("date").rank("dense").cast(pl.Int64)
    panel = panel.filter(((pl.col("symbol") != sparse) | (day % 4 == 0)) & (day <= 900 // 4 * 4))
    cut = _cut(panel, 1)  # the new date is one of the sparse asset's
    build_model(panel.filter(pl.col("date") <= cut)).save(tmp_path / "model")
    full = build_model(panel)
    result = update_model(tmp_path / "model", panel)
    # the sparse asset's 224 rows are fewer than momentum's 272: they are all needed, from its first
    first_row = panel.filter(pl.col("symbol") == sparse)["date"].min()
    assert result.history_start == first_row < panel["date"].unique().sort()[-548]
    assert_equal_on_new_dates(load_model(tmp_path / "model"), full, cut)


@pytest.fixture()
def custom_style() -> Iterator[str]:
    """A user style that declares no lookback (a 10-row rolling mean of returns): an update recomputes it on the
    whole history."""

    def rolling_return(df: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
        frame = df.lazy().select("date", "symbol", "asset_returns").sort("symbol", "date").collect()
        score = pl.col("asset_returns").rolling_mean(10).over("symbol")
        return frame.with_columns(score.alias("roll_score")).select("date", "symbol", "roll_score").sort("date")

    styles.register_style("test_rolling", rolling_return, score="roll_score", inputs=("asset_returns",))
    yield "test_rolling"
    styles.unregister_style("test_rolling")


@pytest.mark.parametrize(
    ("settings", "caps"),
    [
        ({"regression": {"method": "toraniko"}, "styles": {"preset": "toraniko"}}, True),  # same-day exposures
        ({}, False),  # no market caps: equal weights, every asset, no size styles
    ],
    ids=["toraniko", "no-caps"],
)
def test_update_with_other_methods_and_data_equals_a_build(
    panel: pl.DataFrame, settings: dict[str, Any], caps: bool, tmp_path: Path
) -> None:
    data = panel if caps else panel.drop("market_cap")
    config = ModelConfig.from_mapping(settings)
    cut = _cut(data, 2)
    build_model(data.filter(pl.col("date") <= cut), config).save(tmp_path / "model")
    full = build_model(data, config)
    update_model(tmp_path / "model", data)
    assert_equal_on_new_dates(load_model(tmp_path / "model"), full, cut)


def test_a_style_without_a_lookback_is_recomputed_on_the_whole_history(
    panel: pl.DataFrame, custom_style: str, tmp_path: Path
) -> None:
    config = ModelConfig.from_mapping({"styles": {"names": ["momentum", custom_style]}})
    cut = _cut(panel, 2)
    build_model(panel.filter(pl.col("date") <= cut), config).save(tmp_path / "model")
    full = build_model(panel, config)
    assert "roll_score" in full.factors
    result = update_model(tmp_path / "model", panel)
    assert result.history_start == panel["date"].min()
    assert_equal_on_new_dates(load_model(tmp_path / "model"), full, cut)


def test_a_model_cut_at_a_start_date_updates_to_the_build_cut_alike(panel: pl.DataFrame, tmp_path: Path) -> None:
    """A model built with a warm-up and cut at a start date (the service's start_date) keeps the warm-up's factor
    returns in its state: updated, it equals the build of the longer panel cut at the same date."""
    dates = panel.get_column("date").unique().sort()
    start, cut = dates[100], _cut(panel, 2)  # 350 dates kept: more than the styles look back on
    build_model(panel.filter(pl.col("date") <= cut)).between(start=start).save(tmp_path / "model")
    full = build_model(panel).between(start=start)
    update_model(tmp_path / "model", panel)
    assert_equal_on_new_dates(load_model(tmp_path / "model"), full, cut)
    # a model whose stored dates are shorter than its styles look back on cannot be updated exactly
    build_model(panel.filter(pl.col("date") <= cut)).between(start=dates[-60]).save(tmp_path / "short")
    with pytest.raises(ModelError, match=r"rows from before the model's first date.*rebuild it with an earlier start"):
        update_model(tmp_path / "short", panel)
