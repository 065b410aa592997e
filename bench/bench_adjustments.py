"""Effect of the covariance adjustments on out-of-sample bias statistics, on the synthetic market.

For each seed: generates the synthetic market (known truth, factor and specific volatility regimes), builds
one model (styles, factor returns, specific risk), then forecasts the factor covariance four ways — no
adjustment, eigenfactor only, volatility regime adjustment (VRA) only, both — and measures the bias
statistics (Barra USE4 Appendix A) over the whole test period of

* pure factor portfolios, random long-only portfolios (``--portfolios`` of 100 assets) and single assets;
* the eigenfactor portfolios of each forecast (what the eigenfactor adjustment targets; rank 1 = smallest).

It prints one line per seed and variant, then the averages over seeds: mean B, mean |B − 1| (closer to 0 is
better), the share of statistics inside 0.9–1.1 and the mean rolling absolute deviation (MRAD, 252-day
windows: what the regime adjustment targets). One sample path of a market is one draw: the bias statistic
of the market factor alone moves by several percent between seeds, hence several seeds.

Usage::

    python bench/bench_adjustments.py                       # 1000 assets x 1500 days, seeds 1-6
    python bench/bench_adjustments.py --seeds 1 2 --assets 3000 --days 2520
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections import defaultdict

import numpy as np
import polars as pl

from factor_engine.config import ModelConfig
from factor_engine.model import build_model, forecast_factor_covariance
from factor_engine.risk import validation
from factor_engine.synthetic import generate_market

VARIANTS = {
    "none": {"eigenfactor": False, "vra_half_life": False},
    "eigenfactor": {"vra_half_life": False},
    "regime (VRA)": {"eigenfactor": False},
    "both": {},
}
# short momentum so that factor returns start early in the sample
STYLES = {"momentum": {"trailing_days": 60, "half_life": 20, "lag": 5}}
CLASSES = ("factor portfolios", "random portfolios", "single assets", "eigenfactors 1-3")
METRICS = ("mean B", "|B-1|", "in 0.9-1.1", "MRAD")


def _metrics(frame: pl.DataFrame) -> tuple[float, float, float, float]:
    rows = frame.filter(pl.col("bias").is_not_null())
    bias = rows["bias"].to_numpy()
    return (
        float(bias.mean()),
        float(np.abs(bias - 1).mean()),
        float(((bias >= 0.9) & (bias <= 1.1)).mean()),
        float(np.nanmean(rows["mrad"].cast(pl.Float64).fill_null(np.nan).to_numpy())),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=int, default=1000)
    parser.add_argument("--days", type=int, default=1500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    parser.add_argument("--portfolios", type=int, default=50)
    args = parser.parse_args()

    totals: dict[tuple[str, str], list[tuple[float, ...]]] = defaultdict(list)
    header = f"{'seed':>4s} {'adjustment':13s} {'tested':18s} " + " ".join(f"{m:>10s}" for m in METRICS)
    print(header)
    print("-" * len(header))
    for seed in args.seeds:
        tic = time.perf_counter()
        market = generate_market(args.assets, args.days, seed=seed)
        model = build_model(market.panel, ModelConfig.from_mapping({"styles": STYLES}))
        returns = market.panel.select("date", "symbol", "asset_returns")
        for name, adjustments in VARIANTS.items():
            config = ModelConfig.from_mapping({"styles": STYLES, "adjustments": adjustments})
            covariance = forecast_factor_covariance(model.factor_returns, config)
            variant = dataclasses.replace(model, factor_covariance=covariance)
            eigen = validation.eigenfactor_portfolio_bias(variant)
            tested = {
                "factor portfolios": validation.factor_portfolio_bias(variant),
                "random portfolios": validation.random_portfolio_bias(variant, returns, n_portfolios=args.portfolios),
                "single assets": validation.asset_bias(variant, returns),
                "eigenfactors 1-3": eigen.filter(pl.col("eigenfactor") <= 3),
            }
            for label, frame in tested.items():
                values = _metrics(frame)
                totals[name, label].append(values)
                print(f"{seed:4d} {name:13s} {label:18s} " + " ".join(f"{v:10.3f}" for v in values))
        print(f"     seed {seed}: {args.assets} x {args.days}, {time.perf_counter() - tic:.1f} s", flush=True)

    print(f"\nAverage over seeds {args.seeds} ({args.assets} assets x {args.days} days)")
    print(f"{'tested':18s} {'adjustment':13s} " + " ".join(f"{m:>10s}" for m in METRICS))
    for label in CLASSES:
        for name in VARIANTS:
            mean = np.mean(np.array(totals[name, label]), axis=0)
            print(f"{label:18s} {name:13s} " + " ".join(f"{v:10.3f}" for v in mean))


if __name__ == "__main__":
    main()
