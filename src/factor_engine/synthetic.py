"""Seeded synthetic equity market generated from a known characteristic factor model.

:func:`generate_market` returns an unbalanced daily panel (the data contract of :mod:`factor_engine.panel`)
together with the complete, exact truth that produced it, so estimators can be validated against it.

The generative model (all returns are daily simple returns as fractions, market caps in currency units,
dates counted as 0-based indices into the calendar):

* Calendar: ``n_days`` business days (Mon–Fri) from ``start`` (rolled forward to a weekday).
* Sectors: ``sectors`` is a taxonomy name, ``"gics"`` (:data:`~factor_engine.panel.GICS_SECTORS`, the
  default) or ``"seed"`` (:data:`~factor_engine.panel.SEED_SECTORS`), or any sequence of at least two distinct,
  non-empty labels (``("Alpha", "Beta")``, broker codes such as ``"4510"``). A sequence equal to a named
  taxonomy's labels is that taxonomy. Each asset has one fixed sector: one asset per sector first (its
  anchor), the others drawn with the shares ``sector_weights`` (default: uneven, US-market-like
  :data:`SECTOR_WEIGHTS` for GICS and the same shares matched by meaning for the seed names; equal shares
  for other labels).
* Lifecycles: a fraction ``listing_rate`` of assets lists on a date after the first one and a fraction
  ``delisting_rate`` delists before the last one (independently); every asset lives at least two dates.
  Each sector's anchor is alive on every date on which the sector is populated, so a sector is populated
  exactly on the dates it is meant to be (every date by default). An asset that is not alive on a date has
  no row that date.
* Sparse sectors: ``sector_start[s] = d`` means sector ``s`` has no row before date d: its assets that
  would list earlier list on d (so the sector arrives with most of its assets at once).
  ``sector_gaps[s] = (a, b)`` empties sector ``s`` on dates a to b inclusive: its assets have no row
  there and come back on b + 1; an asset that would list inside the gap lists on b + 1, one whose last
  row would fall inside it stays to the last date. Through the gap the caps of its assets are frozen at
  the last close before it (no return is generated while they are unobserved). At least two sectors must
  be populated on every date, and one of them on the previous date too.
* Market cap: lognormal at listing (median 3e9, log-sd 1.5, clipped to [1e8, 2e12]), then
  ``cap[t] = cap[t−1]·(1 + r[t])``; inside a sector's gap and on the first date after it
  ``cap[t] = cap[t−1]`` (frozen).
* Styles: each style ``s`` has a per-asset AR(1) latent ``z[t] = φ·z[t−1] + √(1−φ²)·ε[t]`` with
  ``φ = 0.99`` started from its stationary N(0, 1) law. ``size`` blends the latent with the cap:
  ``0.95·std(−log cap[t]) + √(1−0.95²)·z[t]``. Every style is then standardized over the assets alive
  that date (equal-weight mean 0, sample std 1 with ddof=1, as :func:`factor_engine.xsection.center_xsection`).
  These standardized values, known at the close of date t, are ``truth.exposures``.
  ``beta`` (only when named in ``styles``) is a market-beta style: its latent is far more persistent
  (φ = 0.999, betas drift slowly: a year later the latent still correlates e^(−0.25) ≈ 0.78) and it is
  standardized like the others. The latents of ``resvol`` and ``liquidity`` (characteristics measured over a
  year of returns or trading) drift slowly too, φ = 0.998. ``nlsize`` has no latent: it is USE4's non-linear
  size applied to the true caps of date t over the assets alive then (size = ln cap standardized to
  cap-weighted mean 0 and equal-weighted std 1 (ddof=1), clipped to ±3 and standardized again; its cube
  standardized; the residual of its cap-weighted regression on an intercept and size, clipped and
  standardized the same way), then standardized like every style. The other USE4 names (``liquidity``,
  ``earnings_yield``, ``growth``, ``leverage``, ``dividend_yield``, ``btop``) are plain latent styles whose
  observable characteristics are generated from the exposure (see Characteristics).
* Factor returns: ``g[t] ~ N(0, Σ)`` with :func:`base_factor_covariance` (market 1 %, sectors 1.2 %,
  styles 0.3 % daily vol), scaled by the factor regime multiplier ``m_f[t]``. The sector block is then
  made to satisfy the cap-weighted constraint ``Σ_s c_s[t−1]·f_s[t] = 0`` over the sectors populated on
  date t by subtracting their cap-weighted mean, ``c_s[t−1]`` being the total cap of sector s at the
  previous close (Barra USE4). The true return of a sector that is not populated on date t is null: it
  moves no asset. A sector populated on t but not on t−1 (its start date, the date after a gap) has
  ``c_s[t−1] = 0`` and its drawn return moves no return either (all its assets start with a null return).
  The ``beta`` style has no draw of its own: its return is tied to the market's, ``f_beta[t] =
  d·f_market[t]`` with ``d = beta_dispersion`` (after the regime scaling; its row and column of Σ are d times
  the market's), so the true market beta of asset i on date t is ``β[t, i] = 1 + d·X[t−1, i, beta]``:
  equal-weighted mean 1 and cross-sectional std ``d`` (ddof=1) over the assets alive on t − 1.
  ``truth.betas`` holds ``1 + d·X[t, i, beta]`` per alive (date, symbol), the beta known at the close of
  date t that drives the next date's return (1 for every row without ``beta``: every asset then loads 1 on
  the market factor). Every other style (``resvol`` … ``btop`` included) is drawn like the first three:
  0.3 % daily vol, uncorrelated with every other factor but for the pairs listed above.
* Market betas: an asset's beta on the observable market, the cap-weighted return ``R_m[t] = Σ_j w_j r_j[t]``
  over the assets with a return on t, ``w_j`` their previous close caps normalized (the market of
  :func:`factor_engine.styles.use4.market_return`), is not ``β`` alone: it also carries the other styles'
  covariances with ``R_m`` (``size``, ``momentum``), ``R_m``'s cap-weighted mean exposures and the asset's own
  specific weight in ``R_m``. ``truth.market_betas`` holds, per return row, the exact
  ``cov(r_i, R_m)/var(R_m)`` of date t under the true model: loadings ``b_j = (1, sector one-hot, X[t−1, j])``,
  factor covariance ``F = m_f[t]²·P[t]·Σ·P[t]ᵀ``, independent specific returns of variance ``σ[t, j]²``:
  ``(b_iᵀF b_m + w_i σ_i²)/(b_mᵀF b_m + Σ_j w_j² σ_j²)``, ``b_m = Σ_j w_j b_j`` (the specific return's clip
  at the floor aside). Its cap-weighted mean over the assets of ``R_m`` is 1. USE4's 252-day, half-life-63
  estimate correlates about 0.73 with ``β`` and 0.75 with this market beta at ``d = 0.3`` (1,000 assets): its sampling
  error, mostly from the sector (1.2 %) and specific (1–2.5 %) returns, is about 0.2 against a spread of 0.3.
* Specific returns: ``u[t, i] = σ[t, i]·e[t, i]`` with ``e`` Student-t(``specific_df``) scaled to unit
  variance and ``σ[t, i] = (1 % + 1.5 %·q[t−1, i])·a_i·m_u[t]`` where ``q = clip((ln 1e12 − ln cap)/(ln 1e12 −
  ln 1e8), 0, 1)`` is a smallness score of the previous close cap, ``a_i`` a fixed per-asset lognormal
  dispersion (log-sd 0.15) and ``m_u[t]`` the specific regime multiplier. With a ``resvol`` style ``σ[t, i]`` is
  further multiplied by ``exp(c·X[t−1, i, resvol] − c²/2)``, ``c = 0.3`` (mean 1 over the N(0, 1) exposure):
  the residual volatility exposure is a volatility characteristic as well as a priced factor.
* Returns (point in time): ``r[t, i] = f_market[t] + f_sector(i)[t] + Σ_s X[t−1, i, s]·f_s[t] + u[t, i]``
  using the exposures stored for the previous panel date (with ``beta``: ``β[t, i]·f_market[t] + …``). An
  asset has a return on a date when it has a row on that date and on the previous one: its listing date and
  its first date after a gap have a null return. To keep caps positive ``u`` is clipped from below so that
  ``r ≥ −0.95``; the stored specific return is the clipped one, so the identity above holds exactly.
* Regimes (``regimes=True``): two independent two-state Markov chains started from their stationary
  law; factor multipliers (1.0, 2.0), specific multipliers (1.0, 1.5), stay probabilities 0.99 (calm)
  and 0.98 (stressed). With ``regimes=False`` both multipliers are 1.
* Fundamentals: ``log book_price = ln 0.4 + 0.5·v + 0.5·η₁``, ``log sales_price = ln 0.6 + 0.4·v + 0.6·η₂``,
  ``log cf_price = ln 0.07 + 0.3·v + 0.6·η₃`` where ``v`` is the standardized value exposure (the latent
  value process if ``"value"`` is not a style) and ``η`` are AR(1) N(0, 1) processes with φ = 0.995. With
  a ``btop`` style ``book_price`` follows the btop exposure instead of ``v`` (same level, loading, noise).
* Characteristics of the USE4 styles named in ``styles`` (extra panel columns, in style order after the
  value fundamentals; ``X`` the style's standardized exposure of the row's date, each ``η`` a fresh AR(1)
  N(0, 1) process with φ = 0.995; drawn after everything else, so a market without these styles is the same):

  - ``liquidity``: ``volume`` and ``shares_outstanding`` (shares; no ``turnover`` column: a user's data has
    volumes and share counts, and the liquidity style reads ``volume / shares_outstanding``). The daily share
    turnover is ``ln turnover = ln 0.005 + 0.6·X + 0.35·η + 0.5·ε`` with ``ε`` independent N(0, 1) each day
    (volume spikes); the share count is the listing cap over a listing price (lognormal, median 30, log-sd
    0.8, clipped to [1, 2000]), fixed for the asset's life; ``volume = turnover·shares_outstanding``.
  - ``earnings_yield``: ``earnings_price = 0.05 + 0.03·X + 0.025·η`` (trailing E/P, negative for loss
    makers), ``forecast_earnings_price = 0.06 + 0.025·X + 0.012·η`` (forward E/P). ``cf_price`` stays a
    value fundamental.
  - ``growth`` (fractions per year): ``earnings_growth = 0.06 + 0.08·X + 0.10·η``, ``sales_growth = 0.05 +
    0.06·X + 0.05·η``, ``forecast_growth = 0.08 + 0.04·X + 0.03·η``.
  - ``leverage``: ``market_leverage = 1 + exp(ln 0.25 + 0.6·X + 0.4·η)``, ``book_leverage = 1 + exp(ln 0.5 +
    0.6·X + 0.4·η)`` (ratios ≥ 1), ``debt_to_assets = logistic(ln(0.25/0.75) + 0.6·X + 0.4·η)`` (a fraction).
  - ``dividend_yield``: ``dividend_yield = max(0.02 + 0.012·X + 0.006·η, 0)`` (a fraction; about 7 % of the
    rows pay none).
  - ``btop``: ``book_price`` (above).
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from factor_engine._dense import ewma_sum
from factor_engine.panel import DATE as _DATE
from factor_engine.panel import GICS_SECTORS as _GICS_SECTORS
from factor_engine.panel import MARKET_CAP as _MARKET_CAP
from factor_engine.panel import RETURNS as _RETURNS
from factor_engine.panel import SECTOR as _SECTOR
from factor_engine.panel import SYMBOL as _SYMBOL
from factor_engine.panel import TAXONOMIES as _TAXONOMIES
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
MARKET_BETA = "market_beta"
VOLUME = "volume"
SHARES_OUTSTANDING = "shares_outstanding"

#: Share of assets drawn into each GICS sector (in ``GICS_SECTORS`` order), roughly a broad US universe.
SECTOR_WEIGHTS: tuple[float, ...] = (0.06, 0.12, 0.07, 0.06, 0.13, 0.13, 0.13, 0.12, 0.06, 0.06, 0.06)
# Default shares of the named taxonomies, in their label order: the seed's names get the share of the GICS
# sector of the same meaning (Basic Materials = Materials, Consumer Cyclical = Consumer Discretionary, ...).
_TAXONOMY_WEIGHTS: dict[str, tuple[float, ...]] = {
    "gics": SECTOR_WEIGHTS,
    "seed": (0.06, 0.06, 0.12, 0.07, 0.06, 0.13, 0.13, 0.13, 0.06, 0.12, 0.06),
}

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
BETA = "beta"
RESVOL = "resvol"
NLSIZE = "nlsize"
LIQUIDITY = "liquidity"
EARNINGS_YIELD = "earnings_yield"
GROWTH = "growth"
LEVERAGE = "leverage"
DIVIDEND_YIELD = "dividend_yield"
BTOP = "btop"
_BETA_PERSISTENCE = 0.999
# daily persistence of the latents of the slowly drifting characteristics (the other styles: _STYLE_PERSISTENCE)
_LATENT_PERSISTENCE: dict[str, float] = {BETA: _BETA_PERSISTENCE, RESVOL: 0.998, LIQUIDITY: 0.998}
# c: the specific vol of an asset scales with exp(c·X_resvol − c²/2) (mean 1 over a N(0, 1) exposure)
_RESVOL_LOADING = 0.3
_NLSIZE_TRIM = 3.0  # USE4's outlier bound (standard deviations) in the non-linear size definition
# daily share turnover (fraction of shares outstanding):
# ln turnover = level + loading·X_liq + persistent_sd·η (AR(1), φ = 0.995) + daily_sd·ε (independent each day)
_TURNOVER_LEVEL = math.log(0.005)
_TURNOVER_LOADING = 0.6
_TURNOVER_PERSISTENT_SD = 0.35
_TURNOVER_DAILY_SD = 0.5
# share price at listing (currency units): lognormal, median 30, log-sd 0.8, clipped to [1, 2000]; the share
# count it implies (cap / price) is fixed for the asset's life
_PRICE_MEDIAN = 30.0
_PRICE_LOG_SD = 0.8
_PRICE_FLOOR = 1.0
_PRICE_CEILING = 2000.0
_BETA_DISPERSION = 0.3
_SIZE_CAP_LOADING = 0.95
_FUNDAMENTAL_PERSISTENCE = 0.995
# (log level, loading on the value exposure, noise sd) of each value fundamental
_FUNDAMENTAL_MODEL: dict[str, tuple[float, float, float]] = {
    "book_price": (math.log(0.40), 0.5, 0.5),
    "sales_price": (math.log(0.60), 0.4, 0.6),
    "cf_price": (math.log(0.07), 0.3, 0.6),
}
# Descriptor columns of the fundamental styles: (column, link, level, loading, noise sd); the column is
# link(level + loading·X + noise_sd·η) with X the style's standardized exposure and η an AR(1) N(0, 1) process
# (φ = _FUNDAMENTAL_PERSISTENCE). Links: "identity", "exp", "one_plus_exp" (1 + e^y, a ratio ≥ 1), "logistic"
# (1 / (1 + e^−y), a fraction), "floor_zero" (max(y, 0): non-payers).
_CHARACTERISTIC_MODEL: dict[str, tuple[tuple[str, str, float, float, float], ...]] = {
    EARNINGS_YIELD: (
        ("earnings_price", "identity", 0.05, 0.03, 0.025),
        ("forecast_earnings_price", "identity", 0.06, 0.025, 0.012),
    ),
    GROWTH: (
        ("earnings_growth", "identity", 0.06, 0.08, 0.10),
        ("sales_growth", "identity", 0.05, 0.06, 0.05),
        ("forecast_growth", "identity", 0.08, 0.04, 0.03),
    ),
    LEVERAGE: (
        ("market_leverage", "one_plus_exp", math.log(0.25), 0.6, 0.4),
        ("book_leverage", "one_plus_exp", math.log(0.5), 0.6, 0.4),
        ("debt_to_assets", "logistic", math.log(0.25 / 0.75), 0.6, 0.4),
    ),
    DIVIDEND_YIELD: (("dividend_yield", "floor_zero", 0.02, 0.012, 0.006),),
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
        column per sector (the cap-constrained values; null on the dates the sector has no row), one per
        style.
    exposures: ``date``, ``symbol`` and one column per style for every alive (date, symbol): the
        standardized exposures known at the close of that date (they drive the next date's return).
    specific_returns: ``date``, ``symbol``, ``specific_return`` for every non-null panel return.
    specific_vol: ``date``, ``symbol``, ``specific_vol``: the true sd of that row's specific return
        (regime included); same rows as ``specific_returns``.
    factor_vol_multiplier: ``date``, ``factor_regime``, ``specific_regime``: the regime multipliers in force
        on each return date.
    sector_weights: ``date`` and one column per sector: the cap weights ``c_s[t−1]/Σ c[t−1]`` of the
        previous close used by the sector constraint on each return date, the sum running over the sectors
        populated on that date (null for the others; 0 for a sector populated that date but not the day before).
    factor_covariance: (K, K) base daily covariance of the unconstrained factor draw before regime scaling,
        rows/columns in ``factors`` order. The stored returns of date t have covariance
        ``m_f[t]²·P[t]·Σ·P[t]ᵀ`` (see :meth:`factor_covariance_on`).
    factors: ``("market", *sectors, *styles)``.
    sectors: the sector labels in taxonomy order.
    styles: the style names in generation order.
    betas: ``date``, ``symbol``, ``beta``, same rows as ``exposures``: each asset's true market beta known at
        the close of that date (it drives the next date's return), ``1 + beta_dispersion·exposure`` of the
        ``beta`` style, or 1 for every row when ``beta`` is not a style.
    beta_dispersion: the ``beta_dispersion`` the market was generated with (used only with a ``beta`` style).
    market_betas: ``date``, ``symbol``, ``market_beta``, same rows as ``specific_returns``: the exact beta of
        that date's return on the cap-weighted market return of the date, ``cov(r_i, R_m)/var(R_m)`` under the
        true factor covariance and specific vols of the date (see the module docstring).
    """

    factor_returns: pl.DataFrame
    exposures: pl.DataFrame
    specific_returns: pl.DataFrame
    specific_vol: pl.DataFrame
    factor_vol_multiplier: pl.DataFrame
    sector_weights: pl.DataFrame
    factor_covariance: np.ndarray
    factors: tuple[str, ...]
    sectors: tuple[str, ...]
    styles: tuple[str, ...]
    betas: pl.DataFrame
    beta_dispersion: float
    market_betas: pl.DataFrame

    def factor_covariance_on(self, date: datetime.date) -> np.ndarray:
        """True (K, K) daily covariance of the stored factor returns of ``date`` (regime and constraint applied).

        The rows and columns of a sector with no row on ``date`` (null true return) are NaN.

        Parameters
        ----------
        date: a return date of the market (any panel date but the first).
        """
        weights = self.sector_weights.filter(pl.col(_DATE) == date)
        regime = self.factor_vol_multiplier.filter(pl.col(_DATE) == date)
        if weights.height != 1 or regime.height != 1:
            raise ValueError(f"{date} is not a return date of this synthetic market")
        sector_weights = weights.select(self.sectors).to_numpy()[0].astype(float)
        absent = np.isnan(sector_weights)
        projection = sector_constraint_projection(np.where(absent, 0.0, sector_weights), n_factors=len(self.factors))
        multiplier = float(regime[FACTOR_REGIME][0])
        covariance = multiplier**2 * projection @ self.factor_covariance @ projection.T
        covariance = np.asarray(0.5 * (covariance + covariance.T))
        absent_factors = 1 + np.flatnonzero(absent)
        covariance[absent_factors, :] = np.nan
        covariance[:, absent_factors] = np.nan
        return covariance


