"""Benchmark of appending dates to a saved model folder against saving the whole model.

Builds the model of the synthetic market (``generate_market(assets, days, seed=0)``, default configuration),
saves it without its last ``--appends`` dates, then appends those dates one at a time with
:func:`factor_engine.model.append_model_dates` (new parts of exposures, residuals and specific risk, the small
tables rewritten, the manifest replaced) and reports, in milliseconds: the full save of the whole model, each
append, the same appends with the large tables' parts only (the small tables left as they are, through
:func:`factor_engine.model_folder.append_folder`), the small tables' share, and ``load_model`` of the
single-part and the appended folders.

Target at 3,000 assets × 2,520 days (issue 13): one appended date ≤ 100 ms without the small tables, far under
the 1 s of the whole update.

Usage::

    python bench/bench_model_append.py                          # 3000 assets x 2520 days (~1 min)
    python bench/bench_model_append.py --assets 300 --days 400  # a quick run
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from factor_engine.model import ModelExtension, append_model_dates, build_model, load_model
from factor_engine.model_folder import append_folder
from factor_engine.synthetic import generate_market

TARGET_MS = 100.0
_TABLES = ("factor_returns", "exposures", "residuals", "diagnostics", "factor_covariance", "specific_risk")


def _milliseconds(started: float) -> float:
    return (time.perf_counter() - started) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", type=int, default=3000)
    parser.add_argument("--days", type=int, default=2520)
    parser.add_argument("--appends", type=int, default=5, help="dates appended one at a time")
    args = parser.parse_args()

    started = time.perf_counter()
    model = build_model(generate_market(args.assets, args.days, seed=0).panel)
    print(
        f"build {args.assets} x {args.days}: {time.perf_counter() - started:.1f} s; exposures {model.exposures.shape}"
    )
    dates = model.exposures["date"].unique().sort().to_list()
    cut = dates[-args.appends - 1]
    history = model.between(end=cut)

    with tempfile.TemporaryDirectory(prefix="bench_append_") as work:
        root = Path(work)
        started = time.perf_counter()
        model.save(root / "full")
        save_ms = _milliseconds(started)
        print(f"full save (one part per table): {save_ms:,.0f} ms")
        started = time.perf_counter()
        load_model(root / "full")
        print(f"load_model, one part per table: {_milliseconds(started):,.0f} ms")

        history.save(root / "appended")
        history.save(root / "large only")
        whole, large_only = [], []
        previous = cut
        for day in dates[-args.appends :]:
            extension = ModelExtension.after(model.between(end=day), previous)
            started = time.perf_counter()
            append_model_dates(root / "appended", extension)
            whole.append(_milliseconds(started))
            started = time.perf_counter()
            append_folder(
                root / "large only",
                {},
                appended={
                    "exposures": extension.exposures,
                    "residuals": extension.residuals,
                    "specific_risk": extension.specific_risk,  # type: ignore[dict-item]
                },
                replaced={},
                legacy_tables=_TABLES,
            )
            large_only.append(_milliseconds(started))
            previous = day
        started = time.perf_counter()
        loaded = load_model(root / "appended")
        load_ms = _milliseconds(started)
        assert loaded.exposures.equals(model.exposures) and loaded.factor_returns.equals(model.factor_returns)

    print(f"append one date, whole (large parts + small tables + manifest): {', '.join(f'{t:.0f}' for t in whole)} ms")
    print(f"append one date, large parts + manifest only: {', '.join(f'{t:.0f}' for t in large_only)} ms")
    median_whole, median_large = statistics.median(whole), statistics.median(large_only)
    print(
        f"median: whole {median_whole:.0f} ms, large parts only {median_large:.0f} ms (target ≤ {TARGET_MS:.0f} ms), "
        f"small tables ≈ {median_whole - median_large:.0f} ms; full save {save_ms:,.0f} ms "
        f"({save_ms / median_whole:.0f}× the whole append)"
    )
    print(f"load_model of the appended folder ({args.appends + 1} parts per large table): {load_ms:,.0f} ms")


if __name__ == "__main__":
    main()
