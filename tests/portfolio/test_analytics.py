"""Portfolio risk analytics against the explicit N×N covariance, and attribution against generated truth."""

from __future__ import annotations

import datetime as dt
import re
import warnings

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factor_engine.portfolio import (
    PortfolioError,
    RiskDecomposition,
    RiskModelSnapshot,
    WeightsWarning,
    attribute_returns,
    check_weights,
    cumulative_attribution,
    decompose_risk,
    portfolio_exposures,
)


def make_snapshot(rng: np.random.Generator, n: int, k: int, *, rank: int | None = None) -> RiskModelSnapshot:
    loadings = rng.normal(scale=0.01, size=(k, rank if rank is not None else k + 2))
    factor_covariance = loadings @ loadings.T
    exposures = rng.normal(size=(n, k))
    specific_vol = rng.uniform(0.005, 0.03, size=n)
    return RiskModelSnapshot(
        factors=tuple(f"factor_{j}" for j in range(k)),
        symbols=tuple(f"S{i:03d}" for i in range(n)),
        exposures=exposures,
        factor_covariance=factor_covariance,
        specific_vol=specific_vol,
    )


def explicit_covariance(snapshot: RiskModelSnapshot) -> np.ndarray:
    b, f, s = snapshot.exposures, snapshot.factor_covariance, snapshot.specific_vol
    covariance = np.zeros((snapshot.n_assets, snapshot.n_assets))
    for i in range(snapshot.n_assets):  # the slow obvious way, entry by entry
        for j in range(snapshot.n_assets):
            covariance[i, j] = b[i] @ f @ b[j] + (s[i] ** 2 if i == j else 0.0)
    return covariance


