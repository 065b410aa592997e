"""Factor returns (estimate_factor_returns) against independent per-date references.

* ``barra``: each date's equality-constrained WLS solved directly through its KKT system with
  ``numpy.linalg.lstsq`` (statsmodels WLS when there is no constraint), weights sqrt(cap at the exposure
  date), exposures lagged, returns winsorized per date; residual = raw return − exposures · f.
* ``toraniko``: a per-date two-stage loop (market + sectors with the last sector = −Σ others, then styles)
  with ``numpy.linalg.lstsq``'s minimum-norm solutions.
* the synthetic market's true factor returns.

The reference assembles each date's rows from the long input frames with dictionaries (no dense grid), so
it shares no code with the engine.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pytest
import statsmodels.api as sm
from hypothesis import given, settings
from hypothesis import strategies as st

from factor_engine import FactorReturns, estimate_factor_returns

FrameMatcher = Callable[..., None]
KEYS = ["date", "symbol"]
START = dt.date(2024, 1, 1)
SECTORS = ("Gamma", "Alpha", "Delta", "Beta")  # sorted: Alpha, Beta, Delta, Gamma
STYLE_COLUMNS = ("sty_c", "sty_a", "sty_b")  # given unsorted; factors are sorted by name
TOL = 1e-10
DIAGNOSTIC_COLUMNS = ["date", "n_assets", "n_excluded", "r2", "condition_number", "dropped", "reason"]
RETURN_REASON = "missing return (null, NaN or inf)"
LAG1 = "at the exposure date (1 date(s) before)"


# --------------------------------------------------------------------------------------------------------------
# inputs


@dataclass(frozen=True)
class Inputs:
    """The four input frames of estimate_factor_returns (sector as a label column)."""

    returns: pl.DataFrame
    caps: pl.DataFrame
    sectors: pl.DataFrame
    styles: pl.DataFrame

    @property
    def dates(self) -> list[dt.date]:
        return self.returns["date"].unique().sort().to_list()

    def args(self) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
        return self.returns, self.caps, self.sectors, self.styles

    def replace(self, **frames: pl.DataFrame) -> Inputs:
        return Inputs(
            **{"returns": self.returns, "caps": self.caps, "sectors": self.sectors, "styles": self.styles} | frames
        )


def make_inputs(seed: int = 0, n_dates: int = 14, n_symbols: int = 60, missing: float = 0.06) -> Inputs:
    """An unbalanced panel from a factor model with fat-tailed noise (so winsorizing matters)."""
    rng = np.random.default_rng(seed)
    dates = [START + dt.timedelta(days=i) for i in range(n_dates)]
    symbols = [f"S{i:03d}" for i in range(n_symbols)]
    sector_code = rng.permutation(np.arange(n_symbols) % len(SECTORS))
    present = rng.random((n_dates, n_symbols)) > missing
    caps = np.exp(rng.normal(21.0, 1.5, n_symbols))[None, :] * np.exp(
        np.cumsum(rng.normal(0.0, 0.02, (n_dates, n_symbols)), axis=0)
    )
    exposures = rng.normal(size=(n_dates, n_symbols, len(STYLE_COLUMNS)))
    factor = rng.normal(0.0, 0.01, (n_dates, 1 + len(SECTORS) + len(STYLE_COLUMNS)))
    noise = 0.015 * rng.standard_t(3, (n_dates, n_symbols))
    returns = np.full((n_dates, n_symbols), np.nan)
    for t in range(1, n_dates):
        returns[t] = (
            factor[t, 0] + factor[t, 1 + sector_code] + exposures[t - 1] @ factor[t, 1 + len(SECTORS) :] + noise[t]
        )
    returns[0] = noise[0]
    t_idx, n_idx = np.nonzero(present)
    keys = {"date": [dates[t] for t in t_idx], "symbol": [symbols[n] for n in n_idx]}
    frame = pl.DataFrame(keys, schema={"date": pl.Date, "symbol": pl.String})
    return Inputs(
        returns=frame.with_columns(pl.Series("asset_returns", returns[t_idx, n_idx])),
        caps=frame.with_columns(pl.Series("market_cap", caps[t_idx, n_idx])),
        sectors=frame.with_columns(pl.Series("sector", [SECTORS[c] for c in sector_code[n_idx]])),
        styles=frame.with_columns(pl.Series(name, exposures[t_idx, n_idx, k]) for k, name in enumerate(STYLE_COLUMNS)),
    )


def set_at(frame: pl.DataFrame, column: str, date: dt.date, symbol: str | None, value: float | None) -> pl.DataFrame:
    """``frame`` with ``column`` set to ``value`` at (date, symbol) (every symbol of the date if None)."""
    at = pl.col("date") == date
    if symbol is not None:
        at &= pl.col("symbol") == symbol
    if frame.filter(at).height == 0:
        raise AssertionError(f"no row at ({date}, {symbol})")
    return frame.with_columns(
        pl.when(at).then(pl.lit(value, dtype=frame.schema[column])).otherwise(pl.col(column)).alias(column)
    )


def to_dummies(sectors: pl.DataFrame) -> pl.DataFrame:
    labels = sectors["sector"].unique().sort().to_list()
    return sectors.select("date", "symbol", *((pl.col("sector") == s).cast(pl.Float64).alias(s) for s in labels))


# --------------------------------------------------------------------------------------------------------------
# the independent reference


@dataclass
class Reference:
    factors: tuple[str, ...]
    factor_rows: list[dict[str, Any]] = field(default_factory=list)
    residual_rows: list[tuple[dt.date, str, float]] = field(default_factory=list)
    r2: dict[dt.date, float] = field(default_factory=dict)
    n_assets: dict[dt.date, int] = field(default_factory=dict)
    skipped: dict[dt.date, str] = field(default_factory=dict)
    excluded: dict[str, int] = field(default_factory=dict)
    sector_weights: dict[dt.date, np.ndarray] = field(default_factory=dict)
    before_first_exposures: int = 0

    @property
    def factor_returns(self) -> pl.DataFrame:
        schema = {"date": pl.Date} | {name: pl.Float64 for name in self.factors}
        return pl.DataFrame(self.factor_rows, schema=schema)

    @property
    def residuals(self) -> pl.DataFrame:
        return pl.DataFrame(
            self.residual_rows, schema={"date": pl.Date, "symbol": pl.String, "residual": pl.Float64}, orient="row"
        )


def _lookup(frame: pl.DataFrame | None, columns: Sequence[str]) -> dict[tuple[dt.date, str], tuple[Any, ...]]:
    if frame is None:
        return {}
    return {(row[0], row[1]): row[2:] for row in frame.select("date", "symbol", *columns).iter_rows()}


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(value)


def reference_estimate(
    returns: pl.DataFrame,
    caps: pl.DataFrame,
    sectors: pl.DataFrame | None,
    styles: pl.DataFrame | None,
    *,
    method: str = "barra",
    lag: int = 1,
    winsor: float | None = 0.05,
    residualize: bool = True,
) -> Reference:
    """Per-date loop: assemble valid rows, winsorize, solve (see the module docstring)."""
    label_sectors = sectors is not None and "sector" in sectors.columns and sectors["sector"].dtype == pl.String
    if sectors is None:
        sector_names: list[str] = []
    elif label_sectors:
        sector_names = sorted(sectors["sector"].drop_nulls().unique().to_list())
    else:
        sector_names = sorted(c for c in sectors.columns if c not in KEYS)
    style_names = [] if styles is None else sorted(c for c in styles.columns if c not in KEYS)
    reference = Reference(factors=("market", *sector_names, *style_names))
    frames = [f for f in (returns, caps, sectors, styles) if f is not None]
    dates = sorted(set().union(*(set(f["date"].to_list()) for f in frames)))
    cap_of = _lookup(caps, ["market_cap"])
    sector_of = _lookup(sectors, ["sector"] if label_sectors else sector_names)
    style_of = _lookup(styles, style_names)
    when = "on the same date" if lag == 0 else f"at the exposure date ({lag} date(s) before)"
    sector_reason = f"no sector {when}" if label_sectors else f"no sector exposure {when}"
    reasons = [
        RETURN_REASON,
        f"no positive market cap {when}",
        *([sector_reason] if sector_names else []),
        *(f"no {name} exposure {when}" for name in style_names),
    ]
    counts = dict.fromkeys(reasons, 0)
    by_date = returns.partition_by("date", as_dict=True)
    # returns of the first `lag` dates have no exposures at all
    reference.before_first_exposures = returns.filter(pl.col("date").is_in(dates[:lag])).height

    for t in range(lag, len(dates)):
        date, exposure_date = dates[t], dates[t - lag]
        if (date,) not in by_date:
            continue
        symbols, y, weight_caps, x_sector, x_style = [], [], [], [], []
        for symbol, value in by_date[(date,)].select("symbol", "asset_returns").iter_rows():
            key = (exposure_date, symbol)
            cap = cap_of.get(key, (None,))[0]
            sector_row = sector_of.get(key)
            style_row = style_of.get(key, (None,) * len(style_names))
            if label_sectors:
                label = None if sector_row is None else sector_row[0]
                sector_vector = None if label is None else [float(label == s) for s in sector_names]
            else:
                sector_vector = None if sector_row is None else list(sector_row)
            checks = [
                _finite(value),
                _finite(cap) and cap > 0,
                *([sector_vector is not None and all(_finite(v) for v in sector_vector)] if sector_names else []),
                *(_finite(v) for v in style_row),
            ]
            if not all(checks):
                counts[reasons[checks.index(False)]] += 1
                continue
            symbols.append(symbol)
            y.append(value)
            weight_caps.append(cap)
            x_sector.append(sector_vector or [])
            x_style.append(list(style_row))
        n = len(symbols)
        reference.n_assets[date] = n
        if n == 0:
            reference.skipped[date] = "no usable assets"
            continue
        raw = np.array(y)
        fit = raw if winsor is None else np.clip(raw, np.quantile(raw, winsor), np.quantile(raw, 1 - winsor))
        cap_array = np.array(weight_caps)
        sector_x = np.array(x_sector, dtype=np.float64).reshape(n, len(sector_names))
        style_x = np.array(x_style, dtype=np.float64).reshape(n, len(style_names))
        solve = _solve_barra if method == "barra" else _solve_toraniko
        solved = solve(raw, fit, cap_array, sector_x, style_x, residualize)
        if isinstance(solved, str):
            reference.skipped[date] = solved
            continue
        factor_returns, residual, fitted = solved
        reference.factor_rows.append({"date": date} | dict(zip(reference.factors, factor_returns, strict=True)))
        reference.residual_rows += [(date, s, float(e)) for s, e in zip(symbols, residual, strict=True)]
        weight = np.sqrt(cap_array)
        reference.r2[date] = 1.0 - np.sum(weight * (fit - fitted) ** 2) / np.sum(weight * fit**2)
        reference.sector_weights[date] = cap_array @ sector_x
    reference.excluded = counts
    return reference


def _solve_barra(
    raw: np.ndarray, fit: np.ndarray, cap: np.ndarray, sector_x: np.ndarray, style_x: np.ndarray, _: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | str:
    """min Σ sqrt(cap)(fit − B f)² s.t. Σ_s c_s f_s = 0 with c_s = Σ cap · X_s, by the KKT system. Factors with
    no exposure, and styles collinear with the columns before them, are left out (NaN)."""
    n, n_sectors = sector_x.shape
    design = np.column_stack([np.ones(n), sector_x, style_x])
    n_factors = design.shape[1]
    weight = np.sqrt(cap)
    constraint = np.zeros(n_factors)
    constraint[1 : 1 + n_sectors] = cap @ sector_x
    keep = np.abs(design).sum(axis=0) > 0
    n_parameters = int(keep.sum()) - (1 if n_sectors else 0)
    if n < n_parameters:
        return f"fewer assets ({n}) than factors ({n_parameters})"
    # a style explained by the kept columns before it (market, sectors, earlier styles) is collinear; market
    # and sectors are not (the constraint identifies them)
    for k in range(1 + n_sectors, n_factors):
        if not keep[k]:
            continue
        before = design[:, :k][:, keep[:k]] * np.sqrt(weight)[:, None]
        column = design[:, k] * np.sqrt(weight)
        if before.shape[1]:
            explained = before @ np.linalg.lstsq(before, column, rcond=None)[0]
            if np.sum((column - explained) ** 2) <= 1e-10 * np.sum(column**2):
                keep[k] = False
    kept = design[:, keep]
    gram = kept.T @ (weight[:, None] * kept)
    rhs = kept.T @ (weight * fit)
    if n_sectors:
        a = constraint[keep]
        kkt = np.block([[gram, a[:, None]], [a[None, :], np.zeros((1, 1))]])
        solution = np.linalg.lstsq(kkt, np.append(rhs, 0.0), rcond=None)[0][:-1]
    else:
        solution = np.linalg.lstsq(gram, rhs, rcond=None)[0]
    factor_returns = np.full(n_factors, np.nan)
    factor_returns[keep] = solution
    fitted = kept @ solution
    return factor_returns, raw - fitted, fitted


def _solve_toraniko(
    raw: np.ndarray, fit: np.ndarray, cap: np.ndarray, sector_x: np.ndarray, style_x: np.ndarray, residualize: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stage 1: market + sectors, last sector = −Σ others, minimum-norm lstsq; stage 2: styles on the stage-1
    residual (or on the returns). Residual of the winsorized returns."""
    n, n_sectors = sector_x.shape
    weight = np.sqrt(cap)
    stage1 = np.column_stack([np.ones(n), sector_x])
    change = np.eye(1 + n_sectors, max(n_sectors, 1))
    if n_sectors:
        change[n_sectors, 1:] = -1.0  # the last sector's return is minus the sum of the others
    reduced = stage1 @ change
    g = np.linalg.lstsq(reduced.T @ (weight[:, None] * reduced), reduced.T @ (weight * fit), rcond=None)[0]
    first = change @ g
    after_sectors = fit - stage1 @ first
    target = after_sectors if residualize else fit
    second = np.linalg.lstsq(style_x.T @ (weight[:, None] * style_x), style_x.T @ (weight * target), rcond=None)[0]
    residual = after_sectors - style_x @ second
    return np.concatenate([first, second]), residual, fit - residual