@dataclass(frozen=True)
class SyntheticMarket:
    """A synthetic panel and the truth that generated it.

    panel: ``date`` (Date), ``symbol`` (String), ``asset_returns`` (daily fraction, null on each asset's
        listing date and first date after a sector gap), ``market_cap`` (currency units), ``sector`` (a
        label of the taxonomy), ``book_price``, ``sales_price``, ``cf_price`` (positive ratios), then the
        characteristic columns of the USE4 styles among the styles (module docstring); one row per alive
        (date, symbol), sorted.
    truth: the exact factor model behind it.
    """

    panel: pl.DataFrame
    truth: SyntheticTruth


@dataclass(frozen=True)
class _SectorCalendar:
    """When each sector is populated: (T, S) ``present`` and ``in_gap`` masks, (S,) ``first_day``, ``gap_end``.

    ``gap_end`` is the first date index after the sector's gap (0 for a sector without a gap).
    """

    present: np.ndarray
    in_gap: np.ndarray
    first_day: np.ndarray
    gap_end: np.ndarray


def base_factor_covariance(
    styles: Sequence[str], *, n_sectors: int = len(_GICS_SECTORS), beta_dispersion: float = _BETA_DISPERSION
) -> np.ndarray:
    """Base daily covariance of (market, ``n_sectors`` sectors, *styles) factor returns before regime scaling.

    Parameters
    ----------
    styles: style names; ``momentum``, ``value`` and ``size`` get built-in correlations, ``beta`` is tied to
        the market, others none.
    n_sectors: number of sector factors (default 11, the GICS sectors).
    beta_dispersion: d, the ``beta`` factor return being ``d·f_market`` (used only with a ``beta`` style).

    Vols (daily fractions): market 0.010, sectors 0.012, styles 0.003. Sectors are pairwise correlated
    0.20; named pairs follow ``_PAIR_CORR``. The ``beta`` row and column are d times the market's (its
    variance d²·0.010²), so with ``beta`` the matrix is positive semi-definite and singular.
    """
    free_styles = [style for style in styles if style != BETA]
    n_free = 1 + n_sectors + len(free_styles)
    vols = np.array([_MARKET_VOL] + [_SECTOR_VOL] * n_sectors + [_STYLE_VOL] * len(free_styles))
    corr = np.eye(n_free)
    sector_block = slice(1, 1 + n_sectors)
    corr[sector_block, sector_block] = _SECTOR_SECTOR_CORR
    np.fill_diagonal(corr, 1.0)
    position = {MARKET: 0, **{style: 1 + n_sectors + k for k, style in enumerate(free_styles)}}
    for (first, second), rho in _PAIR_CORR.items():
        if first in position and second in position:
            corr[position[first], position[second]] = corr[position[second], position[first]] = rho
    if np.linalg.eigvalsh(corr).min() <= 0.0:
        raise ValueError("the built-in factor correlation matrix is not positive definite")
    covariance: np.ndarray = corr * np.outer(vols, vols)
    if BETA not in styles:
        return covariance
    # every factor is a free one but beta, which is d times the market: Σ = L·Σ_free·Lᵀ
    loading = np.zeros((1 + n_sectors + len(styles), n_free))
    loading[_free_rows(styles, n_sectors), np.arange(n_free)] = 1.0
    loading[1 + n_sectors + list(styles).index(BETA), 0] = beta_dispersion
    tied: np.ndarray = loading @ covariance @ loading.T
    return tied