def check_against_explicit(snapshot: RiskModelSnapshot, h: np.ndarray, result: RiskDecomposition) -> None:
    sigma = explicit_covariance(snapshot)
    total = float(np.sqrt(h @ sigma @ h))
    factor_part = snapshot.exposures @ snapshot.factor_covariance @ snapshot.exposures.T
    factor = float(np.sqrt(max(h @ factor_part @ h, 0.0)))
    specific = float(np.sqrt(np.sum((snapshot.specific_vol * h) ** 2)))
    scale = max(total, 1e-300)
    assert result.total_risk == pytest.approx(total, rel=1e-9, abs=1e-15)
    assert result.factor_risk == pytest.approx(factor, rel=1e-7, abs=1e-12 * scale)
    assert result.specific_risk == pytest.approx(specific, rel=1e-9, abs=1e-15)

    assets = result.asset_contributions
    np.testing.assert_array_equal(assets["weight"].to_numpy(), h)
    # marginal contributions to risk by central finite differences of sqrt(hᵀΣh)
    step = 1e-6 * max(float(np.abs(h).max()), 1e-3)

    def risk(v: np.ndarray) -> float:
        return float(np.sqrt(v @ sigma @ v))

    fd = np.array([(risk(h + step * e) - risk(h - step * e)) / (2 * step) for e in np.eye(len(h))])
    mcr = assets["mcr"].to_numpy()
    np.testing.assert_allclose(mcr, fd, rtol=1e-5, atol=1e-6 * float(np.abs(fd).max()))
    np.testing.assert_allclose(mcr, sigma @ h / total, rtol=1e-9, atol=1e-14)
    # Euler: contributions add up to total risk, shares to one
    assert assets["contribution"].sum() == pytest.approx(total, rel=1e-9)
    assert assets["share"].sum() == pytest.approx(1.0, rel=1e-9)

    factors = result.factor_contributions
    x = snapshot.exposures.T @ h
    np.testing.assert_allclose(result.exposures["exposure"].to_numpy(), x, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(factors["exposure"].to_numpy(), x, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(factors["volatility"].to_numpy(), np.sqrt(np.diag(snapshot.factor_covariance)))
    # ρ from the joint covariance of (f, xᵀf) written out explicitly
    stacked = np.vstack([np.eye(len(x)), x[None, :]])
    joint = stacked @ snapshot.factor_covariance @ stacked.T
    sd = np.sqrt(np.diag(joint))
    rho = joint[:-1, -1] / (sd[:-1] * sd[-1])
    np.testing.assert_allclose(factors["correlation"].to_numpy(), rho, rtol=1e-7, atol=1e-9)
    contribution = factors["contribution"].to_numpy()
    np.testing.assert_allclose(contribution, x * sd[:-1] * rho, rtol=1e-7, atol=1e-12 * scale)
    assert contribution.sum() == pytest.approx(factor, rel=1e-7, abs=1e-12 * scale)
    shares = factors["variance_share"].sum() + result.specific_variance_share
    assert factors["variance_share"].sum() == pytest.approx(result.factor_variance_share, rel=1e-9, abs=1e-12)
    assert shares == pytest.approx(1.0, rel=1e-9)
    assert result.factor_variance_share + result.specific_variance_share == pytest.approx(1.0, rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 25),
    k=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
    long_short=st.booleans(),
    rank_deficient=st.booleans(),
)
def test_decomposition_matches_explicit_covariance(
    n: int, k: int, seed: int, long_short: bool, rank_deficient: bool
) -> None:
    rng = np.random.default_rng(seed)
    snapshot = make_snapshot(rng, n, k, rank=1 if rank_deficient else None)
    weights = rng.normal(size=n) if long_short else rng.dirichlet(np.ones(n))
    result = decompose_risk(snapshot, weights, allow_unnormalized=long_short)
    assert result.tracking_error is None
    assert result.warnings == ()  # a long-only book summing to 1, or the opt-in
    check_against_explicit(snapshot, weights, result)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 25), k=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_active_risk_is_risk_of_active_weights(n: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    snapshot = make_snapshot(rng, n, k)
    weights, benchmark = rng.dirichlet(np.ones(n)), rng.dirichlet(np.ones(n))
    result = decompose_risk(snapshot, weights, benchmark)
    active = weights - benchmark
    check_against_explicit(snapshot, active, result)
    sigma = explicit_covariance(snapshot)
    assert result.tracking_error == pytest.approx(float(np.sqrt(active @ sigma @ active)), rel=1e-9)

    exposures = portfolio_exposures(snapshot, weights, benchmark)
    assert exposures.columns == ["factor", "portfolio", "benchmark", "active"]
    assert exposures["factor"].to_list() == list(snapshot.factors)
    np.testing.assert_allclose(exposures["portfolio"].to_numpy(), weights @ snapshot.exposures)
    np.testing.assert_allclose(exposures["benchmark"].to_numpy(), benchmark @ snapshot.exposures)
    np.testing.assert_allclose(exposures["active"].to_numpy(), active @ snapshot.exposures, atol=1e-14)


def test_asset_covariance_is_explicit() -> None:
    snapshot = make_snapshot(np.random.default_rng(1), 12, 3)
    np.testing.assert_allclose(snapshot.asset_covariance(), explicit_covariance(snapshot), rtol=1e-12, atol=1e-18)
    h = np.random.default_rng(2).normal(size=12)
    np.testing.assert_allclose(snapshot.covariance_times(h), explicit_covariance(snapshot) @ h, rtol=1e-12)


def test_weight_forms_agree_and_symbol_order_does_not_matter() -> None:
    rng = np.random.default_rng(3)
    snapshot = make_snapshot(rng, 30, 4)
    held = rng.choice(30, size=12, replace=False)
    vector = np.zeros(30)
    vector[held] = rng.normal(size=12)
    symbols = [snapshot.symbols[i] for i in held]
    frame = pl.DataFrame({"symbol": symbols, "weight": vector[held]})
    mapping = dict(zip(symbols, vector[held], strict=True))
    reference = decompose_risk(snapshot, vector, allow_unnormalized=True)
    for weights in (frame, frame.reverse(), mapping):
        result = decompose_risk(snapshot, weights, allow_unnormalized=True)
        assert result.total_risk == reference.total_risk
        assert result.asset_contributions.equals(reference.asset_contributions)

    # permuting the model's symbols (rows of B and σ) together with the weights changes nothing
    order = rng.permutation(30)
    permuted = RiskModelSnapshot(
        snapshot.factors,
        tuple(snapshot.symbols[i] for i in order),
        snapshot.exposures[order],
        snapshot.factor_covariance,
        snapshot.specific_vol[order],
    )
    result = decompose_risk(permuted, frame, allow_unnormalized=True)
    assert result.total_risk == pytest.approx(reference.total_risk, rel=1e-12)
    joined = result.asset_contributions.join(reference.asset_contributions, on="symbol", suffix="_ref")
    np.testing.assert_allclose(joined["mcr"].to_numpy(), joined["mcr_ref"].to_numpy(), rtol=1e-12)


def test_from_frames_reorders_covariance_and_specific_vol() -> None:
    rng = np.random.default_rng(4)
    snapshot = make_snapshot(rng, 8, 3)
    exposures = pl.DataFrame({"symbol": list(snapshot.symbols)}).with_columns(
        *[pl.Series(f, snapshot.exposures[:, j]) for j, f in enumerate(snapshot.factors)]
    )
    reversed_factors = list(reversed(snapshot.factors))
    covariance_frame = pl.DataFrame(
        {"factor": reversed_factors} | {f: snapshot.factor_covariance[::-1, j] for j, f in enumerate(snapshot.factors)}
    )
    vol_frame = pl.DataFrame({"symbol": list(snapshot.symbols), "specific_vol": snapshot.specific_vol}).reverse()
    rebuilt = RiskModelSnapshot.from_frames(exposures, covariance_frame, vol_frame)
    assert rebuilt.factors == snapshot.factors and rebuilt.symbols == snapshot.symbols
    np.testing.assert_array_equal(rebuilt.factor_covariance, snapshot.factor_covariance)
    np.testing.assert_array_equal(rebuilt.specific_vol, snapshot.specific_vol)
    np.testing.assert_array_equal(rebuilt.exposures, snapshot.exposures)


def test_unknown_symbols_raise_or_drop_with_count() -> None:
    snapshot = make_snapshot(np.random.default_rng(5), 6, 2)
    weights = {"S000": 0.5, "S001": 0.5, "XYZ": 0.1, "ABC": 0.1}
    with pytest.raises(PortfolioError, match=r"2 symbol\(s\) the risk model does not cover: 'XYZ', 'ABC'"):
        decompose_risk(snapshot, weights)
    with pytest.warns(UserWarning, match=r"dropped 2 weights symbol"):
        result = decompose_risk(snapshot, weights, unknown="drop")
    assert result.dropped_symbols == ("XYZ", "ABC")
    expected = decompose_risk(snapshot, {"S000": 0.5, "S001": 0.5})
    assert result.total_risk == expected.total_risk
    with pytest.raises(PortfolioError, match=r"benchmark weights name 1 symbol\(s\).*'QQQ'"):
        portfolio_exposures(snapshot, {"S000": 1.0}, {"QQQ": 1.0})


def test_annualized_scales_risk_not_shares() -> None:
    rng = np.random.default_rng(6)
    snapshot = make_snapshot(rng, 10, 3)
    daily = decompose_risk(snapshot, rng.dirichlet(np.ones(10)), rng.dirichlet(np.ones(10)))
    annual = daily.annualized()
    scale = np.sqrt(252)
    assert annual.total_risk == pytest.approx(daily.total_risk * scale)
    assert annual.tracking_error == pytest.approx(daily.total_risk * scale)
    assert annual.factor_contributions["contribution"].sum() == pytest.approx(annual.factor_risk)
    assert annual.asset_contributions["contribution"].sum() == pytest.approx(annual.total_risk)
    assert annual.asset_contributions["share"].equals(daily.asset_contributions["share"])
    assert annual.periods_per_year == 252
    with pytest.raises(PortfolioError, match="already annualized"):
        annual.annualized()


def test_zero_portfolio_has_zero_risk_and_undefined_marginals() -> None:
    snapshot = make_snapshot(np.random.default_rng(7), 5, 2)
    result = decompose_risk(snapshot, np.zeros(5), allow_unnormalized=True)
    assert result.total_risk == 0.0 and result.factor_risk == 0.0
    assert result.asset_contributions["mcr"].is_nan().all()
    assert result.factor_contributions["contribution"].to_list() == [0.0, 0.0]


def test_snapshot_and_weight_errors() -> None:
    rng = np.random.default_rng(8)
    good = make_snapshot(rng, 4, 2)
    parts = (good.factors, good.symbols, good.exposures, good.factor_covariance, good.specific_vol)
    with pytest.raises(PortfolioError, match=r"specific_vol must be finite and >= 0; 1 symbol\(s\) are not: 'S002'"):
        RiskModelSnapshot(*parts[:4], np.array([0.01, 0.02, -0.01, 0.02]))
    with pytest.raises(PortfolioError, match=r"exposures have shape \(4, 3\); expected \(4, 2\)"):
        RiskModelSnapshot(*parts[:2], np.ones((4, 3)), *parts[3:])
    with pytest.raises(PortfolioError, match=r"factor_covariance has shape \(3, 3\); expected \(2, 2\)"):
        RiskModelSnapshot(*parts[:3], np.eye(3), parts[4])
    with pytest.raises(PortfolioError, match="not positive semi-definite"):
        RiskModelSnapshot(*parts[:3], np.array([[1.0, 2.0], [2.0, 1.0]]), parts[4])
    with pytest.raises(PortfolioError, match="not symmetric"):
        RiskModelSnapshot(*parts[:3], np.array([[1.0, 0.5], [0.0, 1.0]]), parts[4])
    with pytest.raises(PortfolioError, match="symbols must be unique; duplicated: 'A'"):
        RiskModelSnapshot(parts[0], ("A", "B", "A", "C"), *parts[2:])
    with pytest.raises(PortfolioError, match=r"exposures are not finite for 1 symbol\(s\): 'S001'"):
        RiskModelSnapshot(parts[0], parts[1], np.where(np.eye(4, 2) == 0, 1.0, np.nan)[[2, 1, 3, 2]], *parts[3:])

    exposures = pl.DataFrame({"symbol": list(good.symbols), "factor_0": [1.0] * 4, "factor_1": [0.0] * 4})
    wrong = pl.DataFrame({"factor": ["factor_0", "beta"], "factor_0": [1.0, 0.0], "beta": [0.0, 1.0]})
    with pytest.raises(PortfolioError, match=r"factor_covariance factors do not match.*missing \['factor_1'\]"):
        RiskModelSnapshot.from_frames(exposures, wrong, good.specific_vol)
    with pytest.raises(PortfolioError, match=r"specific_vol is missing for 1 symbol\(s\): 'S003'"):
        RiskModelSnapshot.from_frames(exposures, np.eye(2), {"S000": 0.1, "S001": 0.1, "S002": 0.1})

    with pytest.raises(PortfolioError, match=r"weights are not finite \(NaN, null or inf\) for 1 symbol\(s\): 'S001'"):
        decompose_risk(good, pl.DataFrame({"symbol": ["S000", "S001"], "weight": [0.5, float("nan")]}))
    with pytest.raises(PortfolioError, match=r"weights are not finite \(NaN, null or inf\) for 1 symbol\(s\): 'S000'"):
        decompose_risk(good, pl.DataFrame({"symbol": ["S000", "S001"], "weight": [None, 0.5]}))
    with pytest.raises(PortfolioError, match=r"benchmark weights are not finite for 1 symbol\(s\): 'S003'"):
        decompose_risk(good, np.full(4, 0.25), np.array([0.25, 0.25, 0.25, np.nan]))
    with pytest.raises(PortfolioError, match=r"weights array has shape \(3,\); expected \(4,\)"):
        decompose_risk(good, np.ones(3))
    with pytest.raises(PortfolioError, match="weights symbols must be unique; duplicated: 'S000'"):
        decompose_risk(good, pl.DataFrame({"symbol": ["S000", "S000"], "weight": [0.5, 0.5]}))
    with pytest.raises(PortfolioError, match="unknown must be 'raise' or 'drop'"):
        decompose_risk(good, np.ones(4), unknown="ignore")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- weight checks

PERCENT_HINT = (
    r"\(more than 150% of capital\)\. Weights are fractions \(0\.05 is 5 %\): divide percentages by 100, or pass "
    r"allow_unnormalized=True for a leveraged or long-short book"
)
SUM_HINT = (
    r"the figures are of these weights as given, not rescaled; scale them to sum to 1, or pass "
    r"allow_unnormalized=True for a long-short, active or partly invested book"
)


def test_percentage_weights_are_an_error_naming_why() -> None:
    snapshot = make_snapshot(np.random.default_rng(11), 250, 3)
    with pytest.raises(
        PortfolioError,
        match=r"^weights look like percentages, not fractions of capital: they sum to 100 and 'S000' has 60 "
        + PERCENT_HINT,
    ):
        decompose_risk(snapshot, {"S000": 60.0, "S001": 40.0})
    # a broad percent book: every weight is small, the sum gives it away
    broad = dict.fromkeys(snapshot.symbols[:200], 0.5)
    with pytest.raises(
        PortfolioError, match=r"^weights look like percentages, not fractions of capital: they sum to 100 \("
    ):
        portfolio_exposures(snapshot, broad)
    # one position over 150 % of capital in a book that nets to 1
    with pytest.raises(PortfolioError, match=r"fractions of capital: 'S007' has -2\.5 \(more than 150%"):
        decompose_risk(snapshot, {"S003": 2.0, "S007": -2.5, "S009": 1.5})
    with pytest.raises(PortfolioError, match=r"^benchmark weights look like percentages.*they sum to 100"):
        decompose_risk(snapshot, {"S000": 1.0}, {"S001": 50.0, "S002": 50.0})
    # the limit itself is allowed: |Σw| = 1.5 warns about the sum, a hair above is an error
    with pytest.warns(WeightsWarning, match=r"^weights sum to 1\.5, not 1"):
        decompose_risk(snapshot, {"S000": 1.5})
    with pytest.raises(PortfolioError, match=r"they sum to 1\.5 and 'S000' has 1\.5 "):
        decompose_risk(snapshot, {"S000": 1.5 + 1e-9})


def test_opt_in_keeps_long_short_and_leveraged_books_with_their_numbers() -> None:
    snapshot = make_snapshot(np.random.default_rng(12), 10, 3)
    h = np.zeros(10)
    h[[0, 3, 7]] = [2.5, -2.0, 0.5]  # a 250 % position, short 200 %: nets to 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning at all with the opt-in
        result = decompose_risk(snapshot, h, allow_unnormalized=True)
        neutral = portfolio_exposures(snapshot, {"S000": 1.0, "S001": -1.0}, allow_unnormalized=True)
    assert result.warnings == ()
    check_against_explicit(snapshot, h, result)
    np.testing.assert_allclose(
        neutral["portfolio"].to_numpy(), snapshot.exposures[0] - snapshot.exposures[1], rtol=1e-12, atol=1e-15
    )


def test_weights_not_summing_to_one_warn_and_are_used_as_given() -> None:
    snapshot = make_snapshot(np.random.default_rng(13), 8, 2)
    weights = {"S000": 0.5, "S001": 0.4}
    message = r"^weights sum to 0\.9, not 1 \(tolerance 0\.01\): " + SUM_HINT + "$"
    with pytest.warns(WeightsWarning, match=message):
        result = decompose_risk(snapshot, weights)
    assert len(result.warnings) == 1 and re.match(message, result.warnings[0])
    assert result.annualized().warnings == result.warnings
    h = np.zeros(8)
    h[:2] = [0.5, 0.4]
    check_against_explicit(snapshot, h, result)  # not rescaled to 1
    with pytest.warns(WeightsWarning, match=r"^benchmark weights sum to 0\.5, not 1"):
        both = decompose_risk(snapshot, {"S000": 1.0}, {"S002": 0.25, "S003": 0.25})
    assert len(both.warnings) == 1 and both.warnings[0].startswith("benchmark weights sum to 0.5")
    with pytest.warns(WeightsWarning, match=r"^weights sum to 0\.9, not 1"):
        portfolio_exposures(snapshot, weights)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        within = decompose_risk(snapshot, {"S000": 0.5, "S001": 0.495})  # 0.995: within the tolerance
    assert within.warnings == ()


def test_check_weights_forms_and_positions() -> None:
    assert check_weights({"A": 0.25, "B": 0.75}) == ()
    assert check_weights(pl.DataFrame({"symbol": ["A", "B"], "weight": [0.6, 0.6]})) == (
        "weights sum to 1.2, not 1 (tolerance 0.01): the figures are of these weights as given, not rescaled; "
        "scale them to sum to 1, or pass allow_unnormalized=True for a long-short, active or partly invested book",
    )
    with pytest.raises(PortfolioError, match="fractions of capital: they sum to 5 and the weight at position 1 has 4"):
        check_weights(np.array([1.0, 4.0]))
    with pytest.raises(PortfolioError, match="'B' has 4"):
        check_weights(np.array([1.0, 4.0]), symbols=["A", "B"])
    assert check_weights(np.array([1.0, 4.0]), allow_unnormalized=True) == ()
    assert check_weights({"A": 0.9}, sum_tolerance=0.2) == ()
    assert check_weights(np.array([]))[0].startswith("weights sum to 0, not 1")


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 300), seed=st.integers(0, 2**32 - 1))
def test_fractions_pass_and_the_same_book_in_percent_fails(n: int, seed: int) -> None:
    weights = np.random.default_rng(seed).dirichlet(np.ones(n))
    assert check_weights(weights) == ()
    with pytest.raises(PortfolioError, match="look like percentages"):
        check_weights(100 * weights)