# --------------------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def inputs() -> Inputs:
    return make_inputs(0)


@pytest.fixture(scope="module")
def clean(inputs: Inputs) -> FactorReturns:
    return estimate_factor_returns(*inputs.args())


def _date_rows(frame: pl.DataFrame, date: dt.date, *, keep: bool) -> pl.DataFrame:
    return frame.filter((pl.col("date") == date) if keep else (pl.col("date") != date))


def assert_other_dates_identical(result: FactorReturns, clean: FactorReturns, date: dt.date) -> None:
    """Every output of every date but ``date`` is exactly the clean run's."""
    for name in ("factor_returns", "residuals", "diagnostics"):
        ours, reference = getattr(result, name), getattr(clean, name)
        assert _date_rows(ours, date, keep=False).equals(_date_rows(reference, date, keep=False)), name


def assert_matches_reference(
    result: FactorReturns, reference: Reference, frames_match: FrameMatcher, *, atol: float = TOL
) -> None:
    assert result.factors == reference.factors
    frames_match(result.factor_returns, reference.factor_returns, ["date"], list(reference.factors), atol=atol)
    frames_match(result.residuals, reference.residuals, KEYS, ["residual"], atol=atol)
    diagnostics = result.diagnostics
    assert dict(zip(diagnostics["date"], diagnostics["n_assets"], strict=True)) == reference.n_assets
    r2 = {d: v for d, v in zip(diagnostics["date"], diagnostics["r2"], strict=True) if v is not None}
    assert r2.keys() == reference.r2.keys()
    np.testing.assert_allclose([r2[d] for d in r2], [reference.r2[d] for d in r2], rtol=0, atol=1e-9)
    assert excluded_by_reason(result) == reference.excluded
    first_dates = [n for reason, n in result.excluded.iter_rows() if reason.startswith("no exposures ")]
    assert sum(first_dates) == reference.before_first_exposures
    assert len(first_dates) == (1 if result.exposure_lag else 0)