def _free_rows(styles: Sequence[str], n_sectors: int) -> np.ndarray:
    """Indices, among (market, sectors, *styles), of the factors drawn on their own (all but ``beta``)."""
    return np.array([0, *range(1, 1 + n_sectors)] + [1 + n_sectors + k for k, s in enumerate(styles) if s != BETA])


def sector_constraint_projection(sector_weights: np.ndarray, *, n_factors: int) -> np.ndarray:
    """(K, K) matrix P mapping an unconstrained factor draw to the cap-constrained one (``f = P·g``).

    Parameters
    ----------
    sector_weights: (S,) cap weights of the sectors at the previous close (summing to 1; 0 for a sector
        left out of the constraint).
    n_factors: K, the number of factors (market, S sectors, styles).
    """
    n_sectors = len(sector_weights)
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
    sectors: str | Sequence[str] = "gics",
    sector_weights: Sequence[float] | None = None,
    sector_start: Mapping[str, int] | None = None,
    sector_gaps: Mapping[str, tuple[int, int]] | None = None,
    start: datetime.date = datetime.date(2015, 1, 2),
    listing_rate: float = 0.08,
    delisting_rate: float = 0.08,
    regimes: bool = True,
    specific_df: float = 4.0,
    beta_dispersion: float = _BETA_DISPERSION,
) -> SyntheticMarket:
    """Generate a seeded synthetic daily equity panel and the exact factor-model truth behind it.

    Parameters
    ----------
    n_assets: number of distinct assets over the whole history (at least one per sector).
    n_days: number of business days (at least 5).
    seed: seed of ``numpy.random.default_rng``; the same seed gives identical frames.
    styles: style factor names (unique, not ``market``, ``date``, ``symbol`` nor a sector label). ``size`` is
        tied to −log cap; ``beta`` is a slowly drifting market-beta style whose return is
        ``beta_dispersion·f_market`` (true betas in ``truth.betas``); ``resvol`` also scales the specific vol;
        ``nlsize`` is USE4's non-linear size of the true caps; ``liquidity``, ``earnings_yield``, ``growth``,
        ``leverage``, ``dividend_yield`` and ``btop`` add the panel columns their engine styles read (``btop``
        drives ``book_price``). Any other name is a latent style with no characteristic.
    sectors: a taxonomy name, ``"gics"`` or ``"seed"`` (see :data:`factor_engine.panel.TAXONOMIES`), or a
        sequence of at least two distinct, non-empty sector labels, not ``market``, ``date``, ``symbol`` nor
        a style name. The truth's factors are ``("market", *sectors, *styles)`` in that order.
    sector_weights: share of assets drawn into each sector, in ``sectors`` order (non-negative, normalized
        to sum 1). Default: the uneven :data:`SECTOR_WEIGHTS` for GICS (matched by meaning for the seed
        names), equal shares for other labels.
    sector_start: ``label -> date index`` (0-based, at most ``n_days − 2``): the sector has no row before it.
    sector_gaps: ``label -> (first, last)`` date indices, inclusive: the sector has no row on those dates.
        The gap must start after the sector's first date and end by ``n_days − 3`` (two dates after it).
    start: first calendar date (rolled forward to a weekday).
    listing_rate: fraction of assets (in [0, 1]) that list after the first date.
    delisting_rate: fraction of assets (in [0, 1]) that delist before the last date.
    regimes: draw the factor and specific volatility regimes (otherwise both multipliers are 1).
    specific_df: degrees of freedom (> 2, may be ``inf`` for normal) of the Student-t specific shocks.
    beta_dispersion: cross-sectional standard deviation (ddof=1, equal-weighted) of the true market betas
        ``1 + beta_dispersion·X_beta`` around their equal-weighted mean 1 (finite, ≥ 0; used only with a
        ``beta`` style).

    The true return of a sector on a date it has no row is null and the sector constraint runs over the
    sectors populated that date; caps are frozen through a gap. See the module docstring for the exact model.

    Raises
    ------
    ValueError
        For an invalid argument, naming it: unknown taxonomy, empty, duplicate or clashing labels, weights
        of the wrong length, a start or gap outside the calendar or naming an unknown sector, or fewer than
        two sectors populated on some date.
    """
    if isinstance(styles, str):
        raise ValueError(f"styles must be a sequence of names, not the string {styles!r}")
    styles = tuple(styles)
    _validate(n_days, styles, listing_rate, delisting_rate, specific_df, beta_dispersion)
    sector_labels, taxonomy = _sector_labels(sectors, styles)
    if n_assets < len(sector_labels):
        raise ValueError(f"n_assets must be at least {len(sector_labels)} (one per sector), got {n_assets}")
    sector_shares = _sector_shares(sector_labels, taxonomy, sector_weights)
    calendar = _sector_calendar(sector_labels, n_days, sector_start, sector_gaps)
    rng = np.random.default_rng(seed)
    n_sectors = len(sector_labels)
    n_styles = len(styles)
    factors = (MARKET, *sector_labels, *styles)

    dates = np.busday_offset(np.datetime64(start, "D"), np.arange(n_days), roll="forward")
    sector_code = _draw_sectors(rng, n_assets, sector_shares)
    listing, end = _draw_lifecycles(rng, n_assets, n_days, sector_code, listing_rate, delisting_rate, calendar)
    day = np.arange(n_days)[:, None]
    asset_in_gap = calendar.in_gap[:, sector_code]
    alive = (day >= listing[None, :]) & (day < end[None, :]) & ~asset_in_gap
    alive_count = alive.sum(axis=1)
    # a return needs a row on the date and on the previous one (not on a listing date nor after a gap)
    has_return = alive.copy()
    has_return[0] = False
    has_return[1:] &= alive[:-1]

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
        elif style != NLSIZE:  # non-linear size is a function of the caps (set with them, date by date)
            persistence = _LATENT_PERSISTENCE.get(style, _STYLE_PERSISTENCE)
            latent = latent_value if style == "value" else _ar1(rng, (n_days, n_assets), persistence)
            exposures[:, :, k] = _standardize(latent, alive, alive_count)
    size_index = styles.index("size") if "size" in styles else None
    nlsize_index = styles.index(NLSIZE) if NLSIZE in styles else None
    # specific vol multiplier of each asset from its residual volatility exposure (1 without that style)
    resvol_scale = (
        np.exp(_RESVOL_LOADING * exposures[:, :, styles.index(RESVOL)] - 0.5 * _RESVOL_LOADING**2)
        if RESVOL in styles
        else None
    )

    factor_multiplier = _regime_path(rng, n_days, _FACTOR_REGIME_LEVELS, regimes)
    specific_multiplier = _regime_path(rng, n_days, _SPECIFIC_REGIME_LEVELS, regimes)
    base_covariance = base_factor_covariance(styles, n_sectors=n_sectors, beta_dispersion=beta_dispersion)
    # beta has no draw of its own: the free factors are drawn, then beta = d·market (after the regime scaling)
    free = _free_rows(styles, n_sectors)
    free_covariance = base_covariance[np.ix_(free, free)]
    factor_draws = np.empty((n_days, len(factors)))
    factor_draws[:, free] = (rng.standard_normal((n_days, len(free))) @ np.linalg.cholesky(free_covariance).T) * (
        factor_multiplier[:, None]
    )
    if BETA in styles:
        factor_draws[:, factors.index(BETA)] = beta_dispersion * factor_draws[:, 0]
    shocks = _unit_student_t(rng, specific_df, (n_days, n_assets))

    caps = np.empty((n_days, n_assets))
    caps[0] = initial_cap
    returns = np.full((n_days, n_assets), np.nan)
    specific = np.full((n_days, n_assets), np.nan)
    specific_vol = np.full((n_days, n_assets), np.nan)
    factor_returns = np.full((n_days, len(factors)), np.nan)
    constraint_weights = np.full((n_days, n_sectors), np.nan)
    if size_index is not None and size_latent is not None:
        exposures[0, :, size_index] = _size_exposure(caps[0], size_latent[0], alive[0])
    if nlsize_index is not None:
        exposures[0, :, nlsize_index] = _nlsize_exposure(caps[0], alive[0])
    sector_block = slice(1, 1 + n_sectors)
    styles_block = slice(1 + n_sectors, None)
    log_vol_range = math.log(_VOL_CAP_LARGE) - math.log(_VOL_CAP_SMALL)
    for t in range(1, n_days):
        present = calendar.present[t]
        previous_caps = np.where(alive[t - 1], caps[t - 1], 0.0)
        sector_caps = np.bincount(sector_code, weights=previous_caps, minlength=n_sectors)
        sector_caps = np.where(present, sector_caps, 0.0)
        weights = sector_caps / sector_caps.sum()
        draw = factor_draws[t]
        sector_returns = np.where(present, draw[sector_block] - weights @ draw[sector_block], 0.0)
        factor_returns[t, 0] = draw[0]
        factor_returns[t, sector_block] = np.where(present, sector_returns, np.nan)
        factor_returns[t, styles_block] = draw[styles_block]
        constraint_weights[t] = np.where(present, weights, np.nan)

        systematic = (
            factor_returns[t, 0] + sector_returns[sector_code] + exposures[t - 1] @ factor_returns[t, styles_block]
        )
        smallness = np.clip((math.log(_VOL_CAP_LARGE) - np.log(caps[t - 1])) / log_vol_range, 0.0, 1.0)
        specific_vol[t] = (_VOL_LARGE + (_VOL_SMALL - _VOL_LARGE) * smallness) * vol_dispersion
        specific_vol[t] *= specific_multiplier[t]
        if resvol_scale is not None:
            specific_vol[t] *= resvol_scale[t - 1]
        specific[t] = np.maximum(specific_vol[t] * shocks[t], _RETURN_FLOOR - systematic)
        returns[t] = systematic + specific[t]
        # caps are frozen through a sector's gap and on the (return-less) first date after it
        frozen = asset_in_gap[t] | asset_in_gap[t - 1]
        grown = np.where(frozen, caps[t - 1], caps[t - 1] * (1.0 + returns[t]))
        caps[t] = np.where(listing < t, grown, initial_cap)
        if size_index is not None and size_latent is not None:
            exposures[t, :, size_index] = _size_exposure(caps[t], size_latent[t], alive[t])
        if nlsize_index is not None:
            exposures[t, :, nlsize_index] = _nlsize_exposure(caps[t], alive[t])
    del shocks, factor_draws, size_latent, resvol_scale

    returns[~has_return] = np.nan  # listing dates, first dates after a gap (and dead cells, dropped below)
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
        _SECTOR: pl.Series(_SECTOR, sector_labels, dtype=pl.String).gather(sector_code[asset_index]),
    }
    implied_betas = _implied_market_betas(
        exposures, caps, has_return, sector_code, specific_vol, base_covariance, factor_multiplier, constraint_weights
    )
    del returns
    for feature in _VALUE_FEATURES:
        level, loading, noise_sd = _FUNDAMENTAL_MODEL[feature]
        # book/price follows the book-to-price style when it is one (the noise draw is the same)
        signal = exposures[:, :, styles.index(BTOP)] if feature == "book_price" and BTOP in styles else value_signal
        noise = _ar1(rng, (n_days, n_assets), _FUNDAMENTAL_PERSISTENCE)
        log_ratio = level + loading * signal + noise_sd * noise
        del noise
        panel_columns[feature] = pl.Series(feature, np.exp(log_ratio.ravel()[alive_flat]))
        del log_ratio
    # the characteristics of the other styles, drawn after everything else (a market without them is unchanged)
    for k, style in enumerate(styles):
        if style == LIQUIDITY:
            panel_columns.update(_liquidity_columns(rng, exposures[:, :, k], initial_cap, alive_flat))
        for column, link, level, loading, noise_sd in _CHARACTERISTIC_MODEL.get(style, ()):
            noise = _ar1(rng, (n_days, n_assets), _FUNDAMENTAL_PERSISTENCE)
            linear = level + loading * exposures[:, :, k] + noise_sd * noise
            del noise
            panel_columns[column] = pl.Series(column, _apply_link(link, linear.ravel()[alive_flat]))
            del linear
    del caps
    panel = pl.DataFrame(panel_columns)

    exposure_frame = pl.DataFrame(
        {
            **keys,
            **{style: exposures[:, :, k].ravel()[alive_flat] for k, style in enumerate(styles)},
        }
    )
    market_betas = (
        1.0 + beta_dispersion * exposure_frame[BETA].to_numpy() if BETA in styles else np.ones(alive_flat.size)
    )
    beta_frame = pl.DataFrame({**keys, BETA: market_betas})
    del exposures
    return_flat = np.flatnonzero(has_return.ravel())
    return_date_index, return_asset_index = np.divmod(return_flat, n_assets)
    return_keys = {
        _DATE: date_series.gather(return_date_index),
        _SYMBOL: symbol_series.gather(return_asset_index),
    }
    specific_frame = pl.DataFrame({**return_keys, SPECIFIC_RETURN: specific.ravel()[return_flat]})
    specific_vol_frame = pl.DataFrame({**return_keys, SPECIFIC_VOL: specific_vol.ravel()[return_flat]})
    market_beta_frame = pl.DataFrame({**return_keys, MARKET_BETA: implied_betas.ravel()[return_flat]})

    return_dates = date_series[1:]
    factor_frame = pl.DataFrame(
        {_DATE: return_dates, **{name: factor_returns[1:, k] for k, name in enumerate(factors)}}
    ).fill_nan(None)
    regime_frame = pl.DataFrame(
        {
            _DATE: return_dates,
            FACTOR_REGIME: factor_multiplier[1:],
            SPECIFIC_REGIME: specific_multiplier[1:],
        }
    )
    weights_frame = pl.DataFrame(
        {_DATE: return_dates, **{name: constraint_weights[1:, k] for k, name in enumerate(sector_labels)}}
    ).fill_nan(None)
    truth = SyntheticTruth(
        factor_returns=factor_frame,
        exposures=exposure_frame,
        specific_returns=specific_frame,
        specific_vol=specific_vol_frame,
        factor_vol_multiplier=regime_frame,
        sector_weights=weights_frame,
        factor_covariance=base_covariance,
        factors=factors,
        sectors=sector_labels,
        styles=styles,
        betas=beta_frame,
        beta_dispersion=float(beta_dispersion),
        market_betas=market_beta_frame,
    )
    return SyntheticMarket(panel=panel, truth=truth)


