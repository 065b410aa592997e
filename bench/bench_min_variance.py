"""Out-of-sample minimum-variance test: the risk model against the sample covariance and Ledoit–Wolf.

Generates the synthetic market (known truth, volatility regimes), builds the risk model with the default
configuration, then every ``--every`` trading days builds a fully invested long-only minimum-variance
portfolio from each covariance forecast — the model's ``X F Xᵀ + D``, the sample covariance of the last
``--window`` days of asset returns, and its Ledoit–Wolf shrinkage — holds it to the next rebalance and
prints the realized volatility of each (annualized; lower is better), the mean forecast volatility and the
time taken. All three use the same rebalance dates, the same assets-with-history rule and the same solver
(:func:`factor_engine.risk.validation.long_only_min_variance`, relative optimality gap ``--rtol``).

Usage::

    python bench/bench_min_variance.py                          # 3000 assets x 2520 days, seed 11
    python bench/bench_min_variance.py --assets 1000 --days 1000 --window 252 --window 504
"""

from __future__ import annotations

import argparse
import math
import time

from factor_engine.config import ModelConfig
from factor_engine.model import build_model
from factor_engine.risk import validation
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
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