def excluded_by_reason(result: FactorReturns) -> dict[str, int]:
    """``excluded`` as a dict, leaving out the rows of the first ``exposure_lag`` dates (no exposures yet)."""
    return {reason: n for reason, n in result.excluded.iter_rows() if not reason.startswith("no exposures ")}


# --------------------------------------------------------------------------------------------------------------
# barra vs the KKT reference


@pytest.mark.parametrize("lag", [1, 0, 2])
@pytest.mark.parametrize("winsor", [0.05, None])
def test_barra_matches_constrained_wls_reference(
    inputs: Inputs, lag: int, winsor: float | None, frames_match: FrameMatcher
) -> None:
    result = estimate_factor_returns(*inputs.args(), exposure_lag=lag, winsor_factor=winsor)
    reference = reference_estimate(*inputs.args(), lag=lag, winsor=winsor)
    assert result.exposure_lag == lag
    assert result.factor_returns.height == len(inputs.dates) - lag
    assert_matches_reference(result, reference, frames_match)


def test_winsorizing_changes_the_estimates(inputs: Inputs) -> None:
    """Guard: the reference comparison above is sensitive to winsorization."""
    winsorized = reference_estimate(*inputs.args()).factor_returns.drop("date").to_numpy()
    raw = reference_estimate(*inputs.args(), winsor=None).factor_returns.drop("date").to_numpy()
    assert np.abs(winsorized - raw).max() > 1e-4


