"""Live intraday factor returns (factor_engine.live): a snapshot at the close equals the factor returns the next
build and the next update give that date, from returns, from prices and from part of the universe; an
independent numpy lstsq of the constrained WLS; a portfolio's live P&L, exposures and risk against the portfolio
functions."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import null_space

from factor_engine.config import ModelConfig
from factor_engine.live import LiveError, LiveModel, LiveSession, live_factor_returns
from factor_engine.model import RiskModel, build_model, load_model
from factor_engine.portfolio import PortfolioError, decompose_risk, portfolio_exposures
from factor_engine.portfolio.snapshot import snapshot_at
from factor_engine.synthetic import generate_market
from factor_engine.update import update_model

# a short momentum window: 160 days give covariance and specific-risk forecasts at the last close
BASE: dict[str, Any] = {
    "styles": {"momentum": {"trailing_days": 20, "half_life": 10, "lag": 5}},
    "covariance": {"min_periods": 20},
    "adjustments": {"eigenfactor_simulations": 20},
    "specific_risk": {"min_periods": 10},
}
TOLERANCE = 1e-10
CASES = {
    "barra": {},
    "barra-universe-150": {"universe": {"size": 150}},
    "toraniko-lag-1": {"regression": {"method": "toraniko", "exposure_lag": 1}},
}


def relative_difference(got: np.ndarray, want: np.ndarray) -> float:
    """max |got − want| over max |want| (NaN must match NaN)."""
    assert np.array_equal(np.isnan(got), np.isnan(want)), (got, want)
    finite = np.isfinite(want)
    return float(np.max(np.abs(got[finite] - want[finite])) / np.max(np.abs(want[finite])))


def config(case: str) -> ModelConfig:
    return ModelConfig.from_mapping({**BASE, **CASES[case]})


@pytest.fixture(scope="module")
def panel() -> pl.DataFrame:
    return generate_market(200, 160, seed=3).panel


@pytest.fixture(scope="module")
def last_date(panel: pl.DataFrame) -> datetime.date:
    day: datetime.date = panel.get_column("date").max()  # type: ignore[assignment]
    return day


@pytest.fixture(scope="module")
def before(panel: pl.DataFrame, last_date: datetime.date) -> pl.DataFrame:
    """The panel through the previous close: what a model built last night saw."""
    return panel.filter(pl.col("date") < last_date)


@pytest.fixture(scope="module")
def today(panel: pl.DataFrame, last_date: datetime.date) -> pl.DataFrame:
    """The last date's rows with a return: the full-day returns a snapshot at the close holds."""
    return panel.filter((pl.col("date") == last_date) & pl.col("asset_returns").is_not_null())


@pytest.fixture(scope="module")
def models(before: pl.DataFrame, panel: pl.DataFrame) -> dict[str, tuple[RiskModel, RiskModel]]:
    """Per case: (the model through the previous close, the full build including the last date)."""
    return {case: (build_model(before, config(case)), build_model(panel, config(case))) for case in CASES}


def returns_of(frame: pl.DataFrame) -> dict[str, float]:
    return dict(zip(frame.get_column("symbol").to_list(), frame.get_column("asset_returns").to_list(), strict=True))


def build_row(model: RiskModel, day: datetime.date) -> np.ndarray:
    return model.factor_returns.filter(pl.col("date") == day).select(model.factors).to_numpy()[0]


@pytest.mark.parametrize("case", list(CASES))
def test_snapshot_at_close_equals_next_build(
    case: str, models: dict[str, tuple[RiskModel, RiskModel]], panel: pl.DataFrame, today: pl.DataFrame, last_date
) -> None:
    last_night, full = models[case]
    # listed today: unknown to last night's model (dropped), as the build leaves them out (no exposures)
    result = live_factor_returns(last_night, panel, returns=returns_of(today), unknown="drop")
    assert result.as_of == last_night.exposures.get_column("date").max()
    assert result.factors == full.factors
    assert relative_difference(result.factor_returns, build_row(full, last_date)) <= TOLERANCE
    diagnostics = full.diagnostics.filter(pl.col("date") == last_date).row(0, named=True)
    assert result.n_assets == diagnostics["n_assets"]
    assert result.r2 == pytest.approx(diagnostics["r2"], rel=1e-10)
    residuals = full.residuals.filter(pl.col("date") == last_date).sort("symbol")
    assert result.residuals.get_column("symbol").to_list() == residuals.get_column("symbol").to_list()
    np.testing.assert_allclose(result.residuals["residual"], residuals["residual"], rtol=0, atol=1e-12)


