"""Write toraniko 1.1.1 golden outputs for small deterministic inputs to ``tests/results/``.

toraniko runs in its own venv (``bench/toraniko_env.py``) through ``bench/toraniko_runner.py``; this script
only makes inputs, prepares the regression inputs (``bench_core.prepare_regression_inputs``) and collects
the files. It does not import factor_engine, so the goldens do not depend on the engine or its synthetic
market. Re-running it rewrites the same numbers (the panel generator is seeded; toraniko is deterministic).

Usage::

    python bench/make_golden.py                 # writes tests/results/*
    python bench/make_golden.py --out DIR       # elsewhere, e.g. to diff against the committed goldens
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from bench_core import RUNNER, prepare_regression_inputs, run_toraniko, write_frames  # noqa: E402
from toraniko_env import ensure_toraniko_venv, toraniko_versions  # noqa: E402

DEFAULT_OUT = BENCH_DIR.parent / "tests" / "results"

SEED = 20240611
N_ASSETS = 60
N_DAYS = 300
START = "2020-01-02"
SECTORS = ("Energy", "Financials", "Health Care", "Industrials", "Technology")
LATE_SECTOR = "Utilities"
"""One asset, the only member of this sector, lists on day LATE_SECTOR_LISTING: before its momentum
exists the sector has no member in the regression (toraniko's lstsq then returns the minimum-norm
solution of a rank-deficient system)."""
LATE_SECTOR_LISTING = 20
QUANTUM_RETURN = 2.0**-20
QUANTUM_RATIO = 2.0**-16
"""Inputs are rounded to these binary quanta (market caps to whole thousands) so their float64 values
compress well in parquet; they are still exact float64 values, nothing else changes."""

PARAMS: dict[str, Any] = {
    "momentum": {"trailing_days": 60, "half_life": 20, "lag": 5, "winsor_factor": 0.01},
    "value": {"winsorize_features": None},
    "size": {"lower_decile": 0.2, "upper_decile": 0.8},
    "regression": {"winsor_factor": 0.05, "residualize_styles": True},
    "complete_residual_columns": True,
}


def small_panel() -> tuple[pl.DataFrame, dict[str, Any]]:
    """A seeded, unbalanced long panel (date, symbol, asset_returns, market_cap, sector, book_price,
    sales_price, cf_price) and a description of the irregularities planted in it."""
    rng = np.random.default_rng(SEED)
    n_assets, n_days = N_ASSETS, N_DAYS
    dates = np.busday_offset(np.datetime64(START, "D"), np.arange(n_days), roll="forward")
    symbols = np.array([f"G{i:03d}" for i in range(n_assets)])
    sectors = np.array([SECTORS[i % len(SECTORS)] for i in range(n_assets - 1)] + [LATE_SECTOR])

    listing = np.zeros(n_assets, dtype=np.int64)
    end = np.full(n_assets, n_days, dtype=np.int64)
    late = rng.choice(n_assets - 1, size=8, replace=False)
    listing[late] = rng.integers(10, 150, size=late.size)
    early = rng.choice(np.setdiff1d(np.arange(n_assets - 1), late), size=6, replace=False)
    end[early] = rng.integers(140, n_days - 10, size=early.size)
    listing[-1] = LATE_SECTOR_LISTING

    sector_index = {name: k for k, name in enumerate((*SECTORS, LATE_SECTOR))}
    sector_code = np.array([sector_index[s] for s in sectors])
    market = 0.0003 + 0.01 * rng.standard_normal(n_days)
    sector_moves = 0.005 * rng.standard_normal((n_days, len(sector_index)))
    vol = np.exp(0.3 * rng.standard_normal(n_assets))
    returns = market[:, None] + sector_moves[:, sector_code] + 0.02 * vol * rng.standard_normal((n_days, n_assets))
    returns = np.maximum(returns, -0.5)
    returns = np.round(returns / QUANTUM_RETURN) * QUANTUM_RETURN

    caps = np.empty((n_days, n_assets))
    caps[0] = np.exp(21.0 + 1.5 * rng.standard_normal(n_assets))
    for t in range(1, n_days):
        caps[t] = caps[t - 1] * (1.0 + returns[t])
    caps = np.round(caps / 1e3) * 1e3

    def ratio(level: float, scale: float) -> np.ndarray:
        drift = np.cumsum(0.02 * rng.standard_normal((n_days, n_assets)), axis=0)
        values = level * np.exp(scale * rng.standard_normal(n_assets)[None, :] + drift)
        return np.round(values / QUANTUM_RATIO) * QUANTUM_RATIO

    book, sales = ratio(0.5, 0.6), ratio(0.8, 0.7)
    cash_flow = np.round((0.07 + 0.05 * rng.standard_normal((n_days, n_assets))) / QUANTUM_RATIO) * QUANTUM_RATIO

    day = np.broadcast_to(np.arange(n_days)[:, None], (n_days, n_assets))
    alive = (day >= listing[None, :]) & (day < end[None, :])
    # gaps: ~0.5% of the alive rows after each asset's first 3 rows are missing altogether
    gap = alive & (day >= listing[None, :] + 3) & (rng.random((n_days, n_assets)) < 0.005)
    keep = alive & ~gap

    frame = pl.DataFrame(
        {
            "date": np.repeat(dates, n_assets)[keep.ravel()],
            "symbol": np.tile(symbols, n_days)[keep.ravel()],
            "asset_returns": returns.ravel()[keep.ravel()],
            "market_cap": caps.ravel()[keep.ravel()],
            "sector": np.tile(sectors, n_days)[keep.ravel()],
            "book_price": book.ravel()[keep.ravel()],
            "sales_price": sales.ravel()[keep.ravel()],
            "cf_price": cash_flow.ravel()[keep.ravel()],
        }
    ).with_columns(pl.col("date").cast(pl.Date))
    first_row = pl.col("date") == pl.col("date").min().over("symbol")
    frame = frame.with_columns(pl.when(first_row).then(None).otherwise(pl.col("asset_returns")).alias("asset_returns"))

    # planted missing values (row positions fixed by the seed)
    mid_null_return = (str(dates[150]), "G007")
    null_book = [(str(dates[d]), f"G{a:03d}") for d, a in ((40, 3), (120, 11), (250, 29))]
    nan_cash_flow = (str(dates[200]), "G017")

    def at(date_symbol: tuple[str, str]) -> pl.Expr:
        return (pl.col("date") == pl.lit(date_symbol[0]).str.to_date()) & (pl.col("symbol") == date_symbol[1])

    frame = frame.with_columns(
        pl.when(at(mid_null_return)).then(None).otherwise(pl.col("asset_returns")).alias("asset_returns"),
        pl.when(pl.any_horizontal(*(at(ds) for ds in null_book)))
        .then(None)
        .otherwise(pl.col("book_price"))
        .alias("book_price"),
        pl.when(at(nan_cash_flow)).then(float("nan")).otherwise(pl.col("cf_price")).alias("cf_price"),
    ).sort("date", "symbol")
    planted = {
        "missing_rows": int(gap.sum()),
        "late_listings": {str(symbols[i]): str(dates[listing[i]]) for i in sorted(late)},
        "early_delistings": {str(symbols[i]): str(dates[end[i] - 1]) for i in sorted(early)},
        "late_sector": {"sector": LATE_SECTOR, "symbol": str(symbols[-1]), "listing": str(dates[listing[-1]])},
        "null_asset_returns_mid_series": [list(mid_null_return)],
        "null_book_price": [list(ds) for ds in null_book],
        "nan_cf_price": [list(nan_cash_flow)],
    }
    return frame, planted


README = """# toraniko golden results

