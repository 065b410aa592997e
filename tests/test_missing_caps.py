"""A missing market cap (null, or NaN read as null) is a missing observation: the contract accepts it, and a model
leaves the row out as if it were not in the panel (build, update, live session); a symbol without any cap is
absent, and a panel without a cap on any row is one without ``market_cap``."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from cli_runner import invoke
from db_fixtures import database, store  # noqa: F401
from factor_engine.config import ModelConfig
from factor_engine.live import LiveModel, live_factor_returns
from factor_engine.model import RiskModel, build_model, load_model
from factor_engine.model_folder import ModelError
from factor_engine.panel import DATE, MARKET_CAP, SYMBOL, PanelError, validate_panel
from factor_engine.storage import Store
from factor_engine.synthetic import generate_market
from factor_engine.update import differences, update_model

# a short momentum window and forecasts that start early: 160 dates give every table something to compare
CONFIG = ModelConfig.from_mapping(
    {
        "styles": {"momentum": {"trailing_days": 20, "half_life": 10, "lag": 5}},
        "covariance": {"min_periods": 20},
        "adjustments": {"eigenfactor_simulations": 20},
        "specific_risk": {"min_periods": 10},
        "universe": {"size": 60},  # binds (up to 80 assets a date): the previous cap ranks
    }
)
N_DATES = 160
NEW = 3  # dates an update adds


@pytest.fixture(scope="module")
def panel() -> pl.DataFrame:
    return validate_panel(generate_market(80, N_DATES, seed=5).panel)


@pytest.fixture(scope="module")
def dates(panel: pl.DataFrame) -> list[datetime.date]:
    return panel.get_column(DATE).unique().sort().to_list()


@pytest.fixture(scope="module")
def chosen(panel: pl.DataFrame) -> tuple[str, str, str, str]:
    """Four symbols with a row on every date, in sorted order: A (some caps missing), B (no cap at all),
    C (NaN caps), D (a cap missing on the last date only)."""
    counts = panel.group_by(SYMBOL).len().filter(pl.col("len") == N_DATES).sort(SYMBOL)
    a, b, c, d = counts.get_column(SYMBOL).to_list()[:4]
    return a, b, c, d


@pytest.fixture(scope="module")
def holes(dates: list[datetime.date], chosen: tuple[str, str, str, str]) -> pl.DataFrame:
    """``date, symbol`` of the rows whose cap is missing: A on 30 dates (the last two before an update's cut
    and its first new date among them), B on all 160, C on 5 (as NaN), D on the last date: 196 rows."""
    a, b, c, d = chosen
    a_dates = [*dates[60:87], *dates[-NEW - 2 : -NEW + 1]]
    rows = [(day, a) for day in a_dates] + [(day, b) for day in dates] + [(day, c) for day in dates[100:105]]
    rows.append((dates[-1], d))
    return pl.DataFrame(rows, schema={DATE: pl.Date, SYMBOL: pl.String}, orient="row")


@pytest.fixture(scope="module")
def nulled(panel: pl.DataFrame, holes: pl.DataFrame, chosen: tuple[str, str, str, str]) -> pl.DataFrame:
    """The panel with the holes' caps missing, unvalidated: null, and NaN for C (validation reads it as null)."""
    marked = panel.join(holes.with_columns(pl.lit(True).alias("hole")), on=[DATE, SYMBOL], how="left")
    missing = pl.when(pl.col(SYMBOL) == chosen[2]).then(float("nan")).otherwise(None)
    return marked.with_columns(
        pl.when(pl.col("hole")).then(missing).otherwise(pl.col(MARKET_CAP)).alias(MARKET_CAP)
    ).drop("hole")


@pytest.fixture(scope="module")
def removed(panel: pl.DataFrame, holes: pl.DataFrame) -> pl.DataFrame:
    """The panel without the holes' rows."""
    return panel.join(holes, on=[DATE, SYMBOL], how="anti")


@pytest.fixture(scope="module")
def models(nulled: pl.DataFrame, removed: pl.DataFrame) -> tuple[RiskModel, RiskModel]:
    return build_model(validate_panel(nulled), CONFIG), build_model(removed, CONFIG)


def assert_same_tables(got: RiskModel, want: RiskModel) -> None:
    """The same factors and, to 1e-12, the same factor returns, exposures, residuals, diagnostics, specific risk
    and factor covariance (same rows, same missing values)."""
    assert got.factors == want.factors
    for name in ("factor_returns", "exposures", "residuals", "diagnostics", "specific_risk"):
        assert_frame_equal(getattr(got, name), getattr(want, name), check_exact=False, rel_tol=0, abs_tol=1e-12)
    assert got.factor_covariance is not None and want.factor_covariance is not None
    assert_frame_equal(
        got.factor_covariance.to_frame(), want.factor_covariance.to_frame(), check_exact=False, rel_tol=0, abs_tol=1e-12
    )