def _validate(
    n_days: int,
    styles: tuple[str, ...],
    listing_rate: float,
    delisting_rate: float,
    specific_df: float,
    beta_dispersion: float,
) -> None:
    if n_days < 5:
        raise ValueError(f"n_days must be at least 5, got {n_days}")
    for name, rate in (("listing_rate", listing_rate), ("delisting_rate", delisting_rate)):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{name} must be a fraction in [0, 1], got {rate!r}")
    if not specific_df > 2.0:
        raise ValueError(f"specific_df must exceed 2 (finite variance), got {specific_df!r}")
    if isinstance(beta_dispersion, bool) or not (math.isfinite(beta_dispersion) and beta_dispersion >= 0.0):
        raise ValueError(f"beta_dispersion must be a finite number ≥ 0, got {beta_dispersion!r}")
    if len(set(styles)) != len(styles):
        raise ValueError(f"styles must be unique, got {styles}")
    reserved = {MARKET, _DATE, _SYMBOL}
    clashing = [s for s in styles if s in reserved or not s]
    if clashing:
        raise ValueError(f"style names {clashing} are empty or clash with the market/key columns")


def _sector_labels(sectors: str | Sequence[str], styles: tuple[str, ...]) -> tuple[tuple[str, ...], str | None]:
    """The sector labels and the name of their taxonomy (None for labels that are not a named taxonomy)."""
    if isinstance(sectors, str):
        if sectors not in _TAXONOMIES:
            known = ", ".join(repr(name) for name in _TAXONOMIES)
            raise ValueError(
                f"unknown sector taxonomy {sectors!r} (known: {known}); pass a sequence of labels for your own"
            )
        labels = _TAXONOMIES[sectors]
    else:
        labels = tuple(sectors)
        not_text = [label for label in labels if not isinstance(label, str)]
        if not_text:
            raise ValueError(f"sector labels must be text, got {not_text}")
        if len(labels) < 2:
            raise ValueError(f"at least 2 sector labels are needed, got {list(labels)}")
        blank = [label for label in labels if not label.strip()]
        if blank:
            raise ValueError(f"sector labels must be non-empty, got {blank}")
        duplicated = sorted({label for label in labels if labels.count(label) > 1})
        if duplicated:
            raise ValueError(f"sector labels must be distinct, {duplicated} repeat")
    clashing = [label for label in labels if label in {MARKET, _DATE, _SYMBOL}]
    if clashing:
        raise ValueError(f"sector labels {clashing} clash with the market factor or the date/symbol key columns")
    clashing_styles = [label for label in labels if label in styles]
    if clashing_styles:
        raise ValueError(f"sector labels {clashing_styles} clash with the style names {list(styles)}")
    taxonomy = next((name for name, named in _TAXONOMIES.items() if labels == named), None)
    return labels, taxonomy