# ---------------------------------------------------------------------------------------------- attribution


@pytest.fixture(scope="module")
def generated_market() -> dict[str, object]:
    """Returns generated exactly as r = B f + u on a few dates, with dated long-short weights."""
    rng = np.random.default_rng(11)
    n_dates, n, k = 6, 40, 4
    dates = [dt.date(2024, 1, 2) + dt.timedelta(days=t) for t in range(n_dates)]
    symbols = [f"S{i:03d}" for i in range(n)]
    factors = [f"factor_{j}" for j in range(k)]
    exposures = rng.normal(size=(n_dates, n, k))
    factor_returns = rng.normal(scale=0.01, size=(n_dates, k))
    specific = rng.normal(scale=0.02, size=(n_dates, n))
    returns = np.einsum("tnk,tk->tn", exposures, factor_returns) + specific
    weights = rng.normal(size=(n_dates, n)) / n
    weights[rng.random((n_dates, n)) < 0.3] = 0.0  # not held
    date_col = np.repeat(np.array(dates, dtype="datetime64[D]"), n)
    symbol_col = symbols * n_dates
    long = pl.DataFrame({"date": date_col, "symbol": symbol_col})
    exposure_frame = long.with_columns(*[pl.Series(f, exposures[:, :, j].ravel()) for j, f in enumerate(factors)])
    return {
        "dates": dates,
        "symbols": symbols,
        "factors": factors,
        "exposures": exposures,
        "factor_returns": factor_returns,
        "specific": specific,
        "returns": returns,
        "weights": weights,
        "exposure_frame": exposure_frame,
        "factor_frame": pl.DataFrame({"date": dates}).with_columns(
            *[pl.Series(f, factor_returns[:, j]) for j, f in enumerate(factors)]
        ),
        "weight_frame": long.with_columns(pl.Series("weight", weights.ravel())).filter(pl.col("weight") != 0),
        "return_frame": long.with_columns(pl.Series("asset_returns", returns.ravel())),
    }