@pytest.mark.parametrize("lag", [1, 0])
def test_cap_weighted_sector_constraint_holds(inputs: Inputs, lag: int) -> None:
    result = estimate_factor_returns(*inputs.args(), exposure_lag=lag)
    reference = reference_estimate(*inputs.args(), lag=lag)
    sector_returns = result.factor_returns.select(result.sectors).to_numpy()
    weights = np.array([reference.sector_weights[d] for d in result.factor_returns["date"]])
    weights /= weights.sum(axis=1, keepdims=True)
    assert np.abs((weights * sector_returns).sum(axis=1)).max() < 1e-12
    # and it is the cap-weighted sum that is zero, not the plain one
    assert np.abs(sector_returns.sum(axis=1)).max() > 1e-4


def test_barra_with_statsmodels_when_there_are_no_sectors(inputs: Inputs, frames_match: FrameMatcher) -> None:
    result = estimate_factor_returns(inputs.returns, inputs.caps, None, inputs.styles, winsor_factor=None)
    assert result.factors == ("market", "sty_a", "sty_b", "sty_c")
    assert result.sectors == ()
    rows, residuals = [], []
    dates = inputs.dates
    for t in range(1, len(dates)):
        day = (
            inputs.returns.filter(pl.col("date") == dates[t])
            .join(inputs.styles.filter(pl.col("date") == dates[t - 1]).drop("date"), on="symbol", how="inner")
            .join(inputs.caps.filter(pl.col("date") == dates[t - 1]).drop("date"), on="symbol", how="inner")
        )
        design = sm.add_constant(day.select("sty_a", "sty_b", "sty_c").to_numpy())
        fit = sm.WLS(day["asset_returns"].to_numpy(), design, weights=np.sqrt(day["market_cap"].to_numpy())).fit()
        rows.append({"date": dates[t]} | dict(zip(result.factors, fit.params, strict=True)))
        residuals.append(day.select("date", "symbol", pl.Series("residual", fit.resid)))
    frames_match(result.factor_returns, pl.DataFrame(rows), ["date"], atol=TOL)
    frames_match(result.residuals, pl.concat(residuals), KEYS, ["residual"], atol=TOL)


# --------------------------------------------------------------------------------------------------------------
# toraniko vs the two-stage reference


@pytest.mark.parametrize("residualize", [True, False])
def test_toraniko_matches_two_stage_reference(inputs: Inputs, residualize: bool, frames_match: FrameMatcher) -> None:
    # one date without any "Delta" row: a singular stage-1 system solved by its minimum-norm solution
    date = inputs.dates[5]
    delta = inputs.sectors.filter((pl.col("date") == date) & (pl.col("sector") == "Delta"))["symbol"]
    returns = inputs.returns.filter(~((pl.col("date") == date) & pl.col("symbol").is_in(delta.implode())))
    case = inputs.replace(returns=returns)
    result = estimate_factor_returns(*case.args(), method="toraniko", residualize_styles=residualize)
    reference = reference_estimate(*case.args(), method="toraniko", lag=0, residualize=residualize)
    assert result.exposure_lag == 0
    assert result.factor_returns.height == len(inputs.dates)
    assert_matches_reference(result, reference, frames_match)
    singular = result.factor_returns.filter(pl.col("date") == date).drop("date").to_numpy()
    assert np.isfinite(singular).all()  # toraniko's minimum-norm solution, nothing dropped
    np.testing.assert_allclose(result.factor_returns.select(result.sectors).to_numpy().sum(axis=1), 0, atol=1e-15)


def test_toraniko_residualization_changes_only_styles(inputs: Inputs) -> None:
    both = [
        estimate_factor_returns(*inputs.args(), method="toraniko", residualize_styles=flag) for flag in (True, False)
    ]
    market_and_sectors = ["market", *both[0].sectors]
    assert both[0].factor_returns.select(market_and_sectors).equals(both[1].factor_returns.select(market_and_sectors))
    styles_difference = (
        both[0].factor_returns.select(both[0].styles).to_numpy()
        - both[1].factor_returns.select(both[1].styles).to_numpy()
    )
    assert np.abs(styles_difference).max() > 1e-5


# --------------------------------------------------------------------------------------------------------------
# structure of the model


def test_sector_labels_and_dummy_columns_give_identical_results(inputs: Inputs) -> None:
    labels = estimate_factor_returns(*inputs.args())
    dummies = estimate_factor_returns(inputs.returns, inputs.caps, to_dummies(inputs.sectors), inputs.styles)
    categorical = estimate_factor_returns(
        inputs.returns, inputs.caps, inputs.sectors.with_columns(pl.col("sector").cast(pl.Categorical)), inputs.styles
    )
    for other in (dummies, categorical):
        assert (
            other.factors == labels.factors == ("market", "Alpha", "Beta", "Delta", "Gamma", "sty_a", "sty_b", "sty_c")
        )
        assert other.factor_returns.equals(labels.factor_returns)
        assert other.residuals.equals(labels.residuals)


def test_integer_sector_labels_are_labels(inputs: Inputs) -> None:
    """The panel contract accepts integer sector labels; a ``sector`` column of integer codes must not turn
    into a single numeric exposure named "sector"."""
    codes = {label: code for code, label in enumerate(sorted(SECTORS))}
    as_integers = inputs.sectors.with_columns(pl.col("sector").replace_strict(codes, return_dtype=pl.Int64))
    as_strings = inputs.sectors.with_columns(pl.col("sector").replace_strict(codes, return_dtype=pl.String))
    integer_result = estimate_factor_returns(inputs.returns, inputs.caps, as_integers, inputs.styles)
    string_result = estimate_factor_returns(inputs.returns, inputs.caps, as_strings, inputs.styles)
    assert integer_result.sectors == string_result.sectors == ("0", "1", "2", "3")
    assert integer_result.factor_returns.equals(string_result.factor_returns)