def _sector_shares(labels: tuple[str, ...], taxonomy: str | None, sector_weights: Sequence[float] | None) -> np.ndarray:
    """(S,) probabilities of drawing each sector (after the one anchor asset per sector)."""
    if sector_weights is None:
        default = _TAXONOMY_WEIGHTS.get(taxonomy) if taxonomy is not None else None
        shares = np.asarray(default) if default is not None else np.ones(len(labels))
    else:
        if isinstance(sector_weights, Mapping | str):
            raise ValueError("sector_weights must be a sequence of shares in sector order")
        shares = np.asarray(sector_weights, dtype=float)
        if shares.shape != (len(labels),):
            raise ValueError(
                f"sector_weights must have one share per sector ({len(labels)}), got {len(sector_weights)}"
            )
        if not (np.isfinite(shares).all() and (shares >= 0.0).all() and shares.sum() > 0.0):
            raise ValueError(f"sector_weights must be finite, non-negative and not all zero, got {list(shares)}")
    # a left-to-right Python sum, as before the taxonomies existed (keeps the default draws bit for bit)
    probabilities: np.ndarray = shares / sum(shares.tolist())
    return probabilities


def _sector_calendar(
    labels: tuple[str, ...],
    n_days: int,
    sector_start: Mapping[str, int] | None,
    sector_gaps: Mapping[str, tuple[int, int]] | None,
) -> _SectorCalendar:
    """Check ``sector_start`` and ``sector_gaps`` and return the dates on which each sector is populated."""
    position = {label: k for k, label in enumerate(labels)}
    first_day = np.zeros(len(labels), dtype=np.int64)
    gap_end = np.zeros(len(labels), dtype=np.int64)
    in_gap = np.zeros((n_days, len(labels)), dtype=bool)
    for option, mapping in (("sector_start", sector_start), ("sector_gaps", sector_gaps)):
        unknown = [label for label in mapping or {} if label not in position]
        if unknown:
            raise ValueError(f"{option} names sectors that are not in the taxonomy: {unknown}")
    for label, first in (sector_start or {}).items():
        if not _is_index(first) or not 0 <= first <= n_days - 2:
            raise ValueError(
                f"sector_start[{label!r}] = {first!r} is outside the calendar: it must be a date index in "
                f"[0, {n_days - 2}] (n_days - 2, so the sector has a return date)"
            )
        first_day[position[label]] = first
    for label, gap in (sector_gaps or {}).items():
        sector = position[label]
        lowest, highest = int(first_day[sector]) + 1, n_days - 3
        if (
            not isinstance(gap, Sequence)
            or len(gap) != 2
            or not all(_is_index(day) for day in gap)
            or not lowest <= gap[0] <= gap[1] <= highest
        ):
            raise ValueError(
                f"sector_gaps[{label!r}] = {gap!r} is outside the calendar: it must be a pair (first, last) of "
                f"date indices with {lowest} <= first <= last <= {highest} (after the sector's first date, two "
                "dates before the end)"
            )
        in_gap[gap[0] : gap[1] + 1, sector] = True
        gap_end[sector] = gap[1] + 1
    present = (np.arange(n_days)[:, None] >= first_day[None, :]) & ~in_gap
    populated = present.sum(axis=1)
    if populated.min() < 2:
        day = int(np.argmin(populated))
        names = [label for label, here in zip(labels, present[day], strict=True) if here]
        raise ValueError(
            f"at least 2 sectors must be populated on every date; on date index {day} only {names} would be "
            "(check sector_start and sector_gaps)"
        )
    carried = (present[1:] & present[:-1]).any(axis=1)
    if not carried.all():
        day = int(np.argmin(carried)) + 1
        raise ValueError(
            f"no sector is populated on both date indices {day - 1} and {day}: the sector constraint of date "
            f"{day} needs one (check sector_start and sector_gaps)"
        )
    return _SectorCalendar(present=present, in_gap=in_gap, first_day=first_day, gap_end=gap_end)


