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

import polars as pl

from factor_engine.model import build_model, load_model
from factor_engine.synthetic import generate_market
from factor_engine.update import differences, update_model

TARGET_SECONDS = 1.0
TARGET_DIFFERENCE = 1e-8


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