def test_non_one_hot_sector_exposures(inputs: Inputs, frames_match: FrameMatcher) -> None:
    """Fractional memberships (70 % primary sector, 30 % the next one): constraint weights Σ cap · X_s."""
    dummies = to_dummies(inputs.sectors)
    names = [c for c in dummies.columns if c not in KEYS]
    fractional = dummies.select(
        *KEYS, *((0.7 * pl.col(names[k]) + 0.3 * pl.col(names[k - 1])).alias(names[k]) for k in range(len(names)))
    )
    assert set(np.unique(fractional.select(names).to_numpy())) == {0.0, 0.3, 0.7}
    result = estimate_factor_returns(inputs.returns, inputs.caps, fractional, inputs.styles)
    reference = reference_estimate(inputs.returns, inputs.caps, fractional, inputs.styles)
    assert_matches_reference(result, reference, frames_match)
    dates = inputs.dates
    lagged = fractional.filter(pl.col("date") < dates[-1]).with_columns(
        pl.col("date").replace_strict(dict(itertools.pairwise(dates)), return_dtype=pl.Date)
    )
    frames_match(result.exposures, lagged.join(result.residuals.select(KEYS), on=KEYS), KEYS, names, atol=0.0)


def test_single_sector_has_zero_return_and_leaves_the_rest_unchanged(inputs: Inputs) -> None:
    one = estimate_factor_returns(
        inputs.returns, inputs.caps, inputs.sectors.with_columns(pl.lit("Only").alias("sector")), inputs.styles
    )
    none = estimate_factor_returns(inputs.returns, inputs.caps, None, inputs.styles)
    assert one.sectors == ("Only",)
    assert (one.factor_returns["Only"] == 0.0).all()
    others = ["date", "market", "sty_a", "sty_b", "sty_c"]
    np.testing.assert_allclose(
        one.factor_returns.select(others[1:]).to_numpy(), none.factor_returns.select(others[1:]).to_numpy(), atol=1e-14
    )
    np.testing.assert_allclose(one.residuals["residual"].to_numpy(), none.residuals["residual"].to_numpy(), atol=1e-14)


def test_without_styles(inputs: Inputs, frames_match: FrameMatcher) -> None:
    result = estimate_factor_returns(inputs.returns, inputs.caps, inputs.sectors, None)
    assert result.factors == ("market", "Alpha", "Beta", "Delta", "Gamma")
    assert result.styles == ()
    assert_matches_reference(
        result, reference_estimate(inputs.returns, inputs.caps, inputs.sectors, None), frames_match
    )


def test_user_exposures_of_any_numeric_dtype_sorted_by_name(inputs: Inputs, frames_match: FrameMatcher) -> None:
    rng = np.random.default_rng(12)
    user = inputs.styles.select(
        *KEYS,
        pl.Series("zeta_oil_beta", rng.normal(size=inputs.styles.height), dtype=pl.Float32),
        pl.Series("alpha_bucket", rng.integers(-2, 3, inputs.styles.height), dtype=pl.Int64),
    )
    result = estimate_factor_returns(inputs.returns, inputs.caps, inputs.sectors, user.lazy())
    assert result.styles == ("alpha_bucket", "zeta_oil_beta")
    as_float = user.with_columns(pl.col("zeta_oil_beta", "alpha_bucket").cast(pl.Float64))
    assert_matches_reference(
        result, reference_estimate(inputs.returns, inputs.caps, inputs.sectors, as_float), frames_match
    )


def test_lazy_inputs_give_the_same_result(inputs: Inputs, clean: FactorReturns) -> None:
    lazy = estimate_factor_returns(*(frame.lazy() for frame in inputs.args()))
    assert lazy.factor_returns.equals(clean.factor_returns)
    assert lazy.residuals.equals(clean.residuals)


# --------------------------------------------------------------------------------------------------------------
# rank deficiency: only the affected date changes


def test_empty_sector_on_one_date(inputs: Inputs, clean: FactorReturns, frames_match: FrameMatcher) -> None:
    date = inputs.dates[6]
    delta = inputs.sectors.filter((pl.col("date") == inputs.dates[5]) & (pl.col("sector") == "Delta"))["symbol"]
    returns = inputs.returns.filter(~((pl.col("date") == date) & pl.col("symbol").is_in(delta.implode())))
    case = inputs.replace(returns=returns)
    result = estimate_factor_returns(*case.args())
    assert_matches_reference(result, reference_estimate(*case.args()), frames_match)
    row = result.factor_returns.filter(pl.col("date") == date)
    assert row["Delta"][0] is None
    assert all(row[name][0] is not None and math.isfinite(row[name][0]) for name in result.factors if name != "Delta")
    diagnostics = result.diagnostics.filter(pl.col("date") == date).row(0, named=True)
    assert diagnostics["dropped"] == ["Delta"]
    assert diagnostics["reason"] == "no exposure: Delta"
    assert_other_dates_identical(result, clean, date)


@pytest.mark.parametrize(
    ("value", "reason"),
    [(0.7, "collinear with earlier factors: sty_b"), (0.0, "no exposure: sty_b")],
)
def test_constant_style_on_one_date(
    inputs: Inputs, clean: FactorReturns, value: float, reason: str, frames_match: FrameMatcher
) -> None:
    exposure_date, date = inputs.dates[3], inputs.dates[4]
    case = inputs.replace(styles=set_at(inputs.styles, "sty_b", exposure_date, None, value))
    result = estimate_factor_returns(*case.args())
    assert_matches_reference(result, reference_estimate(*case.args()), frames_match)
    row = result.factor_returns.filter(pl.col("date") == date)
    assert row["sty_b"][0] is None
    assert row.select(pl.exclude("date", "sty_b")).null_count().sum_horizontal()[0] == 0
    diagnostics = result.diagnostics.filter(pl.col("date") == date).row(0, named=True)
    assert diagnostics["dropped"] == ["sty_b"]
    assert diagnostics["reason"] == reason
    assert_other_dates_identical(result, clean, date)