# --------------------------------------------------------------------------------------------------
# the contract


def test_validation_keeps_missing_caps_and_reads_nan_as_null(nulled: pl.DataFrame, holes: pl.DataFrame) -> None:
    valid = validate_panel(nulled)
    assert valid.height == nulled.height
    assert valid.get_column(MARKET_CAP).null_count() == holes.height == 196
    assert valid.get_column(MARKET_CAP).is_nan().sum() == 0
    missing = valid.filter(pl.col(MARKET_CAP).is_null()).select(DATE, SYMBOL)
    assert_frame_equal(missing, holes.sort(DATE, SYMBOL))


def test_a_present_cap_must_still_be_positive_and_finite(panel: pl.DataFrame) -> None:
    """Zero, negative and infinite caps are refused with the rows named; a null cap among them is not counted."""
    first, second, third = panel.head(3).iter_rows(named=True)
    bad = {(first[DATE], first[SYMBOL]): 0.0, (second[DATE], second[SYMBOL]): -5.0}
    bad[(third[DATE], third[SYMBOL])] = float("-inf")
    keyed = pl.DataFrame(
        [(d, s, v) for (d, s), v in bad.items()], schema={DATE: pl.Date, SYMBOL: pl.String, "bad": pl.Float64},
        orient="row",
    )  # fmt: skip
    broken = (
        panel.join(keyed, on=[DATE, SYMBOL], how="left")
        .with_columns(pl.coalesce("bad", MARKET_CAP).alias(MARKET_CAP))
        .drop("bad")
        .with_columns(pl.when(pl.int_range(pl.len()) == 10).then(None).otherwise(pl.col(MARKET_CAP)).alias(MARKET_CAP))
    )
    with pytest.raises(PanelError) as error:
        validate_panel(broken)
    message = str(error.value)
    assert message.startswith("market_cap must be positive and finite (not inf or <= 0; null is allowed")
    assert ": 3 bad rows, e.g. " in message
    for (day, symbol), value in bad.items():
        assert f"({day}, {symbol}) = {value!r}" in message
    assert "not null" not in message
    for value in (float("inf"), 0.0):
        with pytest.raises(PanelError, match=r"market_cap must be positive and finite .*: 1 bad row, e\.g\. \("):
            validate_panel(panel.with_columns(pl.when(pl.int_range(pl.len()) == 4).then(value)
                                              .otherwise(pl.col(MARKET_CAP)).alias(MARKET_CAP)))  # fmt: skip


# --------------------------------------------------------------------------------------------------
# the build


def test_a_missing_cap_leaves_the_row_out_as_if_it_were_not_in_the_panel(
    models: tuple[RiskModel, RiskModel], holes: pl.DataFrame, chosen: tuple[str, str, str, str]
) -> None:
    with_holes, without_rows = models
    assert with_holes.factor_returns.height > 100 and with_holes.factor_covariance is not None
    assert_same_tables(with_holes, without_rows)
    # no exposure, residual or specific risk on a date without a cap; B nowhere; A on its other dates
    for frame in (with_holes.exposures, with_holes.residuals, with_holes.specific_risk):
        assert frame is not None
        assert frame.join(holes, on=[DATE, SYMBOL], how="semi").height == 0
        assert chosen[1] not in set(frame.get_column(SYMBOL).to_list())
    assert with_holes.exposures.filter(pl.col(SYMBOL) == chosen[0]).height > 0


def test_the_notes_and_the_warning_count_what_was_left_out(
    models: tuple[RiskModel, RiskModel], chosen: tuple[str, str, str, str]
) -> None:
    with_holes, without_rows = models
    a, b, c, d = chosen
    assert with_holes.notes["market_cap_missing"] == {
        "rows": 196,
        "symbols": [a, b, c, d],
        "symbols_left_out": [b],
    }
    assert with_holes.notes["market_cap"] == (
        "present: regression weights sqrt(market_cap), cap-weighted sector constraint; missing on 196 rows of 4 "
        "symbols: those rows are left out of the model"
    )
    expected = (
        f"market_cap missing on 196 rows of 4 symbols ({a}, {b}, {c}, {d}): those rows are left out of the model (no "
        "exposure, residual or specific risk on those dates; their returns do not enter the regression); 1 symbol "
        f"without a cap on any date is left out entirely ({b}); give their caps (factor-engine prepare --caps or "
        "--shares) to include them"
    )
    assert with_holes.warnings == (expected, *without_rows.warnings)
    # everything else the build noted is what it notes for the panel without those rows
    skip = {"market_cap", "market_cap_missing", "warnings"}
    assert {k: v for k, v in with_holes.notes.items() if k not in skip} == {
        k: v for k, v in without_rows.notes.items() if k not in skip
    }
    assert "market_cap_missing" not in without_rows.notes


