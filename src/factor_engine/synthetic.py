"""Seeded synthetic equity market generated from a known characteristic factor model.

:func:`generate_market` returns an unbalanced daily panel (the data contract of :mod:`factor_engine.panel`)
together with the complete, exact truth that produced it, so estimators can be validated against it.

The generative model (all returns are daily simple returns as fractions, market caps in currency units):

* Calendar: ``n_days`` business days (Mon–Fri) from ``start`` (rolled forward to a weekday).
* Lifecycles: a fraction ``listing_rate`` of assets lists on a date after the first one and a fraction
  ``delisting_rate`` delists before the last one (independently); every asset lives at least two dates.
  One asset of each GICS sector is alive on every date, so all 11 sectors are always populated.
  An asset that is not alive on a date has no row that date.
* Sectors: fixed per asset with uneven, US-market-like proportions (:data:`SECTOR_WEIGHTS`).
* Market cap: lognormal at listing (median 3e9, log-sd 1.5, clipped to [1e8, 2e12]), then
  ``cap[t] = cap[t−1]·(1 + r[t])``.
* Styles: each style ``s`` has a per-asset AR(1) latent ``z[t] = φ·z[t−1] + √(1−φ²)·ε[t]`` with
  ``φ = 0.99`` started from its stationary N(0, 1) law. ``size`` blends the latent with the cap:
  ``0.95·std(−log cap[t]) + √(1−0.95²)·z[t]``. Every style is then standardized over the assets alive
  that date (equal-weight mean 0, sample std 1 with ddof=1, as :func:`factor_engine.xsection.center_xsection`).
  These standardized values, known at the close of date t, are ``truth.exposures``.
* Factor returns: ``g[t] ~ N(0, Σ)`` with :func:`base_factor_covariance` (market 1 %, sectors 1.2 %,
  styles 0.3 % daily vol), scaled by the factor regime multiplier ``m_f[t]``. The sector block is then
  made to satisfy the cap-weighted constraint ``Σ_s c_s[t−1]·f_s[t] = 0`` by subtracting its
  cap-weighted mean, ``c_s[t−1]`` being the total cap of sector s at the previous close (Barra USE4).
* Specific returns: ``u[t, i] = σ[t, i]·e[t, i]`` with ``e`` Student-t(``specific_df``) scaled to unit
  variance and ``σ[t, i] = (1 % + 1.5 %·q[t−1, i])·a_i·m_u[t]`` where ``q = clip((ln 1e12 − ln cap)/(ln 1e12 −
  ln 1e8), 0, 1)`` is a smallness score of the previous close cap, ``a_i`` a fixed per-asset lognormal
  dispersion (log-sd 0.15) and ``m_u[t]`` the specific regime multiplier.
* Returns (point in time): ``r[t, i] = f_market[t] + f_sector(i)[t] + Σ_s X[t−1, i, s]·f_s[t] + u[t, i]``
  using the exposures stored for the previous panel date. An asset's listing date has a null return.
  To keep caps positive ``u`` is clipped from below so that ``r ≥ −0.95``; the stored specific return is
  the clipped one, so the identity above holds exactly.
* Regimes (``regimes=True``): two independent two-state Markov chains started from their stationary
  law; factor multipliers (1.0, 2.0), specific multipliers (1.0, 1.5), stay probabilities 0.99 (calm)
  and 0.98 (stressed). With ``regimes=False`` both multipliers are 1.
* Fundamentals: ``log book_price = ln 0.4 + 0.5·v + 0.5·η₁``, ``log sales_price = ln 0.6 + 0.4·v + 0.6·η₂``,
  ``log cf_price = ln 0.07 + 0.3·v + 0.6·η₃`` where ``v`` is the standardized value exposure (the latent
  value process if ``"value"`` is not a style) and ``η`` are AR(1) N(0, 1) processes with φ = 0.995.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.signal import lfilter

from factor_engine.panel import DATE as _DATE
from factor_engine.panel import GICS_SECTORS as _GICS_SECTORS
from factor_engine.panel import MARKET_CAP as _MARKET_CAP
from factor_engine.panel import RETURNS as _RETURNS
from factor_engine.panel import SECTOR as _SECTOR
from factor_engine.panel import SYMBOL as _SYMBOL
from factor_engine.panel import VALUE_FEATURES as _VALUE_FEATURES

__all__ = [
    "SECTOR_WEIGHTS",
    "SyntheticMarket",
    "SyntheticTruth",
    "base_factor_covariance",
    "generate_market",
    "sector_constraint_projection",
]


MARKET = "market"
SPECIFIC_RETURN = "specific_return"
SPECIFIC_VOL = "specific_vol"
FACTOR_REGIME = "factor_regime"
SPECIFIC_REGIME = "specific_regime"

#: Share of assets drawn into each GICS sector (in ``GICS_SECTORS`` order), roughly a broad US universe.
SECTOR_WEIGHTS: tuple[float, ...] = (0.06, 0.12, 0.07, 0.06, 0.13, 0.13, 0.13, 0.12, 0.06, 0.06, 0.06)

# Daily volatilities (fractions) of the base factor covariance.
_MARKET_VOL = 0.010
_SECTOR_VOL = 0.012
_STYLE_VOL = 0.003
_SECTOR_SECTOR_CORR = 0.20
# Correlations between named factors; pairs involving styles that are not generated are ignored.
_PAIR_CORR: dict[tuple[str, str], float] = {
    (MARKET, "size"): 0.25,
    (MARKET, "momentum"): -0.20,
    ("momentum", "value"): -0.30,
    ("value", "size"): 0.15,
}

_STYLE_PERSISTENCE = 0.99
_SIZE_CAP_LOADING = 0.95
_FUNDAMENTAL_PERSISTENCE = 0.995
# (log level, loading on the value exposure, noise sd) of each value fundamental
_FUNDAMENTAL_MODEL: dict[str, tuple[float, float, float]] = {
    "book_price": (math.log(0.40), 0.5, 0.5),
    "sales_price": (math.log(0.60), 0.4, 0.6),
    "cf_price": (math.log(0.07), 0.3, 0.6),
}

_CAP_MEDIAN = 3e9
_CAP_LOG_SD = 1.5
_CAP_FLOOR = 1e8
_CAP_CEILING = 2e12
_VOL_CAP_SMALL = 1e8  # cap at (and below) which the base specific vol is _VOL_SMALL
_VOL_CAP_LARGE = 1e12  # cap at (and above) which the base specific vol is _VOL_LARGE
_VOL_SMALL = 0.025
_VOL_LARGE = 0.01
_VOL_DISPERSION = 0.15

_RETURN_FLOOR = -0.95

# Two-state regimes: (calm, stressed) multipliers and the probability of staying in each state.
_FACTOR_REGIME_LEVELS = (1.0, 2.0)
_SPECIFIC_REGIME_LEVELS = (1.0, 1.5)
_REGIME_STAY = (0.99, 0.98)


@dataclass(frozen=True)
class SyntheticTruth:
    """The exact quantities that generated a :class:`SyntheticMarket`.

    All returns and vols are daily fractions. Frames are sorted by (date, symbol) or by date.

    factor_returns: one row per return date (every panel date but the first): ``date``, ``market``, one
        column per GICS sector (the cap-constrained values), one per style.
    exposures: ``date``, ``symbol`` and one column per style for every alive (date, symbol): the
        standardized exposures known at the close of that date (they drive the next date's return).
    specific_returns: ``date``, ``symbol``, ``specific_return`` for every non-null panel return.
    specific_vol: ``date``, ``symbol``, ``specific_vol``: the true sd of that row's specific return
        (regime included); same rows as ``specific_returns``.
    factor_vol_multiplier: ``date``, ``factor_regime``, ``specific_regime``: the regime multipliers in force
        on each return date.
    sector_weights: ``date`` and one column per GICS sector: the cap weights ``c_s[t−1]/Σ c[t−1]`` of the
        previous close used by the sector constraint on each return date.
    factor_covariance: (K, K) base daily covariance of the unconstrained factor draw before regime scaling,
        rows/columns in ``factors`` order. The stored returns of date t have covariance
        ``m_f[t]²·P[t]·Σ·P[t]ᵀ`` (see :meth:`factor_covariance_on`).
    factors: ``("market", *GICS sectors, *styles)``.
    styles: the style names in generation order.
    """

    factor_returns: pl.DataFrame
    exposures: pl.DataFrame
    specific_returns: pl.DataFrame
    specific_vol: pl.DataFrame
    factor_vol_multiplier: pl.DataFrame
    sector_weights: pl.DataFrame
    factor_covariance: np.ndarray
    factors: tuple[str, ...]
    styles: tuple[str, ...]

    def factor_covariance_on(self, date: datetime.date) -> np.ndarray:
        """True (K, K) daily covariance of the stored factor returns of ``date`` (regime and constraint applied).

        Parameters
        ----------
        date: a return date of the market (any panel date but the first).
        """
        weights = self.sector_weights.filter(pl.col(_DATE) == date)
        regime = self.factor_vol_multiplier.filter(pl.col(_DATE) == date)
        if weights.height != 1 or regime.height != 1:
            raise ValueError(f"{date} is not a return date of this synthetic market")
        projection = sector_constraint_projection(
            weights.select(_GICS_SECTORS).to_numpy()[0], n_factors=len(self.factors)
        )
        multiplier = float(regime[FACTOR_REGIME][0])
        covariance = multiplier**2 * projection @ self.factor_covariance @ projection.T
        return np.asarray(0.5 * (covariance + covariance.T))


@dataclass(frozen=True)
class SyntheticMarket:
    """A synthetic panel and the truth that generated it.

    panel: ``date`` (Date), ``symbol`` (String), ``asset_returns`` (daily fraction, null on each asset's
        listing date), ``market_cap`` (currency units), ``sector`` (GICS name), ``book_price``,
        ``sales_price``, ``cf_price`` (positive ratios); one row per alive (date, symbol), sorted.
    truth: the exact factor model behind it.
    """

    panel: pl.DataFrame
    truth: SyntheticTruth


def base_factor_covariance(styles: Sequence[str]) -> np.ndarray:
    """Base daily covariance of (market, 11 GICS sectors, *styles) factor returns before regime scaling.

    Parameters
    ----------
    styles: style names; ``momentum``, ``value`` and ``size`` get built-in correlations, others none.

    Vols (daily fractions): market 0.010, sectors 0.012, styles 0.003. Sectors are pairwise correlated
    0.20; named pairs follow ``_PAIR_CORR``.
    """
    factors = (MARKET, *_GICS_SECTORS, *styles)
    n_sectors = len(_GICS_SECTORS)
    vols = np.array([_MARKET_VOL] + [_SECTOR_VOL] * n_sectors + [_STYLE_VOL] * len(styles))
    corr = np.eye(len(factors))
    sector_block = slice(1, 1 + n_sectors)
    corr[sector_block, sector_block] = _SECTOR_SECTOR_CORR
    np.fill_diagonal(corr, 1.0)
    position = {name: k for k, name in enumerate(factors)}
    for (first, second), rho in _PAIR_CORR.items():
        if first in position and second in position:
            corr[position[first], position[second]] = corr[position[second], position[first]] = rho
    if np.linalg.eigvalsh(corr).min() <= 0.0:
        raise ValueError("the built-in factor correlation matrix is not positive definite")
    covariance: np.ndarray = corr * np.outer(vols, vols)
    return covariance


def sector_constraint_projection(sector_weights: np.ndarray, *, n_factors: int) -> np.ndarray:
    """(K, K) matrix P mapping an unconstrained factor draw to the cap-constrained one (``f = P·g``).

    Parameters
    ----------
    sector_weights: (11,) cap weights of the sectors at the previous close (summing to 1).
    n_factors: K, the number of factors (market, 11 sectors, styles).
    """
    n_sectors = len(_GICS_SECTORS)
    projection = np.eye(n_factors)
    block = slice(1, 1 + n_sectors)
    projection[block, block] -= np.outer(np.ones(n_sectors), sector_weights)
    return projection


def generate_market(
    n_assets: int = 500,
    n_days: int = 756,
    *,
    seed: int = 0,
    styles: Sequence[str] = ("momentum", "value", "size"),
    start: datetime.date = datetime.date(2015, 1, 2),
    listing_rate: float = 0.08,
    delisting_rate: float = 0.08,
    regimes: bool = True,
    specific_df: float = 4.0,
) -> SyntheticMarket:
    """Generate a seeded synthetic daily equity panel and the exact factor-model truth behind it.

    Parameters
    ----------
    n_assets: number of distinct assets over the whole history (at least 11, one per GICS sector).
    n_days: number of business days (at least 5).
    seed: seed of ``numpy.random.default_rng``; the same seed gives identical frames.
    styles: style factor names (unique, not ``market`` nor a sector name). ``size`` is tied to −log cap.
    start: first calendar date (rolled forward to a weekday).
    listing_rate: fraction of assets (in [0, 1]) that list after the first date.
    delisting_rate: fraction of assets (in [0, 1]) that delist before the last date.
    regimes: draw the factor and specific volatility regimes (otherwise both multipliers are 1).
    specific_df: degrees of freedom (> 2, may be ``inf`` for normal) of the Student-t specific shocks.

    See the module docstring for the exact model.
    """
    if isinstance(styles, str):
        raise ValueError(f"styles must be a sequence of names, not the string {styles!r}")
    styles = tuple(styles)
    _validate(n_assets, n_days, styles, listing_rate, delisting_rate, specific_df)
    rng = np.random.default_rng(seed)
    n_sectors = len(_GICS_SECTORS)
    n_styles = len(styles)
    factors = (MARKET, *_GICS_SECTORS, *styles)

    dates = np.busday_offset(np.datetime64(start, "D"), np.arange(n_days), roll="forward")
    sector_code = _draw_sectors(rng, n_assets)
    listing, end = _draw_lifecycles(rng, n_assets, n_days, sector_code, listing_rate, delisting_rate)
    day = np.arange(n_days)[:, None]
    alive = (day >= listing[None, :]) & (day < end[None, :])
    alive_count = alive.sum(axis=1)

    initial_cap = np.clip(
        np.exp(math.log(_CAP_MEDIAN) + _CAP_LOG_SD * rng.standard_normal(n_assets)), _CAP_FLOOR, _CAP_CEILING
    )
    vol_dispersion = np.exp(_VOL_DISPERSION * rng.standard_normal(n_assets) - 0.5 * _VOL_DISPERSION**2)

    # Latent AR(1) processes; the value latent exists even when "value" is not a style (fundamentals).
    latent_value = _ar1(rng, (n_days, n_assets), _STYLE_PERSISTENCE)
    exposures = np.zeros((n_days, n_assets, n_styles))
    size_latent: np.ndarray | None = None
    for k, style in enumerate(styles):
        if style == "size":
            size_latent = _ar1(rng, (n_days, n_assets), _STYLE_PERSISTENCE)
        else:
            latent = latent_value if style == "value" else _ar1(rng, (n_days, n_assets), _STYLE_PERSISTENCE)
            exposures[:, :, k] = _standardize(latent, alive, alive_count)
    size_index = styles.index("size") if "size" in styles else None

    factor_multiplier = _regime_path(rng, n_days, _FACTOR_REGIME_LEVELS, regimes)
    specific_multiplier = _regime_path(rng, n_days, _SPECIFIC_REGIME_LEVELS, regimes)
    base_covariance = base_factor_covariance(styles)
    factor_draws = (rng.standard_normal((n_days, len(factors))) @ np.linalg.cholesky(base_covariance).T) * (
        factor_multiplier[:, None]
    )
    shocks = _unit_student_t(rng, specific_df, (n_days, n_assets))

    caps = np.empty((n_days, n_assets))
    caps[0] = initial_cap
    returns = np.full((n_days, n_assets), np.nan)
    specific = np.full((n_days, n_assets), np.nan)
    specific_vol = np.full((n_days, n_assets), np.nan)
    factor_returns = np.full((n_days, len(factors)), np.nan)
    sector_weights = np.full((n_days, n_sectors), np.nan)
    if size_index is not None and size_latent is not None:
        exposures[0, :, size_index] = _size_exposure(caps[0], size_latent[0], alive[0])
    sectors = slice(1, 1 + n_sectors)
    styles_block = slice(1 + n_sectors, None)
    log_vol_range = math.log(_VOL_CAP_LARGE) - math.log(_VOL_CAP_SMALL)
    for t in range(1, n_days):
        previous_caps = np.where(alive[t - 1], caps[t - 1], 0.0)
        sector_caps = np.bincount(sector_code, weights=previous_caps, minlength=n_sectors)
        weights = sector_caps / sector_caps.sum()
        draw = factor_draws[t]
        factor_returns[t, 0] = draw[0]
        factor_returns[t, sectors] = draw[sectors] - weights @ draw[sectors]
        factor_returns[t, styles_block] = draw[styles_block]
        sector_weights[t] = weights

        systematic = (
            factor_returns[t, 0]
            + factor_returns[t, sectors][sector_code]
            + exposures[t - 1] @ factor_returns[t, styles_block]
        )
        smallness = np.clip((math.log(_VOL_CAP_LARGE) - np.log(caps[t - 1])) / log_vol_range, 0.0, 1.0)
        specific_vol[t] = (_VOL_LARGE + (_VOL_SMALL - _VOL_LARGE) * smallness) * vol_dispersion
        specific_vol[t] *= specific_multiplier[t]
        specific[t] = np.maximum(specific_vol[t] * shocks[t], _RETURN_FLOOR - systematic)
        returns[t] = systematic + specific[t]
        caps[t] = np.where(listing < t, caps[t - 1] * (1.0 + returns[t]), initial_cap)
        if size_index is not None and size_latent is not None:
            exposures[t, :, size_index] = _size_exposure(caps[t], size_latent[t], alive[t])
    del shocks, factor_draws, size_latent

    has_return = alive & (day > listing[None, :])
    returns[~has_return] = np.nan  # listing dates (and dead cells, dropped below) carry no return
    value_signal = (
        exposures[:, :, styles.index("value")] if "value" in styles else _standardize(latent_value, alive, alive_count)
    )
    del latent_value

    date_series = pl.Series(_DATE, dates)
    symbol_series = pl.Series(_SYMBOL, _symbols(n_assets))
    alive_flat = np.flatnonzero(alive.ravel())
    date_index, asset_index = np.divmod(alive_flat, n_assets)
    keys = {
        _DATE: date_series.gather(date_index),
        _SYMBOL: symbol_series.gather(asset_index),
    }
    panel_columns: dict[str, pl.Series] = {
        **keys,
        _RETURNS: pl.Series(_RETURNS, returns.ravel()[alive_flat]).fill_nan(None),
        _MARKET_CAP: pl.Series(_MARKET_CAP, caps.ravel()[alive_flat]),
        _SECTOR: pl.Series(_SECTOR, _GICS_SECTORS).gather(sector_code[asset_index]),
    }
    del returns, caps
    for feature in _VALUE_FEATURES:
        level, loading, noise_sd = _FUNDAMENTAL_MODEL[feature]
        noise = _ar1(rng, (n_days, n_assets), _FUNDAMENTAL_PERSISTENCE)
        log_ratio = level + loading * value_signal + noise_sd * noise
        del noise
        panel_columns[feature] = pl.Series(feature, np.exp(log_ratio.ravel()[alive_flat]))
        del log_ratio
    panel = pl.DataFrame(panel_columns)

    exposure_frame = pl.DataFrame(
        {
            **keys,
            **{style: exposures[:, :, k].ravel()[alive_flat] for k, style in enumerate(styles)},
        }
    )
    del exposures
    return_flat = np.flatnonzero(has_return.ravel())
    return_date_index, return_asset_index = np.divmod(return_flat, n_assets)
    return_keys = {
        _DATE: date_series.gather(return_date_index),
        _SYMBOL: symbol_series.gather(return_asset_index),
    }
    specific_frame = pl.DataFrame({**return_keys, SPECIFIC_RETURN: specific.ravel()[return_flat]})
    specific_vol_frame = pl.DataFrame({**return_keys, SPECIFIC_VOL: specific_vol.ravel()[return_flat]})

    return_dates = date_series[1:]
    factor_frame = pl.DataFrame(
        {_DATE: return_dates, **{name: factor_returns[1:, k] for k, name in enumerate(factors)}}
    )
    regime_frame = pl.DataFrame(
        {
            _DATE: return_dates,
            FACTOR_REGIME: factor_multiplier[1:],
            SPECIFIC_REGIME: specific_multiplier[1:],
        }
    )
    weights_frame = pl.DataFrame(
        {_DATE: return_dates, **{name: sector_weights[1:, k] for k, name in enumerate(_GICS_SECTORS)}}
    )
    truth = SyntheticTruth(
        factor_returns=factor_frame,
        exposures=exposure_frame,
        specific_returns=specific_frame,
        specific_vol=specific_vol_frame,
        factor_vol_multiplier=regime_frame,
        sector_weights=weights_frame,
        factor_covariance=base_covariance,
        factors=factors,
        styles=styles,
    )
    return SyntheticMarket(panel=panel, truth=truth)


def _validate(
    n_assets: int,
    n_days: int,
    styles: tuple[str, ...],
    listing_rate: float,
    delisting_rate: float,
    specific_df: float,
) -> None:
    if n_assets < len(_GICS_SECTORS):
        raise ValueError(f"n_assets must be at least {len(_GICS_SECTORS)} (one per GICS sector), got {n_assets}")
    if n_days < 5:
        raise ValueError(f"n_days must be at least 5, got {n_days}")
    for name, rate in (("listing_rate", listing_rate), ("delisting_rate", delisting_rate)):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{name} must be a fraction in [0, 1], got {rate!r}")
    if not specific_df > 2.0:
        raise ValueError(f"specific_df must exceed 2 (finite variance), got {specific_df!r}")
    if len(set(styles)) != len(styles):
        raise ValueError(f"styles must be unique, got {styles}")
    reserved = {MARKET, *_GICS_SECTORS, _DATE, _SYMBOL}
    clashing = [s for s in styles if s in reserved or not s]
    if clashing:
        raise ValueError(f"style names {clashing} are empty or clash with the market/sector/key columns")


def _symbols(n_assets: int) -> list[str]:
    width = max(5, len(str(n_assets)))
    return [f"S{i:0{width}d}" for i in range(1, n_assets + 1)]


def _draw_sectors(rng: np.random.Generator, n_assets: int) -> np.ndarray:
    """Sector code (index into GICS sectors) per asset: one asset per sector first, the rest by weight."""
    n_sectors = len(_GICS_SECTORS)
    probabilities = np.asarray(SECTOR_WEIGHTS) / sum(SECTOR_WEIGHTS)
    codes = rng.choice(n_sectors, size=n_assets, p=probabilities)
    anchors = rng.choice(n_assets, size=n_sectors, replace=False)
    codes[anchors] = np.arange(n_sectors)
    return codes


def _draw_lifecycles(
    rng: np.random.Generator,
    n_assets: int,
    n_days: int,
    sector_code: np.ndarray,
    listing_rate: float,
    delisting_rate: float,
) -> tuple[np.ndarray, np.ndarray]:
    """First alive date index and end (exclusive) date index per asset.

    The lowest-numbered asset of each sector lives throughout so every sector is populated on every date.
    """
    n_sectors = len(_GICS_SECTORS)
    lists_late = rng.random(n_assets) < listing_rate
    delists = rng.random(n_assets) < delisting_rate
    anchors = np.array([np.flatnonzero(sector_code == s)[0] for s in range(n_sectors)])
    lists_late[anchors] = False
    delists[anchors] = False
    listing = np.where(lists_late, rng.integers(1, n_days - 2, size=n_assets), 0)
    # delisting: the last alive date is before the final date and at least one date after listing
    end = np.where(delists, rng.integers(listing + 2, n_days), n_days)
    return listing, end


def _ar1(rng: np.random.Generator, shape: tuple[int, int], persistence: float) -> np.ndarray:
    """(T, N) stationary N(0, 1) AR(1) paths along axis 0 with the given daily persistence."""
    innovations = rng.standard_normal(shape)
    innovations[1:] *= math.sqrt(1.0 - persistence**2)
    paths: np.ndarray = lfilter([1.0], [1.0, -persistence], innovations, axis=0)
    return paths


def _standardize(values: np.ndarray, alive: np.ndarray, alive_count: np.ndarray) -> np.ndarray:
    """Standardize each row of (T, N) ``values`` over its alive columns (mean 0, ddof=1 std 1); 0 elsewhere."""
    masked = np.where(alive, values, 0.0)
    mean = masked.sum(axis=1, keepdims=True) / alive_count[:, None]
    centered = np.where(alive, values - mean, 0.0)
    std = np.sqrt((centered**2).sum(axis=1, keepdims=True) / (alive_count[:, None] - 1))
    standardized: np.ndarray = centered / std
    return standardized


def _standardize_row(values: np.ndarray, alive: np.ndarray) -> np.ndarray:
    """Standardize one cross-section over its alive entries (mean 0, ddof=1 std 1); 0 elsewhere."""
    alive_values = values[alive]
    standardized = np.zeros_like(values)
    standardized[alive] = (alive_values - alive_values.mean()) / alive_values.std(ddof=1)
    return standardized


def _size_exposure(caps: np.ndarray, latent: np.ndarray, alive: np.ndarray) -> np.ndarray:
    """Size exposure of one date: standardized blend of standardized −log cap and the size latent."""
    cap_score = _standardize_row(-np.log(caps), alive)
    blend = _SIZE_CAP_LOADING * cap_score + math.sqrt(1.0 - _SIZE_CAP_LOADING**2) * latent
    return _standardize_row(blend, alive)


def _regime_path(rng: np.random.Generator, n_days: int, levels: tuple[float, float], enabled: bool) -> np.ndarray:
    """(T,) multiplier path of a two-state Markov regime started from its stationary law (ones if disabled)."""
    uniforms = rng.random(n_days)
    if not enabled:
        return np.ones(n_days)
    stay_calm, stay_stressed = _REGIME_STAY
    stressed_share = (1.0 - stay_calm) / ((1.0 - stay_calm) + (1.0 - stay_stressed))
    state = np.empty(n_days, dtype=np.int64)
    state[0] = int(uniforms[0] < stressed_share)
    for t in range(1, n_days):
        stay = stay_stressed if state[t - 1] else stay_calm
        state[t] = state[t - 1] if uniforms[t] < stay else 1 - state[t - 1]
    return np.asarray(levels)[state]


def _unit_student_t(rng: np.random.Generator, df: float, shape: tuple[int, int]) -> np.ndarray:
    """Student-t draws with ``df`` degrees of freedom scaled to unit variance (normal if df is infinite)."""
    if math.isinf(df):
        return rng.standard_normal(shape)
    draws: np.ndarray = rng.standard_t(df, size=shape) * math.sqrt((df - 2.0) / df)
    return draws