Reference outputs of **toraniko {toraniko}** (PyPI, run in its own venv: numpy {numpy}, polars {polars},
python {python}) for small deterministic inputs. factor_engine's `method="toraniko"` must match them to
1e-9. Produced by `python bench/make_golden.py` (which uses `bench/toraniko_env.py` and
`bench/toraniko_runner.py`; no toraniko code lives in this repository). Re-running it gives the same files.
`golden_meta.json` holds every parameter, the versions and the planted irregularities listed below.

## `toraniko_fixture.npz`: `toraniko.model._factor_returns` on toraniko's unit-test fixture

Inputs drawn exactly as toraniko's tests draw them (`np.random.seed(42); returns = randn(100, 1);
mkt_caps = abs(randn(100, 1)); sector_scores = randint(0, 2, size=(100, 10)); style_scores = randn(100, 5)`)
and stored as `returns`, `mkt_caps`, `sector_scores`, `style_scores`. Outputs, shapes (16, 1) and (100, 1):
`factor_returns_residualized`, `residuals_residualized` (`residualize_styles=True`) and
`factor_returns_raw`, `residuals_raw` (`residualize_styles=False`). Factor order: market, the 10 sectors
(the last one is minus the sum of the other nine), the 5 styles.

## Small panel: styles and factor returns

* `panel.parquet`: the input, {n_rows} rows, {n_assets} symbols x {n_days} business days from {start}
  (seed {seed}, generator `small_panel()` in `bench/make_golden.py`); columns date, symbol, asset_returns,
  market_cap, sector, book_price, sales_price, cf_price, sorted by (date, symbol). Unbalanced on purpose:
  {missing_rows} (date, symbol) rows are missing inside assets' lives (momentum windows count rows, not
  dates), 8 assets list late and 6 delist early, every asset's first return is null, one mid-series return
  is null ({mid_null}), book_price is null in 3 rows ({null_book}) and cf_price is NaN in one
  ({nan_cf}). Sector {late_sector} has one member, {late_symbol}, listed on {late_listing}: it has no
  regression rows until its momentum exists (nor on the dates where its row is missing), so on
  {n_deficient} regression dates (`golden_meta.json` lists them; first {first_deficient}, last {last_deficient})
  the sector column is all zero and toraniko's `lstsq` returns the minimum-norm solution of a rank-deficient
  system (there it gives Utilities = -market).
* `mom_scores.parquet`, `val_scores.parquet`, `sze_scores.parquet`: date, symbol, <x>_score from
  `factor_mom(returns, trailing_days={mom_trailing}, half_life={mom_half_life}, lag={mom_lag},
  winsor_factor={mom_winsor})`, `factor_val(value_df)` and `factor_sze(mkt_cap_df)` (defaults), one row per
  panel row, sorted by (date, symbol). Missing scores are kept as toraniko returns them: NaN and null are
  different there (see below).
* `regression_returns.parquet`, `regression_mkt_cap.parquet`, `regression_sector.parquet`,
  `regression_style.parquet`: the exact inputs of `estimate_factor_returns`, in toraniko's layout, made by
  `bench_core.prepare_regression_inputs` from the panel and the golden scores: the rows where the return,
  the market cap and all three scores are finite; sector = one Float64 0/1 column per label (sorted); style
  = mom_score, sze_score, val_score. Styles are same-date (no exposure lag).
* `factor_returns_residualized.parquet`, `residuals_residualized.parquet`: `estimate_factor_returns(...,
  winsor_factor=0.05, residualize_styles=True)`; `*_raw.parquet`: the same with `residualize_styles=False`.
  Factor returns: date, market, sorted sectors, sorted styles, sorted by date (toraniko itself returns
  dates in arbitrary `unique()` order, with date as the last column). Residuals: long date, symbol,
  residual (toraniko's wide frame melted, nulls dropped), sorted by (date, symbol).

## toraniko behaviour these files pin down

* `factor_mom`: `asset_returns.shift(lag)` and `rolling_map(window_size=trailing_days)` are per symbol
  over rows sorted by date: a missing row is skipped, not a gap. A window holding any null gives null. The
  per-date winsorization goes through numpy, which turns null into NaN; centering then yields NaN on dates
  where some symbol has a score, and null on dates where none has (mean of nothing) or only one has (std
  with ddof=1 of one value).
* `factor_val`: book_price and sales_price are logged, cf_price is not; each is centered and standardized
  per date over its non-null non-NaN values; `mean_horizontal` skips nulls but propagates NaN, so a null
  book_price still scores from the other two features while a NaN cf_price gives a NaN val_score.
* `factor_sze`: `-log(market_cap)`, standardized per date, then values strictly between the 20% and 80%
  per-date quantiles (polars `quantile`, default interpolation "nearest") are set to 0.0; a null score
  would become 0.0 (null comparison falls to `otherwise`).
* `estimate_factor_returns`: inner-joins the four inputs, winsorizes each date's returns with
  `np.nanpercentile` (linear interpolation) at 5%/95%, weights by sqrt(market cap), constrains the last
  sorted sector's return to minus the sum of the others (equal weights), and solves with
  `np.linalg.lstsq(..., rcond=None)`; residuals are of the winsorized returns. Its wide residual frame
  infers columns from the first 100 dates only (`pl.DataFrame(list_of_dicts)`), silently dropping symbols
  absent from them; `bench/toraniko_runner.py` makes that one constructor read all rows
  (`complete_residual_columns`), which changes no number.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default: %(default)s)")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    python = ensure_toraniko_venv()
    versions = toraniko_versions(python)
    if versions is None:
        raise RuntimeError(f"toraniko does not import with {python}")
    panel, planted = small_panel()

    with tempfile.TemporaryDirectory(prefix="make_golden_") as tmp:
        work = Path(tmp)
        panel_path = out / "panel.parquet"
        panel.write_parquet(panel_path)
        run_toraniko(python, "fixture", ["--out", str(out / "toraniko_fixture.npz")])

        run_toraniko(
            python, "styles", ["--panel", str(panel_path), "--out", str(work / "styles")], _params_file(work, PARAMS)
        )
        scores = {f"{s}_score": pl.read_parquet(work / "styles" / f"{s}_scores.parquet") for s in ("mom", "val", "sze")}
        for name, frame in scores.items():
            frame.write_parquet(out / f"{name.removesuffix('_score')}_scores.parquet")

        inputs = prepare_regression_inputs(panel, scores)
        late_members = inputs["sector"].group_by("date").agg(pl.col(LATE_SECTOR).sum()).sort("date")
        deficient = late_members.filter(pl.col(LATE_SECTOR) == 0).get_column("date")
        planted["late_sector"]["rank_deficient_regression_dates"] = {
            "count": deficient.len(),
            "first": str(deficient.min()),
            "last": str(deficient.max()),
            "dates": [str(d) for d in deficient],
        }
        write_frames(inputs, work / "inputs")
        write_frames({f"regression_{name}": frame for name, frame in inputs.items()}, out)

        for residualize, suffix in ((True, "residualized"), (False, "raw")):
            params = {**PARAMS, "regression": {**PARAMS["regression"], "residualize_styles": residualize}}
            target = work / suffix
            run_toraniko(
                python,
                "regression",
                ["--inputs", str(work / "inputs"), "--out", str(target)],
                _params_file(work, params),
            )
            factor_returns = pl.read_parquet(target / "factor_returns.parquet")
            factor_returns.select("date", *(c for c in factor_returns.columns if c != "date")).write_parquet(
                out / f"factor_returns_{suffix}.parquet"
            )
            shutil.copyfile(target / "residuals.parquet", out / f"residuals_{suffix}.parquet")

    meta = {
        "toraniko_versions": versions,
        "generator": {"seed": SEED, "n_assets": N_ASSETS, "n_days": N_DAYS, "start": START},
        "params": {k: v for k, v in PARAMS.items() if k != "regression"},
        "regression": {"winsor_factor": PARAMS["regression"]["winsor_factor"], "residualize_styles": [True, False]},
        "sectors": [c for c in inputs["sector"].columns if c not in ("date", "symbol")],
        "styles": [c for c in inputs["style"].columns if c not in ("date", "symbol")],
        "rows": {"panel": panel.height, "regression": inputs["returns"].height},
        "planted": planted,
    }
    (out / "golden_meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    momentum = PARAMS["momentum"]
    (out / "README.md").write_text(
        README.format(
            **versions,
            n_rows=panel.height,
            n_assets=N_ASSETS,
            n_days=N_DAYS,
            start=START,
            seed=SEED,
            missing_rows=planted["missing_rows"],
            mid_null=", ".join(planted["null_asset_returns_mid_series"][0]),
            null_book="; ".join(", ".join(ds) for ds in planted["null_book_price"]),
            nan_cf=", ".join(planted["nan_cf_price"][0]),
            late_sector=LATE_SECTOR,
            late_symbol=planted["late_sector"]["symbol"],
            late_listing=planted["late_sector"]["listing"],
            n_deficient=planted["late_sector"]["rank_deficient_regression_dates"]["count"],
            first_deficient=planted["late_sector"]["rank_deficient_regression_dates"]["first"],
            last_deficient=planted["late_sector"]["rank_deficient_regression_dates"]["last"],
            mom_trailing=momentum["trailing_days"],
            mom_half_life=momentum["half_life"],
            mom_lag=momentum["lag"],
            mom_winsor=momentum["winsor_factor"],
        )
    )
    total = sum(path.stat().st_size for path in out.iterdir() if path.is_file())
    print(f"wrote {len(list(out.iterdir()))} files, {total / 1e6:.2f} MB, to {out} (toraniko {versions['toraniko']})")
    print(f"runner: {RUNNER}")
    return 0


def _params_file(directory: Path, params: dict[str, Any]) -> Path:
    path = directory / "params.json"
    path.write_text(json.dumps(params))
    return path


if __name__ == "__main__":
    sys.exit(main())