def _is_index(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _symbols(n_assets: int) -> list[str]:
    width = max(5, len(str(n_assets)))
    return [f"S{i:0{width}d}" for i in range(1, n_assets + 1)]


def _draw_sectors(rng: np.random.Generator, n_assets: int, probabilities: np.ndarray) -> np.ndarray:
    """Sector code (index into the sector labels) per asset: one asset per sector first, the rest by share."""
    n_sectors = len(probabilities)
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
    calendar: _SectorCalendar,
) -> tuple[np.ndarray, np.ndarray]:
    """First alive date index and end (exclusive) date index per asset (before the gaps are cut out).

    The lowest-numbered asset of each sector lives from the sector's first date to the end, so every sector
    is populated on every date of its calendar. No asset lists before its sector's first date or inside
    its sector's gap (it lists the date after), and none has its last date inside the gap (it stays).
    """
    n_sectors = len(calendar.first_day)
    lists_late = rng.random(n_assets) < listing_rate
    delists = rng.random(n_assets) < delisting_rate
    anchors = np.array([np.flatnonzero(sector_code == s)[0] for s in range(n_sectors)])
    lists_late[anchors] = False
    delists[anchors] = False
    listing = np.where(lists_late, rng.integers(1, n_days - 2, size=n_assets), 0)
    listing = np.maximum(listing, calendar.first_day[sector_code])
    asset_gap_end = calendar.gap_end[sector_code]
    listing = np.where(calendar.in_gap[listing, sector_code], asset_gap_end, listing)
    # delisting: the last alive date is before the final date and at least one date after listing
    delists &= listing + 2 < n_days
    end = np.where(delists, rng.integers(np.minimum(listing + 2, n_days - 1), n_days), n_days)
    end = np.where(calendar.in_gap[end - 1, sector_code], n_days, end)
    return listing, end