def test_fewer_assets_than_factors_skips_the_date(inputs: Inputs, clean: FactorReturns) -> None:
    date = inputs.dates[8]
    keep = inputs.returns.filter(pl.col("date") == date)["symbol"].head(3)
    returns = inputs.returns.filter((pl.col("date") != date) | pl.col("symbol").is_in(keep.implode()))
    result = estimate_factor_returns(returns, *inputs.args()[1:])
    assert date not in result.factor_returns["date"].to_list()
    assert date not in result.residuals["date"].to_list()
    diagnostics = result.diagnostics.filter(pl.col("date") == date).row(0, named=True)
    assert diagnostics["n_assets"] == 3
    assert diagnostics["dropped"] == list(result.factors)
    assert diagnostics["r2"] is None
    reference = reference_estimate(returns, *inputs.args()[1:])
    assert diagnostics["reason"] == reference.skipped[date]
    assert diagnostics["reason"].startswith("fewer assets (3) than factors (")
    assert_other_dates_identical(result, clean, date)


def test_date_without_valid_rows_is_skipped(inputs: Inputs, clean: FactorReturns) -> None:
    date = inputs.dates[9]
    case = inputs.replace(returns=set_at(inputs.returns, "asset_returns", date, None, None))
    result = estimate_factor_returns(*case.args())
    n_rows = inputs.returns.filter(pl.col("date") == date).height
    diagnostics = result.diagnostics.filter(pl.col("date") == date).row(0, named=True)
    assert (diagnostics["n_assets"], diagnostics["n_excluded"]) == (0, n_rows)
    assert diagnostics["reason"] == "no usable assets"
    assert date not in result.factor_returns["date"].to_list()
    assert excluded_by_reason(result)[RETURN_REASON] == excluded_by_reason(clean)[RETURN_REASON] + n_rows
    assert_other_dates_identical(result, clean, date)


# --------------------------------------------------------------------------------------------------------------
# bad rows are excluded, alone


BAD_ROWS = [
    pytest.param("returns", "asset_returns", float("nan"), 0, RETURN_REASON, id="nan-return"),
    pytest.param("returns", "asset_returns", float("inf"), 0, RETURN_REASON, id="inf-return"),
    pytest.param("returns", "asset_returns", None, 0, RETURN_REASON, id="null-return"),
    pytest.param("styles", "sty_a", None, 1, f"no sty_a exposure {LAG1}", id="missing-style"),
    pytest.param("styles", "sty_c", float("nan"), 1, f"no sty_c exposure {LAG1}", id="nan-style"),
    pytest.param("caps", "market_cap", 0.0, 1, f"no positive market cap {LAG1}", id="zero-cap"),
    pytest.param("caps", "market_cap", -3e9, 1, f"no positive market cap {LAG1}", id="negative-cap"),
    pytest.param("sectors", "sector", None, 1, f"no sector {LAG1}", id="missing-sector"),
]


@pytest.mark.parametrize(("frame_name", "column", "value", "offset", "reason"), BAD_ROWS)
def test_one_bad_row_is_excluded_alone(
    inputs: Inputs,
    clean: FactorReturns,
    frame_name: str,
    column: str,
    value: float | None,
    offset: int,
    reason: str,
    frames_match: FrameMatcher,
) -> None:
    date = inputs.dates[7]
    exposure_date = inputs.dates[6]
    symbol = (
        inputs.returns.filter(pl.col("date") == date)
        .join(inputs.caps.filter(pl.col("date") == exposure_date), on="symbol")["symbol"]
        .item(4)
    )
    at_date = exposure_date if offset else date
    case = inputs.replace(**{frame_name: set_at(getattr(inputs, frame_name), column, at_date, symbol, value)})
    result = estimate_factor_returns(*case.args())

    excluded, clean_excluded = dict(result.excluded.iter_rows()), dict(clean.excluded.iter_rows())
    assert excluded.keys() == clean_excluded.keys()
    assert {k: excluded[k] - clean_excluded[k] for k in excluded if excluded[k] != clean_excluded[k]} == {reason: 1}
    diagnostics = result.diagnostics.filter(pl.col("date") == date).row(0, named=True)
    clean_diagnostics = clean.diagnostics.filter(pl.col("date") == date).row(0, named=True)
    assert diagnostics["n_excluded"] == clean_diagnostics["n_excluded"] + 1
    assert diagnostics["n_assets"] == clean_diagnostics["n_assets"] - 1
    assert (date, symbol) not in set(result.residuals.select(KEYS).iter_rows())
    assert result.residuals["residual"].is_finite().all()
    that_date = result.factor_returns.filter(pl.col("date") == date).drop("date").to_numpy()
    assert that_date.shape == (1, len(result.factors))
    assert np.isfinite(that_date).all()
    # that date equals a run without the row, and the reference
    without_row = inputs.returns.filter(~((pl.col("date") == date) & (pl.col("symbol") == symbol)))
    dropped = estimate_factor_returns(without_row, *inputs.args()[1:])
    assert result.factor_returns.equals(dropped.factor_returns)
    assert result.residuals.equals(dropped.residuals)
    assert_matches_reference(result, reference_estimate(*case.args()), frames_match)
    assert_other_dates_identical(result, clean, date)


# --------------------------------------------------------------------------------------------------------------
# invariants


@pytest.fixture(scope="module")
def small_inputs() -> Inputs:
    return make_inputs(3, n_dates=6, n_symbols=30)


@pytest.fixture(scope="module")
def small_clean(small_inputs: Inputs) -> FactorReturns:
    return estimate_factor_returns(*small_inputs.args())


INVARIANTS = settings(max_examples=30, deadline=None)


@INVARIANTS
@given(data=st.data())
def test_renaming_symbols_changes_nothing(
    small_inputs: Inputs, small_clean: FactorReturns, data: st.DataObject
) -> None:
    symbols = small_inputs.returns["symbol"].unique().sort().to_list()
    order = data.draw(st.permutations(range(len(symbols))))
    rename = {s: f"N{order[i]:03d}" for i, s in enumerate(symbols)}
    back = {v: k for k, v in rename.items()}
    renamed = [f.with_columns(pl.col("symbol").replace_strict(rename)) for f in small_inputs.args()]
    result = estimate_factor_returns(*renamed)
    np.testing.assert_allclose(
        result.factor_returns.drop("date").to_numpy(), small_clean.factor_returns.drop("date").to_numpy(), atol=1e-14
    )
    residuals = result.residuals.with_columns(pl.col("symbol").replace_strict(back)).sort(KEYS)
    assert residuals.select(KEYS).equals(small_clean.residuals.select(KEYS))
    np.testing.assert_allclose(
        residuals["residual"].to_numpy(), small_clean.residuals["residual"].to_numpy(), atol=1e-14
    )