def test_snapshot_at_close_equals_the_next_update(
    models: dict[str, tuple[RiskModel, RiskModel]],
    before: pl.DataFrame,
    panel: pl.DataFrame,
    today: pl.DataFrame,
    last_date: datetime.date,
    tmp_path: Path,
) -> None:
    """Last night's model saved at the close, read back for the live session; the next morning's update
    (factor_engine.update, ``factor-engine update``) adds the day: its factor returns are the live ones."""
    last_night, _ = models["barra"]
    last_night.save(tmp_path / "close")
    update_model(tmp_path / "close", panel, out=tmp_path / "updated")
    updated = load_model(tmp_path / "updated")
    live = live_factor_returns(load_model(tmp_path / "close"), before, returns=returns_of(today), unknown="drop")
    assert relative_difference(live.factor_returns, build_row(updated, last_date)) <= TOLERANCE


def test_prices_over_closes(
    models: dict[str, tuple[RiskModel, RiskModel]], panel: pl.DataFrame, today: pl.DataFrame, last_date
) -> None:
    last_night, full = models["barra"]
    rng = np.random.default_rng(5)
    closes = {symbol: float(rng.uniform(5.0, 500.0)) for symbol in today.get_column("symbol").to_list()}
    prices = {symbol: closes[symbol] * (1.0 + r) for symbol, r in returns_of(today).items()}
    session = LiveSession.from_model(last_night, panel)
    session.set_closes(closes, unknown="drop")
    result = session.update(prices=prices, unknown="drop")
    assert relative_difference(result.factor_returns, build_row(full, last_date)) <= TOLERANCE


def test_partial_prices_are_the_build_without_the_unpriced_rows(
    models: dict[str, tuple[RiskModel, RiskModel]], panel: pl.DataFrame, today: pl.DataFrame, last_date
) -> None:
    """Assets without a price yet have no row today: the live regression is the build's on a panel without
    those rows, and pricing the rest in a later message (incrementally) completes it."""
    last_night, full = models["barra"]
    symbols = today.get_column("symbol").to_list()
    rng = np.random.default_rng(11)
    priced = set(rng.choice(symbols, size=len(symbols) * 3 // 5, replace=False).tolist())
    partial_panel = panel.filter((pl.col("date") < last_date) | pl.col("symbol").is_in(list(priced)))
    partial_build = build_model(partial_panel, config("barra"))

    session = LiveSession.from_model(last_night, panel)
    all_returns = returns_of(today)
    first = {s: r for s, r in all_returns.items() if s in priced}
    wrong = dict.fromkeys(sorted(first)[:10], 0.5)  # replaced by the next message: the latest return counts
    session.apply(returns=wrong, unknown="drop")
    result = session.update(returns=first, unknown="drop")
    assert relative_difference(result.factor_returns, build_row(partial_build, last_date)) <= TOLERANCE
    known = set(session.model.symbols)
    assert result.n_priced == len(priced & known)
    assert not set(result.residuals.get_column("symbol").to_list()) - priced

    rest = {s: r for s, r in all_returns.items() if s not in priced}
    completed = session.update(returns=rest, unknown="drop")
    assert completed.updates == 3
    assert relative_difference(completed.factor_returns, build_row(full, last_date)) <= TOLERANCE


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), parts=st.integers(1, 6))
def test_order_and_batching_of_updates_change_nothing(
    models: dict[str, tuple[RiskModel, RiskModel]], panel: pl.DataFrame, today: pl.DataFrame, seed: int, parts: int
) -> None:
    """The day's returns sent in any number of messages, in any order, with symbols in any order, give the
    same factor returns, bit for bit, as one message: a session keeps the latest return of each asset."""
    last_night, _ = models["barra-universe-150"]
    live = LiveModel.from_model(last_night, panel)
    returns = returns_of(today)
    once = live_factor_returns(live, returns=returns, unknown="drop")
    rng = np.random.default_rng(seed)
    symbols = list(returns)
    rng.shuffle(symbols)
    session = LiveSession(live)
    for chunk in np.array_split(np.array(symbols, dtype=object), parts):
        session.apply(returns={s: returns[s] for s in chunk}, unknown="drop")
    np.testing.assert_array_equal(session.solve().factor_returns, once.factor_returns)