def _ar1(rng: np.random.Generator, shape: tuple[int, int], persistence: float) -> np.ndarray:
    """(T, N) stationary N(0, 1) AR(1) paths along axis 0 with the given daily persistence."""
    innovations = rng.standard_normal(shape)
    innovations[1:] *= math.sqrt(1.0 - persistence**2)
    paths: np.ndarray = ewma_sum(innovations, persistence, axis=0, sequential_rows=True)  # fingerprinted
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


def _nlsize_exposure(caps: np.ndarray, alive: np.ndarray) -> np.ndarray:
    """Non-linear size of one date, USE4's definition on the true caps, then standardized like every style.

    Over the alive assets: size = log cap standardized (cap-weighted mean 0, equal-weighted ddof=1 std 1),
    clipped to ±3 and standardized again; its cube standardized; the residual of a cap-weighted regression of
    the cube on an intercept and size, clipped to ±3 and standardized the same way; finally standardized to
    equal-weighted mean 0 and std 1 (as every true exposure). 0 for the assets not alive.
    """
    weights = caps[alive]
    size = _trim_use4(np.log(weights), weights)
    cube = _standardize_use4(size**3, weights)
    design = np.column_stack([np.ones_like(size), size]) * np.sqrt(weights)[:, None]
    coefficients = np.linalg.lstsq(design, cube * np.sqrt(weights), rcond=None)[0]
    residual = cube - coefficients[0] - coefficients[1] * size
    nonlinear = np.zeros_like(caps)
    nonlinear[alive] = _trim_use4(residual, weights)
    return _standardize_row(nonlinear, alive)


