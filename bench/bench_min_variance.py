"""Out-of-sample minimum-variance test: the risk model against the sample covariance and Ledoit–Wolf.

Generates the synthetic market (known truth, volatility regimes), builds the risk model with the default
configuration, then every ``--every`` trading days builds a fully invested long-only minimum-variance
portfolio from each covariance forecast — the model's ``X F Xᵀ + D``, the sample covariance of the last
``--window`` days of asset returns, and its Ledoit–Wolf shrinkage — holds it to the next rebalance and
prints the realized volatility of each (annualized; lower is better), the mean forecast volatility and the
time taken. All three use the same rebalance dates, the same assets-with-history rule and the same solver
(:func:`factor_engine.risk.validation.long_only_min_variance`, relative optimality gap ``--rtol``).

With ``--acceptance`` it checks issue 11's "Risk" criterion instead, averaged over ``--seeds`` regime markets
with a beta style (``generate_market(..., styles=("momentum", "value", "size", "beta"), beta_dispersion=0.3)``):
the default model (``build_model(panel)``: USE4's beta, resvol and nlsize join the default styles) must give
its long-only minimum-variance portfolio (rebalanced every ``--every`` days, held in between; see
:func:`factor_engine.risk.validation.min_variance_bias`) a bias statistic within 0.95–1.05 and a rolling
63-day MRAD at least 15 % below the naive baseline's on its own minimum-variance portfolio over the same test
days; factor, random-portfolio and single-asset mean bias statistics stay within 0.9–1.1. The baseline is a
market + sector model built here (:func:`market_sector_baseline`): the market return is the cap-weighted
(previous close) mean return, each sector's return the cap-weighted mean of its assets' returns minus the
market's, the factor covariance the EWMA (half-life 42, no Newey-West, normalized weights, forecasts from 63
dates) of those returns, every asset loads 1 on the market and 1 on its sector, and its specific variance is
the EWMA (half-life 42, from 21 observations) of its squared residual ``r − market − sector``.

Usage::

    python bench/bench_min_variance.py                          # 3000 assets x 2520 days, seed 11
    python bench/bench_min_variance.py --assets 1000 --days 1000 --window 252 --window 504
    python bench/bench_min_variance.py --acceptance --assets 1000 --days 1500 --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import polars as pl

from factor_engine.config import ModelConfig
from factor_engine.model import RiskModel, build_model
from factor_engine.risk import CovarianceConfig, factor_covariance, validation
from factor_engine.risk.specific import SpecificRiskConfig, specific_risk
from factor_engine.synthetic import generate_market

TRADING_DAYS = 252


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=int, default=3000)
    parser.add_argument("--days", type=int, default=2520)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--every", type=int, default=21, help="trading days between rebalances")
    parser.add_argument("--window", type=int, action="append", help="sample covariance window(s) in days (default 252)")
    parser.add_argument("--rtol", type=float, default=1e-6)
    parser.add_argument("--acceptance", action="store_true", help="issue 11's Risk criterion over --seeds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--portfolios", type=int, default=50, help="random portfolios (--acceptance)")
    args = parser.parse_args()
    if args.acceptance:
        acceptance(args)
        return
    windows = args.window or [TRADING_DAYS]

    start = time.perf_counter()
    market = generate_market(args.assets, args.days, seed=args.seed)
    model = build_model(market.panel, ModelConfig())
    returns = market.panel.select("date", "symbol", "asset_returns")
    print(
        f"synthetic market {args.assets:,} assets x {args.days:,} days (seed {args.seed}); "
        f"model built in {time.perf_counter() - start:.1f} s"
    )
    first = model.factor_covariance.dates[0] if model.factor_covariance is not None else None
    print(f"{'covariance':28s} {'realized vol':>12s} {'forecast vol':>12s} {'days':>6s} {'rebal':>6s} {'time':>7s}")
    for window in windows:
        for source in ("model", "sample", "ledoit_wolf"):
            if source == "model" and window != windows[0]:
                continue
            tic = time.perf_counter()
            frame = validation.min_variance_realized_vol(
                returns,
                model=model,
                sources=(source,),
                window=window,
                rebalance_every=args.every,
                start=_common_start(model, market.panel, max(windows), first),
                rtol=args.rtol,
            )
            row = frame.row(0, named=True)
            label = "risk model" if source == "model" else f"{source} ({window} d)"
            print(
                f"{label:28s} {row['realized_vol'] * math.sqrt(TRADING_DAYS):12.2%} "
                f"{row['forecast_vol'] * math.sqrt(TRADING_DAYS):12.2%} {row['n_days']:6d} "
                f"{row['n_rebalances']:6d} {time.perf_counter() - tic:6.1f}s",
                flush=True,
            )


def _common_start(model, panel, window, first):  # type: ignore[no-untyped-def]
    """The first date at which every source has a forecast: the model's first covariance date and the
    ``window``-th panel date, whichever is later (so all sources rebalance on the same dates)."""
    dates = panel["date"].unique().sort()
    window_start = dates[min(window - 1, dates.len() - 1)]
    return max(window_start, first) if first is not None else window_start


BASELINE_HALF_LIFE = 42
STAT_KEYS = ("minvar bias", "minvar MRAD63", "minvar vol", "factor B", "random B", "asset B")


def market_sector_baseline(panel: pl.DataFrame) -> RiskModel:
    """The naive market + sector EWMA(42) model of the panel (see the module docstring), as a RiskModel."""
    frame = (
        panel.sort("date", "symbol")
        .with_columns(pl.col("market_cap").shift(1).over("symbol").alias("weight"))
        .filter(pl.col("asset_returns").is_not_null() & pl.col("weight").is_not_null())
    )
    market = frame.group_by("date").agg(
        ((pl.col("asset_returns") * pl.col("weight")).sum() / pl.col("weight").sum()).alias("market")
    )
    sector = (
        frame.group_by("date", "sector")
        .agg(((pl.col("asset_returns") * pl.col("weight")).sum() / pl.col("weight").sum()).alias("sector_return"))
        .join(market, on="date")
        .with_columns((pl.col("sector_return") - pl.col("market")).alias("sector_return"))
    )
    sectors = sorted(panel["sector"].unique().to_list())
    factor_returns = (
        sector.pivot(on="sector", index="date", values="sector_return")
        .join(market, on="date")
        .select("date", "market", *sectors)
        .sort("date")
    )
    ewma = CovarianceConfig(
        vol_half_life=BASELINE_HALF_LIFE, corr_half_life=BASELINE_HALF_LIFE, vol_nw_lags=0, corr_nw_lags=0
    )
    covariance = factor_covariance(factor_returns, ewma)
    residuals = frame.join(sector, on=["date", "sector"]).select(
        "date", "symbol", (pl.col("asset_returns") - pl.col("market") - pl.col("sector_return")).alias("residual")
    )
    specific_config = SpecificRiskConfig(
        half_life=BASELINE_HALF_LIFE, nw_lags=0, min_periods=21, shrinkage=0.0, structural=False, vra_half_life=None
    )
    specific = specific_risk(residuals, panel.select("date", "symbol", "market_cap"), None, specific_config)
    exposures = panel.select(
        "date",
        "symbol",
        pl.lit(1.0).alias("market"),
        *[(pl.col("sector") == s).cast(pl.Float64).alias(s) for s in sectors],
    )
    return RiskModel(
        factor_returns=factor_returns,
        exposures=exposures,
        residuals=residuals,
        diagnostics=pl.DataFrame(),
        factors=("market", *sectors),
        sectors=tuple(sectors),
        styles=(),
        factor_covariance=covariance,
        specific_risk=specific,
    )


def _mean_bias(frame: pl.DataFrame) -> float:
    return float(frame["bias"].drop_nulls().mean())  # type: ignore[arg-type]


def acceptance(args: argparse.Namespace) -> None:
    """Issue 11's Risk criterion: the default model against the market + sector baseline, over seeds."""
    rows: dict[str, list[dict[str, float]]] = {"model": [], "baseline": []}
    print(f"{'seed':>4s} {'model':9s} " + " ".join(f"{k:>13s}" for k in STAT_KEYS))
    for seed in args.seeds:
        tic = time.perf_counter()
        market = generate_market(
            args.assets, args.days, seed=seed, styles=("momentum", "value", "size", "beta"), beta_dispersion=0.3
        )
        returns = market.panel.select("date", "symbol", "asset_returns")
        models = {"model": build_model(market.panel), "baseline": market_sector_baseline(market.panel)}
        # the same test days for both: from the later of their first complete forecasts
        start = max(_first_forecast(m) for m in models.values())
        for name, model in models.items():
            stats, vol = validation.min_variance_bias(returns, model, rebalance_every=args.every, start=start)
            row = {
                "minvar bias": stats.bias,
                "minvar MRAD63": stats.mrad,
                "minvar vol": vol * math.sqrt(TRADING_DAYS),
                "factor B": _mean_bias(validation.factor_portfolio_bias(model, start=start)),
                "random B": _mean_bias(
                    validation.random_portfolio_bias(model, returns, n_portfolios=args.portfolios, start=start)
                ),
                "asset B": _mean_bias(validation.asset_bias(model, returns, start=start)),
            }
            rows[name].append(row)
            print(f"{seed:4d} {name:9s} " + " ".join(f"{row[k]:13.3f}" for k in STAT_KEYS), flush=True)
        print(f"     seed {seed}: {args.assets} x {args.days}, test from {start}, {time.perf_counter() - tic:.0f} s")
    mean = {name: {k: float(np.mean([r[k] for r in rs])) for k in STAT_KEYS} for name, rs in rows.items()}
    print(f"\nAverage over seeds {args.seeds} ({args.assets} assets x {args.days} days)")
    for name in rows:
        print(f"     {name:9s} " + " ".join(f"{mean[name][k]:13.3f}" for k in STAT_KEYS))
    model, baseline = mean["model"], mean["baseline"]
    checks = {
        "min-var bias within 0.95-1.05": 0.95 <= model["minvar bias"] <= 1.05,
        "min-var MRAD63 >= 15 % below the baseline's": model["minvar MRAD63"] <= 0.85 * baseline["minvar MRAD63"],
        "factor, random and asset mean B within 0.9-1.1": all(
            0.9 <= model[k] <= 1.1 for k in ("factor B", "random B", "asset B")
        ),
    }
    ratio = model["minvar MRAD63"] / baseline["minvar MRAD63"]
    print(f"MRAD63 model / baseline = {ratio:.3f} (target <= 0.85)")
    for label, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {label}")


def _first_forecast(model: RiskModel):  # type: ignore[no-untyped-def]
    """The first date on which the model has a factor covariance forecast with every factor."""
    covariance = model.factor_covariance
    assert covariance is not None
    complete = np.isfinite(covariance.values).all(axis=(1, 2))
    return covariance.dates.filter(pl.Series(complete))[0]


if __name__ == "__main__":
    main()