def test_against_numpy_lstsq_with_the_constraint(
    models: dict[str, tuple[RiskModel, RiskModel]], before: pl.DataFrame, today: pl.DataFrame
) -> None:
    """An independent solve of the barra regression: exposures of the last close, winsorized returns
    (numpy quantiles), weights sqrt(cap), Σ_s cap_s f_s = 0 imposed through scipy's null space, lstsq."""
    last_night, _ = models["barra"]
    as_of = before.get_column("date").max()
    exposures = last_night.exposures.filter(pl.col("date") == as_of)
    caps = before.filter(pl.col("date") == as_of).select("symbol", "market_cap")
    rows = exposures.join(caps, on="symbol").join(today.select("symbol", "asset_returns"), on="symbol")
    rows = rows.filter(pl.all_horizontal(pl.col(list(last_night.styles)).is_not_null())).sort("symbol")
    design = rows.select(last_night.factors).to_numpy()
    returns = rows.get_column("asset_returns").to_numpy()
    cap = rows.get_column("market_cap").to_numpy()
    low, high = np.quantile(returns, [0.05, 0.95])
    fitted = np.clip(returns, low, high)
    sectors = slice(1, 1 + len(last_night.sectors))
    constraint = np.zeros(len(last_night.factors))
    constraint[sectors] = cap @ design[:, sectors]
    basis = null_space(constraint[None, :])
    root = np.sqrt(np.sqrt(cap))  # rows scaled by sqrt(weight), weight = sqrt(cap)
    solution, *_ = np.linalg.lstsq(root[:, None] * design @ basis, root * fitted, rcond=None)
    reference = basis @ solution

    result = live_factor_returns(last_night, before, returns=returns_of(today), unknown="drop")
    assert result.n_assets == rows.height
    assert relative_difference(result.factor_returns, reference) <= TOLERANCE
    assert abs(constraint[sectors] @ result.factor_returns[sectors]) <= 1e-12 * np.abs(constraint).sum()


def test_universe_rank_follows_the_prices(models: dict[str, tuple[RiskModel, RiskModel]], panel, today) -> None:
    """With [universe] size 150, today's universe is the 150 largest by the last close's cap among the priced
    assets: with few priced, every one of them is in it."""
    last_night, _ = models["barra-universe-150"]
    live = LiveModel.from_model(last_night, panel)
    some = dict(list(returns_of(today).items())[:60])
    result = live_factor_returns(live, returns=some, unknown="drop")
    assert "outside today's universe" not in " ".join(result.excluded)
    everything = live_factor_returns(live, returns=returns_of(today), unknown="drop")
    outside = next(count for reason, count in everything.excluded.items() if reason.startswith("outside"))
    assert everything.n_priced - outside <= 150


def test_portfolio_pnl_exposures_and_risk(models: dict[str, tuple[RiskModel, RiskModel]], panel, today) -> None:
    last_night, _ = models["barra"]
    snapshot = snapshot_at(last_night)
    rng = np.random.default_rng(2)
    held = rng.choice(len(snapshot.symbols), size=40, replace=False)
    weights = {snapshot.symbols[i]: float(w) for i, w in zip(held, rng.dirichlet(np.ones(40)), strict=True)}
    returns = returns_of(today)
    unpriced = sorted(weights)[:5]
    session = LiveSession.from_model(last_night, panel)
    result = session.update(returns={s: r for s, r in returns.items() if s not in unpriced}, unknown="drop")
    live = session.portfolio(weights)

    day = {s: (0.0 if s in unpriced else returns.get(s, 0.0)) for s in weights}
    pnl = sum(w * day[s] for s, w in weights.items())
    assert live.pnl == pytest.approx(pnl, rel=1e-12)
    assert live.n_holdings == 40
    assert live.n_priced == sum(1 for s in weights if s not in unpriced and s in returns)
    # factor P&L: exposures of the priced holdings (exposures at the last close) times today's factor returns
    index = {s: i for i, s in enumerate(snapshot.symbols)}
    exposure = sum(w * snapshot.exposures[index[s]] for s, w in weights.items() if s not in unpriced and s in returns)
    factor_returns = dict(zip(result.factors, result.factor_returns, strict=True))
    expected = exposure * np.array([factor_returns[f] for f in snapshot.factors])
    np.testing.assert_allclose(live.factor_pnl.get_column("pnl").to_numpy(), expected, rtol=1e-12, atol=1e-16)
    assert live.factor_total + live.specific_pnl == pytest.approx(live.pnl, rel=1e-12)
    # exposures and risk of the drifted weights, computed independently
    drifted = {s: w * (1.0 + day[s]) / (1.0 + pnl) for s, w in weights.items()}
    want_exposures = portfolio_exposures(snapshot, drifted, allow_unnormalized=True)
    np.testing.assert_allclose(live.exposures["portfolio"], want_exposures["portfolio"], rtol=1e-12, atol=1e-15)
    want_risk = decompose_risk(snapshot, drifted, allow_unnormalized=True)
    assert live.risk.total_risk == pytest.approx(want_risk.total_risk, rel=1e-12)
    assert live.risk.factor_risk == pytest.approx(want_risk.factor_risk, rel=1e-12)
    assert live.risk.specific_risk == pytest.approx(want_risk.specific_risk, rel=1e-12)