def test_attribution_adds_up_and_recovers_specific(generated_market: dict) -> None:
    m = generated_market
    # shuffle rows so the function cannot rely on order
    result = attribute_returns(
        m["exposure_frame"].sample(fraction=1.0, shuffle=True, seed=1),
        m["factor_frame"].reverse(),
        m["weight_frame"].sample(fraction=1.0, shuffle=True, seed=2),
        m["return_frame"].sample(fraction=1.0, shuffle=True, seed=3),
    )
    factors = m["factors"]
    assert result.columns == ["date", *factors, "specific", "total"]
    assert result["date"].to_list() == m["dates"]
    weights, exposures = m["weights"], m["exposures"]
    for t in range(len(m["dates"])):  # per-date loop as the reference
        portfolio_return = float(weights[t] @ m["returns"][t])
        row = result.row(t, named=True)
        contributions = [row[f] for f in factors]
        x = weights[t] @ exposures[t]
        np.testing.assert_allclose(contributions, x * m["factor_returns"][t], rtol=1e-12, atol=1e-15)
        assert sum(contributions) + row["specific"] == pytest.approx(portfolio_return, abs=1e-12)
        assert row["total"] == pytest.approx(portfolio_return, abs=1e-12)
        assert row["specific"] == pytest.approx(float(weights[t] @ m["specific"][t]), abs=1e-12)

    cumulative = cumulative_attribution(result)
    np.testing.assert_allclose(cumulative["total"].to_numpy(), np.cumsum(result["total"].to_numpy()))
    summed = cumulative.select(pl.sum_horizontal(*factors, "specific")).to_series().to_numpy()
    np.testing.assert_allclose(summed, cumulative["total"].to_numpy(), atol=1e-12)


