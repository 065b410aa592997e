"""Benchmark of ``factor_engine.update``: a model extended by new dates against a build on the whole panel.

Generates the synthetic market (``generate_market``, seed 0), builds a model on all but its last ``--new``
dates and saves it, then times :func:`factor_engine.update.update_model` adding them (reading the model
folder, the panel rows it needs, the new dates and appending them to the folder; the panel is in memory) and,
in the same run, a full :func:`factor_engine.model.build_model` on the whole panel (save excluded). It prints
both times and the largest relative difference of the updated model from the full build on the new dates:
factor returns, exposures, specific risk and factor covariance (each relative to its largest value).

Targets (issue 13): difference ≤ 1e-8 (checked at 1,500 × 1,500), one new day at 3,000 × 2,520 in ≤ 1 s.

Usage::

    python bench/bench_update.py --assets 1500 --days 1500       # the equality check
    python bench/bench_update.py --assets 3000 --days 2520       # the one-day time against the full build
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from factor_engine.model import RiskModel, build_model, load_model
from factor_engine.synthetic import generate_market
from factor_engine.update import update_model

TARGET_SECONDS = 1.0
TARGET_DIFFERENCE = 1e-8


def _difference(ours: pl.DataFrame, theirs: pl.DataFrame, columns: list[str]) -> float:
    keys = ["date", "symbol"] if "symbol" in theirs.columns else ["date"]
    ours, theirs = ours.sort(keys), theirs.sort(keys)
    if not ours.select(keys).equals(theirs.select(keys)):
        return float("inf")
    x = ours.select(columns).to_numpy().astype(np.float64)
    y = theirs.select(columns).to_numpy().astype(np.float64)
    if not np.array_equal(np.isnan(x), np.isnan(y)):
        return float("inf")
    return float(np.nanmax(np.abs(x - y)) / np.nanmax(np.abs(y)))


def differences(updated: RiskModel, full: RiskModel, since: object) -> dict[str, float]:
    """Largest relative difference per quantity on the dates after ``since``."""
    later = pl.col("date") > since
    factors = list(full.factors)
    result = {
        "factor returns": _difference(updated.factor_returns.filter(later), full.factor_returns.filter(later), factors),
        "exposures": _difference(updated.exposures.filter(later), full.exposures.filter(later), factors),
    }
    if updated.specific_risk is not None and full.specific_risk is not None:
        result["specific risk"] = _difference(
            updated.specific_risk.filter(later), full.specific_risk.filter(later), ["specific_vol"]
        )
    ours, theirs = updated.factor_covariance, full.factor_covariance
    if ours is not None and theirs is not None:
        rows, mine = (theirs.dates > since).to_numpy(), (ours.dates > since).to_numpy()
        if rows.sum() != mine.sum():
            result["factor covariance"] = float("inf")
        else:
            scale = np.nanmax(np.abs(theirs.values[rows]))
            result["factor covariance"] = float(np.nanmax(np.abs(ours.values[mine] - theirs.values[rows])) / scale)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--assets", type=int, default=3000)
    parser.add_argument("--days", type=int, default=2520)
    parser.add_argument("--new", type=int, default=1, help="dates added by the update")
    parser.add_argument("--repeat", type=int, default=3, help="updates timed (the best is reported)")
    args = parser.parse_args()

    panel = generate_market(args.assets, args.days, seed=0).panel
    dates = panel.get_column("date").unique().sort()
    cut = dates[-args.new - 1]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        build_model(panel.filter(pl.col("date") <= cut)).save(folder)
        seconds = []
        for attempt in range(args.repeat):
            out = Path(tmp) / f"updated-{attempt}"
            start = time.perf_counter()
            result = update_model(folder, panel, out=out)
            seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        full = build_model(panel)
        build_seconds = time.perf_counter() - start
        updated = load_model(Path(tmp) / "updated-0")
        gaps = differences(updated, full, cut)

    print(f"panel: {args.assets} assets x {args.days} dates; update adds {args.new} date(s)")
    print(f"styles recomputed from {result.history_start} ({dates.filter(dates >= result.history_start).len()} dates)")
    print(f"update: best {min(seconds):.2f} s of {', '.join(f'{s:.2f}' for s in seconds)} (target {TARGET_SECONDS} s)")
    print(f"full build in the same run: {build_seconds:.2f} s ({build_seconds / min(seconds):.0f} x the update)")
    for name, value in gaps.items():
        print(f"relative difference from the full build, {name}: {value:.2e} (target {TARGET_DIFFERENCE:.0e})")


if __name__ == "__main__":
    main()