def _standardize_use4(values: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """One cross-section shifted to a cap-weighted mean 0 and scaled to an equal-weighted (ddof=1) std 1."""
    standardized: np.ndarray = (values - np.average(values, weights=caps)) / values.std(ddof=1)
    return standardized


def _trim_use4(values: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """USE4's outlier treatment of one cross-section: standardize, clip to ±3, standardize again."""
    clipped = np.clip(_standardize_use4(values, caps), -_NLSIZE_TRIM, _NLSIZE_TRIM)
    return _standardize_use4(clipped, caps)


def _implied_market_betas(
    exposures: np.ndarray,
    caps: np.ndarray,
    has_return: np.ndarray,
    sector_code: np.ndarray,
    specific_vol: np.ndarray,
    base_covariance: np.ndarray,
    factor_multiplier: np.ndarray,
    constraint_weights: np.ndarray,
) -> np.ndarray:
    """(T, N) true beta of each return on its date's cap-weighted market return, NaN where there is no return.

    ``β[t, i] = cov(r_i, R_m) / var(R_m)`` with ``R_m[t] = Σ_j w_j r_j[t]`` over the assets with a return on t,
    ``w_j`` their previous close caps normalized (:func:`factor_engine.styles.use4.market_return`), under the
    true model of date t: factor loadings ``b_j = (1, sector one-hot, X[t − 1, j])``, factor covariance
    ``F = m_f[t]²·P[t]·Σ·P[t]ᵀ`` and independent specific returns of variance ``σ[t, j]²``:
    ``β_i = (b_iᵀ F b_m + w_i σ_i²) / (b_mᵀ F b_m + Σ_j w_j² σ_j²)`` with ``b_m = Σ_j w_j b_j``.
    """
    n_days, n_assets, _ = exposures.shape
    n_sectors = constraint_weights.shape[1]
    n_factors = base_covariance.shape[0]
    betas = np.full((n_days, n_assets), np.nan)
    for t in range(1, n_days):
        rows = np.flatnonzero(has_return[t])
        if rows.size == 0:
            continue
        weights = caps[t - 1, rows] / caps[t - 1, rows].sum()
        sectors = sector_code[rows]
        style_loadings = exposures[t - 1, rows]
        projection = sector_constraint_projection(np.nan_to_num(constraint_weights[t]), n_factors=n_factors)
        covariance = factor_multiplier[t] ** 2 * projection @ base_covariance @ projection.T
        market_loadings = np.concatenate(
            [[1.0], np.bincount(sectors, weights=weights, minlength=n_sectors), weights @ style_loadings]
        )
        covariance_with_market = covariance @ market_loadings
        specific_variance = specific_vol[t, rows] ** 2
        covariances = (
            covariance_with_market[0]
            + covariance_with_market[1 + sectors]
            + style_loadings @ covariance_with_market[1 + n_sectors :]
            + weights * specific_variance
        )
        market_variance = market_loadings @ covariance_with_market + weights**2 @ specific_variance
        betas[t, rows] = covariances / market_variance
    return betas


def _liquidity_columns(
    rng: np.random.Generator, exposure: np.ndarray, initial_cap: np.ndarray, alive_flat: np.ndarray
) -> dict[str, pl.Series]:
    """``volume`` and ``shares_outstanding`` of the alive rows from the (T, N) liquidity exposure.

    ``ln turnover = level + loading·X + persistent_sd·η + daily_sd·ε`` (η AR(1) with φ = 0.995, ε independent
    N(0, 1) each day); the share count is the listing cap over a lognormal listing price, fixed for the
    asset's life; volume = turnover·shares (so volume / shares_outstanding is the turnover to rounding).
    """
    n_days, n_assets = exposure.shape
    persistent = _ar1(rng, (n_days, n_assets), _FUNDAMENTAL_PERSISTENCE)
    daily = rng.standard_normal((n_days, n_assets))
    listing_price = np.clip(
        np.exp(math.log(_PRICE_MEDIAN) + _PRICE_LOG_SD * rng.standard_normal(n_assets)), _PRICE_FLOOR, _PRICE_CEILING
    )
    log_turnover = (
        _TURNOVER_LEVEL
        + _TURNOVER_LOADING * exposure
        + _TURNOVER_PERSISTENT_SD * persistent
        + _TURNOVER_DAILY_SD * daily
    )
    del persistent, daily
    turnover = np.exp(log_turnover.ravel()[alive_flat])
    shares = (initial_cap / listing_price)[alive_flat % n_assets]
    return {
        VOLUME: pl.Series(VOLUME, turnover * shares),
        SHARES_OUTSTANDING: pl.Series(SHARES_OUTSTANDING, shares),
    }


def _apply_link(link: str, values: np.ndarray) -> np.ndarray:
    """A characteristic from its linear predictor (see ``_CHARACTERISTIC_MODEL``)."""
    if link == "identity":
        return values
    if link == "exp":
        return np.exp(values)
    if link == "one_plus_exp":
        return 1.0 + np.exp(values)
    if link == "logistic":
        return 0.5 * (1.0 + np.tanh(0.5 * values))
    if link == "floor_zero":
        return np.maximum(values, 0.0)
    raise ValueError(f"unknown characteristic link {link!r}")


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