@INVARIANTS
@given(log10_scale=st.floats(-6.0, 6.0), method=st.sampled_from(["barra", "toraniko"]))
def test_scaling_market_caps_changes_nothing(small_inputs: Inputs, log10_scale: float, method: str) -> None:
    scale = 10.0**log10_scale
    base = estimate_factor_returns(*small_inputs.args(), method=method)  # type: ignore[arg-type]
    scaled_caps = small_inputs.caps.with_columns(pl.col("market_cap") * scale)
    scaled = estimate_factor_returns(small_inputs.returns, scaled_caps, *small_inputs.args()[2:], method=method)  # type: ignore[arg-type]
    np.testing.assert_allclose(
        scaled.factor_returns.drop("date").to_numpy(), base.factor_returns.drop("date").to_numpy(), atol=1e-13
    )
    np.testing.assert_allclose(
        scaled.residuals["residual"].to_numpy(), base.residuals["residual"].to_numpy(), atol=1e-13
    )


@INVARIANTS
@given(style=st.sampled_from(["sty_a", "sty_b", "sty_c"]), shift=st.floats(-3.0, 3.0))
def test_shifting_a_style_moves_only_the_market_return(
    small_inputs: Inputs, small_clean: FactorReturns, style: str, shift: float
) -> None:
    """B' = B + c·1·e_kᵀ spans the same space with f'_market = f_market − c·f_k (the constraint involves only
    sectors), so barra's fitted values, residuals, sector and style returns do not change."""
    shifted = small_inputs.styles.with_columns(pl.col(style) + shift)
    result = estimate_factor_returns(small_inputs.returns, small_inputs.caps, small_inputs.sectors, shifted)
    ours, clean = result.factor_returns, small_clean.factor_returns
    not_market = [c for c in clean.columns if c not in ("date", "market")]
    np.testing.assert_allclose(ours.select(not_market).to_numpy(), clean.select(not_market).to_numpy(), atol=1e-12)
    np.testing.assert_allclose(
        ours["market"].to_numpy(), (clean["market"] - shift * clean[style]).to_numpy(), atol=1e-12
    )
    np.testing.assert_allclose(
        result.residuals["residual"].to_numpy(), small_clean.residuals["residual"].to_numpy(), atol=1e-12
    )


@INVARIANTS
@given(
    seed=st.integers(0, 2**32 - 1),
    n_symbols=st.integers(12, 50),
    missing=st.floats(0.0, 0.3),
    lag=st.integers(0, 2),
)
def test_constraint_and_residual_identity_hold_for_any_panel(
    seed: int, n_symbols: int, missing: float, lag: int
) -> None:
    """Σ_s c_s f_s = 0 with c_s the cap (at the exposure date) of the date's used assets in sector s, and
    residual = raw return − exposures · f, whatever the panel."""
    case = make_inputs(seed, n_dates=6, n_symbols=n_symbols, missing=missing)
    result = estimate_factor_returns(*case.args(), exposure_lag=lag)
    dates = case.dates
    exposure_date = dict(zip(dates[lag:], dates[: len(dates) - lag], strict=True))
    rows = (
        result.exposures.with_columns(
            pl.col("date").replace_strict(exposure_date, return_dtype=pl.Date).alias("exposure_date")
        )
        .join(case.caps.rename({"date": "exposure_date"}), on=["exposure_date", "symbol"])
        .join(case.returns, on=KEYS)
        .join(result.residuals, on=KEYS)
        .join(result.factor_returns, on="date", suffix="_return")
    )
    assert rows.height == result.residuals.height
    factors = list(result.factors)
    exposures = rows.select(factors).to_numpy()
    factor_returns = np.nan_to_num(rows.select(f"{f}_return" for f in factors).to_numpy())
    fitted = (exposures * factor_returns).sum(axis=1)
    np.testing.assert_allclose(rows["residual"].to_numpy(), rows["asset_returns"].to_numpy() - fitted, atol=1e-13)
    sector_caps = rows.group_by("date").agg((pl.col(s) * pl.col("market_cap")).sum() for s in result.sectors)
    constrained = sector_caps.join(result.factor_returns, on="date", suffix="_return")
    weights = constrained.select(result.sectors).to_numpy()
    sector_returns = np.nan_to_num(constrained.select(f"{s}_return" for s in result.sectors).to_numpy())
    if constrained.height == 0:  # every date skipped (e.g. fewer assets than factors): each says why
        assert (result.diagnostics["reason"] != "").all()
        return
    assert np.abs((weights / weights.sum(axis=1, keepdims=True) * sector_returns).sum(axis=1)).max() < 1e-12


# --------------------------------------------------------------------------------------------------------------
# errors


def test_argument_errors(inputs: Inputs) -> None:
    args = inputs.args()
    with pytest.raises(ValueError, match=r"method must be one of \('barra', 'toraniko'\), got 'ols'"):
        estimate_factor_returns(*args, method="ols")  # type: ignore[arg-type]
    for lag in (-1, 1.5, True):
        with pytest.raises(ValueError, match=rf"exposure_lag must be a non-negative integer, got {lag!r}"):
            estimate_factor_returns(*args, exposure_lag=lag)  # type: ignore[arg-type]
    for factor in (0.6, -0.1, float("nan")):
        with pytest.raises(
            ValueError, match=rf"winsor_factor must be a fraction in \[0, 0.5\] or None, got {factor!r}"
        ):
            estimate_factor_returns(*args, winsor_factor=factor)


