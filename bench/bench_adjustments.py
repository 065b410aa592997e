"""Effect of the covariance adjustments on out-of-sample bias statistics, on the synthetic market.

Builds one model (styles, factor returns, specific risk), then forecasts the factor covariance four ways —
no adjustment, eigenfactor only, volatility regime adjustment only, both — and prints, for each, the bias
statistics (Barra USE4 Appendix A) of the pure factor portfolios, of random long-only portfolios and of
single assets: mean B, its range, mean |B − 1| and the mean rolling absolute deviation (MRAD, 252-day
windows), which is what the regime adjustment targets.

Usage::

    python bench/bench_adjustments.py                      # 1000 assets x 1500 days, seed 4
    python bench/bench_adjustments.py --assets 3000 --days 2520
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=int, default=1000)
    parser.add_argument("--days", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--portfolios", type=int, default=50)
    args = parser.parse_args()

    market = generate_market(args.assets, args.days, seed=args.seed)
    start = time.perf_counter()
    model = build_model(market.panel, ModelConfig.from_mapping({"styles": STYLES}))
    seconds = time.perf_counter() - start
    print(f"synthetic market {args.assets} x {args.days} (seed {args.seed}); model built in {seconds:.1f} s")
    returns = market.panel.select("date", "symbol", "asset_returns")
    header = f"{'adjustment':14s} {'tested':18s} {'mean B':>7s} {'min B':>7s} {'max B':>7s} {'|B-1|':>7s} {'MRAD':>7s}"
    print(header)
    print("-" * len(header))
    for name, adjustments in VARIANTS.items():
        config = ModelConfig.from_mapping({"styles": STYLES, "adjustments": adjustments})
        variant = dataclasses.replace(model, factor_covariance=forecast_factor_covariance(model.factor_returns, config))
        tested = {
            "factor portfolios": validation.factor_portfolio_bias(variant),
            "random portfolios": validation.random_portfolio_bias(variant, returns, n_portfolios=args.portfolios),
            "single assets": validation.asset_bias(variant, returns),
        }
        for label, frame in tested.items():
            bias = frame["bias"].drop_nulls().to_numpy()
            mrad = float(np.nanmean(frame["mrad"].to_numpy()))
            print(
                f"{name:14s} {label:18s} {bias.mean():7.3f} {bias.min():7.3f} {bias.max():7.3f} "
                f"{np.abs(bias - 1).mean():7.3f} {mrad:7.3f}"
            )


if __name__ == "__main__":
    main()