def test_every_cap_missing_is_a_panel_without_market_cap(panel: pl.DataFrame) -> None:
    empty = panel.with_columns(pl.lit(None, dtype=pl.Float64).alias(MARKET_CAP))
    config = ModelConfig.from_mapping({"styles": {"names": ["momentum", "value"]}, "covariance": {"min_periods": 20}})
    without_caps = build_model(empty, config)
    no_column = build_model(panel.drop(MARKET_CAP), config)
    assert_same_tables(without_caps, no_column)
    assert without_caps.notes["market_cap"] == no_column.notes["market_cap"]
    assert without_caps.notes["market_cap"].startswith("absent: equal regression weights")
    assert without_caps.notes["market_cap_missing"]["rows"] == panel.height
    assert without_caps.warnings == (
        f"market_cap is missing on every one of the {panel.height:,} rows: the panel is treated as having no "
        "market_cap column",
        *no_column.warnings,
    )
    assert any(w.startswith("no market_cap column: equal regression weights") for w in no_column.warnings)


def test_the_command_builds_with_missing_caps_and_prints_the_warning(
    nulled: pl.DataFrame, models: tuple[RiskModel, RiskModel], chosen: tuple[str, str, str, str], tmp_path: Path
) -> None:
    """``factor-engine build`` on a Parquet panel with null and NaN caps: exit 0, the warning printed, the model
    folder the library's."""
    data, out, config = tmp_path / "panel.parquet", tmp_path / "model", tmp_path / "model.toml"
    nulled.write_parquet(data)
    config.write_text(
        "[styles.momentum]\ntrailing_days = 20\nhalf_life = 10\nlag = 5\n[covariance]\nmin_periods = 20\n"
        "[adjustments]\neigenfactor_simulations = 20\n[specific_risk]\nmin_periods = 10\n[universe]\nsize = 60\n"
    )
    code, stdout, stderr = invoke("build", "--data", str(data), "--out", str(out), "--config", str(config))
    assert code == 0, stderr
    a, b, c, d = chosen
    assert f"warning: market_cap missing on 196 rows of 4 symbols ({a}, {b}, {c}, {d}): those rows" in stdout
    assert f"1 symbol without a cap on any date is left out entirely ({b})" in stdout
    saved = load_model(out)
    assert_same_tables(saved, models[0])
    assert saved.notes["market_cap_missing"]["rows"] == 196


# --------------------------------------------------------------------------------------------------
# the update


def test_an_update_with_missing_caps_on_new_dates_equals_the_build(
    nulled: pl.DataFrame,
    models: tuple[RiskModel, RiskModel],
    dates: list[datetime.date],
    chosen: tuple[str, str, str, str],
    tmp_path: Path,
) -> None:
    """Built through the cut (A's cap missing on its last two dates), updated by 3 dates on which A lacks its
    first cap, B every cap and D the last one: 5 rows of 3 symbols left out; the model equals the build."""
    a, b, _, d = chosen
    cut = dates[-NEW - 1]
    valid = validate_panel(nulled)
    build_model(valid.filter(pl.col(DATE) <= cut), CONFIG).save(tmp_path / "model")
    result = update_model(tmp_path / "model", valid)
    assert result.new_dates == tuple(dates[-NEW:])
    expected = (
        f"market_cap missing on 5 rows of 3 symbols of the new dates ({a}, {b}, {d}): those rows are left out of "
        "the model (no exposure, residual or specific risk on those dates; their returns do not enter the "
        f"regression); 1 symbol without a cap on any date of the new dates is left out entirely ({b}); give their "
        "caps (factor-engine prepare --caps or --shares) to include them"
    )
    assert result.warnings == (expected,)
    updated = load_model(tmp_path / "model")
    assert updated.notes["updated"]["market_cap_missing"] == {"rows": 5, "symbols": [a, b, d], "symbols_left_out": [b]}
    assert updated.notes["updated"]["warnings"] == [expected]
    gaps = differences(updated, models[0], cut)
    assert set(gaps) >= {"factor returns", "exposures", "specific risk", "factor covariance", "earlier exposures"}
    assert all(gap < 1e-10 for gap in gaps.values()), gaps
    assert updated.exposures.filter((pl.col(SYMBOL) == d) & (pl.col(DATE) == dates[-1])).height == 0
    assert updated.exposures.filter((pl.col(SYMBOL) == a) & (pl.col(DATE) == dates[-2])).height == 1
    # the command prints the warning (the model saved before the update is the one the library extended)
    build_model(valid.filter(pl.col(DATE) <= cut), CONFIG).save(tmp_path / "again")
    valid.write_parquet(tmp_path / "panel.parquet")
    code, stdout, stderr = invoke(
        "update", "--model", str(tmp_path / "again"), "--data", str(tmp_path / "panel.parquet")
    )
    assert code == 0, stderr
    assert f"warning: {expected}" in stdout