def test_attribution_with_static_weights(generated_market: dict) -> None:
    m = generated_market
    static = {s: 1.0 / len(m["symbols"]) for s in m["symbols"]}
    result = attribute_returns(m["exposure_frame"], m["factor_frame"], static, m["return_frame"])
    w = np.full(len(m["symbols"]), 1.0 / len(m["symbols"]))
    np.testing.assert_allclose(result["total"].to_numpy(), m["returns"] @ w, atol=1e-14)
    np.testing.assert_allclose(result["specific"].to_numpy(), m["specific"] @ w, atol=1e-12)
    frame_result = attribute_returns(
        m["exposure_frame"], m["factor_frame"], pl.DataFrame({"symbol": list(static), "weight": w}), m["return_frame"]
    )
    assert frame_result.equals(result)


def test_attribution_errors(generated_market: dict) -> None:
    m = generated_market
    args = (m["exposure_frame"], m["factor_frame"], m["weight_frame"], m["return_frame"])
    with pytest.raises(PortfolioError, match=r"factors of exposures and factor_returns do not match.*\['beta'\]"):
        attribute_returns(args[0], args[1].rename({"factor_0": "beta"}), *args[2:])
    held = m["weight_frame"].row(0, named=True)
    dropped_return = args[3].filter(~((pl.col("date") == held["date"]) & (pl.col("symbol") == held["symbol"])))
    with pytest.raises(PortfolioError, match=r"asset returns are missing or not finite for 1 held row\(s\)"):
        attribute_returns(*args[:3], dropped_return)
    with pytest.raises(PortfolioError, match=r"exposures are missing or not finite for \d+ held row\(s\)"):
        attribute_returns(args[0].with_columns(pl.lit(None, pl.Float64).alias("factor_1")), *args[1:])
    nan_weights = args[2].with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(np.nan).otherwise("weight").alias("weight")
    )
    with pytest.raises(PortfolioError, match=r"weights are not finite for 1 row\(s\)"):
        attribute_returns(args[0], args[1], nan_weights, args[3])
    with pytest.raises(PortfolioError, match=r"weights are missing for 1 date\(s\) of factor_returns"):
        attribute_returns(args[0], args[1], args[2].filter(pl.col("date") != m["dates"][0]), args[3])
    with pytest.raises(PortfolioError, match="asset_returns frame lacks column"):
        attribute_returns(*args[:3], args[3].rename({"asset_returns": "ret"}))
    with pytest.raises(PortfolioError, match=r"exposures has duplicated \('date', 'symbol'\) rows"):
        attribute_returns(pl.concat([args[0], args[0].head(1)]), *args[1:])