def test_input_frame_errors(inputs: Inputs) -> None:
    returns, caps, sectors, style_scores = inputs.args()
    with pytest.raises(
        ValueError, match=r"returns_df is missing column\(s\) \['asset_returns'\]; it has \['date', 'symbol', 'r'\]"
    ):
        estimate_factor_returns(returns.rename({"asset_returns": "r"}), caps, sectors, style_scores)
    with pytest.raises(ValueError, match=r"mkt_cap_df is missing column\(s\) \['market_cap'\]"):
        estimate_factor_returns(returns, caps.rename({"market_cap": "cap"}), sectors, style_scores)
    with pytest.raises(ValueError, match=r"style_df is missing column\(s\) \['symbol'\]"):
        estimate_factor_returns(returns, caps, sectors, style_scores.drop("symbol"))
    with pytest.raises(ValueError, match=r"sector_df is missing column\(s\) \['date'\]"):
        estimate_factor_returns(returns, caps, sectors.drop("date"), style_scores)
    with pytest.raises(TypeError, match=r"returns_df must be a polars DataFrame or LazyFrame, got dict"):
        estimate_factor_returns(returns.to_dict(), caps, sectors, style_scores)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"returns_df is empty"):
        estimate_factor_returns(returns.clear(), caps, sectors, style_scores)
    with pytest.raises(ValueError, match=r"returns_df: column 'date' of type String is not a date"):
        estimate_factor_returns(returns.with_columns(pl.lit("soon").alias("date")), caps, sectors, style_scores)


@pytest.mark.parametrize("which", ["returns", "caps", "sectors", "styles"])
def test_duplicate_date_symbol_is_rejected(inputs: Inputs, which: str) -> None:
    frame = getattr(inputs, which)
    first = frame.sort(KEYS).row(0, named=True)
    duplicated = pl.concat([frame, frame.sort(KEYS).head(1)])
    what = {"returns": "returns_df", "caps": "mkt_cap_df", "sectors": "sector_df", "styles": "style_df"}[which]
    with pytest.raises(
        ValueError,
        match=rf"{what}: 2 rows share 1 \(date, symbol\) pairs, e\.g\. \({first['date']}, {first['symbol']}\)",
    ):
        estimate_factor_returns(*inputs.replace(**{which: duplicated}).args())


def test_non_numeric_and_clashing_columns_are_rejected(inputs: Inputs) -> None:
    returns, caps, sectors, style_scores = inputs.args()
    with pytest.raises(ValueError, match=r"style_df: column\(s\) \['label'\] must be numeric exposures"):
        estimate_factor_returns(returns, caps, sectors, style_scores.with_columns(pl.lit("x").alias("label")))
    with pytest.raises(ValueError, match=r"sector_df: column\(s\) \['industry'\] must be numeric exposures"):
        estimate_factor_returns(returns, caps, to_dummies(sectors).with_columns(pl.lit("x").alias("industry")), None)
    with pytest.raises(
        ValueError, match=r"sector_df: give either a 'sector' label column or exposure columns, not both \['extra'\]"
    ):
        estimate_factor_returns(returns, caps, sectors.with_columns(pl.lit(1.0).alias("extra")), None)
    with pytest.raises(ValueError, match=r"factor names must be distinct, got \('market', .*'Alpha', .*'Alpha'"):
        estimate_factor_returns(returns, caps, sectors, style_scores.with_columns(pl.col("sty_a").alias("Alpha")))


# --------------------------------------------------------------------------------------------------------------
# the result object


def test_result_unpacks_and_describes_itself(inputs: Inputs, clean: FactorReturns) -> None:
    factor_returns, residuals = clean
    assert factor_returns is clean.factor_returns and residuals is clean.residuals
    assert clean.method == "barra" and clean.exposure_lag == 1
    assert clean.sectors == ("Alpha", "Beta", "Delta", "Gamma")
    assert clean.styles == ("sty_a", "sty_b", "sty_c")
    assert clean.factors == ("market", *clean.sectors, *clean.styles)
    assert factor_returns.columns == ["date", *clean.factors]
    assert factor_returns["date"].is_sorted()
    assert residuals.columns == ["date", "symbol", "residual"]
    assert clean.diagnostics.columns == DIAGNOSTIC_COLUMNS
    assert clean.diagnostics.schema["dropped"] == pl.List(pl.String)
    assert clean.diagnostics["condition_number"].min() >= 1.0
    assert clean.excluded.columns == ["reason", "n_rows"]
    assert list(excluded_by_reason(clean)) == [
        RETURN_REASON,
        f"no positive market cap {LAG1}",
        f"no sector {LAG1}",
        *(f"no {s} exposure {LAG1}" for s in clean.styles),
    ]
    toraniko = estimate_factor_returns(*inputs.args(), method="toraniko")
    assert toraniko.method == "toraniko" and toraniko.exposure_lag == 0
    assert list(excluded_by_reason(toraniko))[1] == "no positive market cap on the same date"


@pytest.mark.parametrize("lag", [1, 0])
def test_exposures_are_the_lagged_inputs(inputs: Inputs, lag: int) -> None:
    result = estimate_factor_returns(*inputs.args(), exposure_lag=lag)
    exposures = result.exposures
    assert exposures.columns == ["date", "symbol", *result.factors]
    assert exposures.select(KEYS).sort(KEYS).equals(result.residuals.select(KEYS).sort(KEYS))
    dates = inputs.dates
    previous = pl.DataFrame({"date": dates[lag:], "exposure_date": dates[: len(dates) - lag]})
    expected = (
        exposures.select(KEYS)
        .join(previous, on="date")
        .join(inputs.styles.rename({"date": "exposure_date"}), on=["exposure_date", "symbol"], how="left")
        .join(inputs.sectors.rename({"date": "exposure_date"}), on=["exposure_date", "symbol"], how="left")
    )
    joined = exposures.join(expected, on=KEYS, suffix="_input")
    assert joined.height == exposures.height
    assert (joined["market"] == 1.0).all()
    for style in result.styles:
        np.testing.assert_array_equal(joined[style].to_numpy(), joined[f"{style}_input"].to_numpy())
    for sector in result.sectors:
        np.testing.assert_array_equal(
            joined[sector].to_numpy(), (joined["sector"] == sector).cast(pl.Float64).to_numpy()
        )