def test_an_update_without_any_cap_on_the_new_dates_is_refused(
    panel: pl.DataFrame, dates: list[datetime.date], tmp_path: Path
) -> None:
    cut = dates[-NEW - 1]
    build_model(panel.filter(pl.col(DATE) <= cut), CONFIG).save(tmp_path / "model")
    later = pl.col(DATE) > cut
    no_new_caps = panel.with_columns(pl.when(later).then(None).otherwise(pl.col(MARKET_CAP)).alias(MARKET_CAP))
    rows = panel.filter(later).height
    with pytest.raises(ModelError, match=rf"market_cap is missing on every one of the panel's {rows:,} rows after"):
        update_model(tmp_path / "model", no_new_caps, out=tmp_path / "out")
    with pytest.raises(ModelError, match=r"weights by market cap but the panel has no market_cap column"):
        update_model(tmp_path / "model", panel.drop(MARKET_CAP), out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_model_built_without_caps_updates_ignoring_the_panels_caps(
    panel: pl.DataFrame, dates: list[datetime.date], tmp_path: Path
) -> None:
    """Built on a panel whose caps are all missing (no caps), updated with caps present on the new dates: the
    model stays equal-weighted and equals the build without caps."""
    config = ModelConfig.from_mapping({"styles": {"names": ["momentum", "value"]}, "covariance": {"min_periods": 20}})
    cut = dates[-NEW - 1]
    empty_before = panel.with_columns(
        pl.when(pl.col(DATE) <= cut).then(None).otherwise(pl.col(MARKET_CAP)).alias(MARKET_CAP)
    )
    build_model(empty_before.filter(pl.col(DATE) <= cut), config).save(tmp_path / "model")
    result = update_model(tmp_path / "model", empty_before)
    assert result.new_dates == tuple(dates[-NEW:]) and result.warnings == ()
    gaps = differences(load_model(tmp_path / "model"), build_model(panel.drop(MARKET_CAP), config), cut)
    assert all(gap < 1e-10 for gap in gaps.values()), gaps


# --------------------------------------------------------------------------------------------------
# live sessions and the store


def test_a_live_session_ranks_and_weights_by_the_caps_the_build_used(
    nulled: pl.DataFrame, removed: pl.DataFrame, dates: list[datetime.date]
) -> None:
    """Last night's model and caps with holes give the same live model and today's factor returns as without
    those rows, and the factor returns the build reports for today."""
    today = dates[-1]
    valid = validate_panel(nulled)
    # today's caps present (a live session cannot know a cap missing at today's close)
    valid = valid.filter((pl.col(DATE) < today) | pl.col(MARKET_CAP).is_not_null())
    before = valid.filter(pl.col(DATE) < today)
    last_night = build_model(before, CONFIG)
    live = LiveModel.from_model(last_night, before)
    reference = LiveModel.from_model(build_model(removed.filter(pl.col(DATE) < today), CONFIG), removed)
    assert live.symbols == reference.symbols
    np.testing.assert_array_equal(live.cap, reference.cap)
    assert live.rank_order is not None and reference.rank_order is not None
    np.testing.assert_array_equal(live.rank_order, reference.rank_order)
    rows = valid.filter((pl.col(DATE) == today) & pl.col("asset_returns").is_not_null())
    returns = dict(zip(rows.get_column(SYMBOL).to_list(), rows.get_column("asset_returns").to_list(), strict=True))
    result = live_factor_returns(live, returns=returns, unknown="drop")
    full = build_model(valid, CONFIG)
    expected = full.factor_returns.filter(pl.col(DATE) == today).select(full.factors).to_numpy()[0]
    np.testing.assert_allclose(result.factor_returns, expected, rtol=0, atol=1e-12 * np.abs(expected).max())


def test_the_store_keeps_missing_caps_as_null(store: Store, nulled: pl.DataFrame) -> None:  # noqa: F811
    valid = validate_panel(nulled)
    store.ingest_panel(valid)
    loaded = store.load_panel()
    assert_frame_equal(loaded.select(valid.columns), valid)
    assert loaded.get_column(MARKET_CAP).null_count() == 196