def test_portfolio_errors(models: dict[str, tuple[RiskModel, RiskModel]], panel) -> None:
    last_night, _ = models["barra"]
    session = LiveSession.from_model(last_night, panel)
    with pytest.raises(PortfolioError, match="does not cover: 'NOPE'"):
        session.book({"NOPE": 1.0})
    with pytest.raises(PortfolioError, match="look like percentages"):
        session.book({session.model.snapshot.symbols[0]: 100.0})  # type: ignore[union-attr]


def test_bad_updates_leave_the_session_unchanged(models: dict[str, tuple[RiskModel, RiskModel]], panel) -> None:
    last_night, _ = models["barra"]
    session = LiveSession.from_model(last_night, panel)
    a, b = session.model.symbols[:2]
    session.set_closes({a: 10.0})
    with pytest.raises(LiveError, match=r"1 symbol\(s\) the model does not know .*'ZZZ'"):
        session.apply(returns={a: 0.01, "ZZZ": 0.02})
    with pytest.raises(LiveError, match=r"prices must be finite and > 0; 1 are not: .*=nan"):
        session.apply(prices={a: float("nan")})
    with pytest.raises(LiveError, match="prices must be finite and > 0"):
        session.apply(prices={a: -3.0})
    with pytest.raises(LiveError, match="returns must be finite fractions > -1"):
        session.apply(returns={a: -1.5})
    with pytest.raises(LiveError, match=rf"without a previous close: '{b}'"):
        session.apply(prices={a: 11.0, b: 5.0})
    with pytest.raises(LiveError, match="closes must be finite and > 0"):
        session.set_closes({b: 0.0})
    assert np.isnan(session.returns).all()  # nothing of the refused updates was recorded
    nothing = session.solve()
    assert not nothing.solved
    assert nothing.reason == "no usable assets"
    session.apply(prices={a: 11.0, "ZZZ": 1.0}, unknown="drop")
    assert session.returns[session.model.index[a]] == pytest.approx(0.1)


def test_models_that_cannot_go_live(models: dict[str, tuple[RiskModel, RiskModel]], before: pl.DataFrame) -> None:
    last_night, _ = models["barra"]
    with pytest.raises(LiveError, match=r"weights its regression by market cap.*pass the panel"):
        LiveModel.from_model(last_night)
    with pytest.raises(LiveError, match="no market_cap for the model's assets at its last close"):
        LiveModel.from_model(last_night, before.filter(pl.col("date") < before.get_column("date").max()))
    same_day = build_model(
        before, ModelConfig.from_mapping({**BASE, "regression": {"method": "toraniko", "exposure_lag": 0}})
    )
    with pytest.raises(LiveError, match=r"exposure_lag = 1"):
        LiveModel.from_model(same_day, before)


def test_model_without_caps_weights_equally(before: pl.DataFrame, panel: pl.DataFrame, today, last_date) -> None:
    last_night = build_model(before.drop("market_cap"), config("barra"))
    full = build_model(panel.drop("market_cap"), config("barra"))
    result = live_factor_returns(last_night, returns=returns_of(today), unknown="drop")
    assert relative_difference(result.factor_returns, build_row(full, last_date)) <= TOLERANCE


def test_the_readme_live_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """The Python example of the README's Live section, as written."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Live\n") :]
    code = section[section.index("```python\n") + len("```python\n") :]
    namespace: dict[str, Any] = {}
    exec(compile(code[: code.index("```")], "README.md (Live)", "exec"), namespace)
    result, live = namespace["result"], namespace["live"]
    assert result.solved and 0 < result.n_assets <= 150
    assert live.factor_total + live.specific_pnl == pytest.approx(live.pnl, rel=1e-12)
    assert "factor_return" in capsys.readouterr().out
