"""Benchmark and parity check of factor_engine's styles + factor returns against toraniko 1.1.1.

For each size ``ASSETSxDAYS`` the synthetic market (``factor_engine.synthetic.generate_market``, seed 0) is
written to parquet; toraniko runs its stages in its own venv (``bench/toraniko_runner.py``), factor_engine
runs the same stages in this process with ``method="toraniko"`` and the same parameters. Both regressions
consume identical inputs, prepared here from toraniko's style scores (or ours with ``--skip-toraniko``):
rows whose return, market cap or any style score is null/NaN/inf are dropped first.

The table shows seconds per stage, speed ratios, and the largest absolute difference per output joined on
(date, symbol) or date; NaN and null count as the same "missing", and rows present in only one engine's
output are reported. Then factor_engine alone runs in a fresh process to measure its total seconds and
peak resident memory. Exits 1 if any difference exceeds the tolerance (1e-9) or rows/missingness differ.

Usage::

    python bench/bench_core.py                              # sizes 1000x1000,3000x2520
    python bench/bench_core.py --sizes 500x600 --skip-toraniko
    python bench/bench_core.py --repeat 3                   # our stages: best of 3 (toraniko runs once)
    python bench/bench_core.py --keep DIR                   # keep the parquet files for inspection
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

BENCH_DIR = Path(__file__).resolve().parent
RUNNER = BENCH_DIR / "toraniko_runner.py"
TOLERANCE = 1e-9
SEED = 0
DEFAULT_SIZES = "1000x1000,3000x2520"

KEY = ["date", "symbol"]
VALUE_FEATURES = ["book_price", "sales_price", "cf_price"]
STYLE_SCORES = {"mom": "mom_score", "val": "val_score", "sze": "sze_score"}

PARAMS: dict[str, Any] = {
    "momentum": {"trailing_days": 252, "half_life": 126, "lag": 20, "winsor_factor": 0.01},
    "value": {"winsorize_features": None},
    "size": {"lower_decile": 0.2, "upper_decile": 0.8},
    "regression": {"winsor_factor": 0.05, "residualize_styles": True},
    "complete_residual_columns": True,
}
"""Parameters given to both engines (same keys as toraniko_runner.py's PARAMS.json)."""

STAGES = ("mom", "val", "sze", "regression")
STAGE_LABELS = {"mom": "momentum", "val": "value", "sze": "size", "regression": "factor returns"}


# --------------------------------------------------------------------------------------------------------------
# inputs shared by both engines


def prepare_regression_inputs(panel: pl.DataFrame, scores: Mapping[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """Build the four estimate_factor_returns inputs (toraniko's layout) on one common, clean row set.

    Parameters
    ----------
    panel: long frame with date, symbol, asset_returns (daily, fraction), market_cap, sector (label).
    scores: style name -> frame date, symbol, <name> (e.g. "mom_score"); NaN and null both mean missing.

    Returns
    -------
    dict with "returns" (date, symbol, asset_returns), "mkt_cap" (date, symbol, market_cap), "sector"
    (date, symbol, one Float64 0/1 column per sector label present, sorted) and "style" (date, symbol, one
    column per style, sorted), all with the same rows sorted by (date, symbol): the rows where the return,
    the market cap and every style score are finite and the market cap is positive.
    """
    rows = panel.select(*KEY, "asset_returns", "market_cap", "sector")
    style_names = sorted(scores)
    for name in style_names:
        rows = rows.join(scores[name].select(*KEY, name), on=KEY, how="inner")
    usable = pl.all_horizontal(
        *(pl.col(column).is_not_null() & pl.col(column).is_finite() for column in ["asset_returns", *style_names]),
        pl.col("market_cap").is_not_null() & pl.col("market_cap").is_finite() & (pl.col("market_cap") > 0),
        pl.col("sector").is_not_null(),
    )
    rows = rows.filter(usable).sort(KEY)
    sectors = rows.get_column("sector").unique().sort().to_list()
    return {
        "returns": rows.select(*KEY, "asset_returns"),
        "mkt_cap": rows.select(*KEY, "market_cap"),
        "sector": rows.select(*KEY, *((pl.col("sector") == s).cast(pl.Float64).alias(s) for s in sectors)),
        "style": rows.select(*KEY, *style_names),
    }


def write_frames(frames: Mapping[str, pl.DataFrame], directory: Path) -> None:
    """Write each frame to ``directory/<name>.parquet``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        frame.write_parquet(directory / f"{name}.parquet")


def read_frames(directory: Path, names: tuple[str, ...]) -> dict[str, pl.DataFrame]:
    return {name: pl.read_parquet(directory / f"{name}.parquet") for name in names}


# --------------------------------------------------------------------------------------------------------------
# the two engines


def run_toraniko(python: Path, mode: str, args: list[str], params_path: Path | None = None) -> None:
    """Run one toraniko_runner.py mode in the toraniko venv; raise with its stderr if it fails."""
    command = [str(python), str(RUNNER), mode, *args]
    if params_path is not None:
        command += ["--params", str(params_path)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"toraniko runner failed ({' '.join(command)}):\n{done.stderr}")


def _collected(frame: Any) -> pl.DataFrame:
    return frame.collect() if isinstance(frame, pl.LazyFrame) else frame


def ours_styles(panel: pl.DataFrame) -> tuple[dict[str, pl.DataFrame], dict[str, float]]:
    """factor_engine's three style scores on the panel, and seconds per stage."""
    from factor_engine import styles

    returns_df = panel.select(*KEY, "asset_returns")
    value_df = panel.select(*KEY, *VALUE_FEATURES)
    mkt_cap_df = panel.select(*KEY, "market_cap")
    scores: dict[str, pl.DataFrame] = {}
    seconds: dict[str, float] = {}
    for stage, run in (
        ("mom", lambda: styles.momentum(returns_df, **PARAMS["momentum"])),
        ("val", lambda: styles.value(value_df, **PARAMS["value"])),
        ("sze", lambda: styles.size(mkt_cap_df, **PARAMS["size"])),
    ):
        start = time.perf_counter()
        scores[STYLE_SCORES[stage]] = _collected(run())
        seconds[stage] = time.perf_counter() - start
    return scores, seconds


def check_toraniko_preset(panel: pl.DataFrame, scores: Mapping[str, pl.DataFrame]) -> None:
    """A model configured with ``[styles] preset = "toraniko"`` computes exactly the styles compared here: the
    preset resolves to momentum, value and size on this panel (no USE4 style joins it), and
    ``compute_styles`` with those names gives the same scores as the direct calls (exit 1 otherwise)."""
    from factor_engine.config import ModelConfig
    from factor_engine.styles import compute_styles

    params = {name: PARAMS[name] for name in ("momentum", "value", "size")}
    config = ModelConfig.from_mapping({"styles": {"preset": "toraniko", **params}})
    names, _ = config.styles.resolve(panel.columns)
    combined = compute_styles(panel, names, params=config.styles.effective_params(names))
    same = names == ("momentum", "value", "size") and all(
        combined.select(*KEY, column).sort(KEY).equals(scores[column].select(*KEY, column).sort(KEY))
        for column in STYLE_SCORES.values()
    )
    print(f'[styles] preset = "toraniko": {", ".join(names)}; identical to the direct calls: {same}', flush=True)
    if not same:
        raise SystemExit(1)


def ours_regression(inputs: Mapping[str, pl.DataFrame]) -> tuple[pl.DataFrame, pl.DataFrame, float]:
    """factor_engine's factor returns and long residuals (method="toraniko"), and seconds."""
    from factor_engine import estimate_factor_returns

    start = time.perf_counter()
    result = estimate_factor_returns(
        inputs["returns"],
        inputs["mkt_cap"],
        inputs["sector"],
        inputs["style"],
        method="toraniko",
        **{key: PARAMS["regression"][key] for key in ("winsor_factor", "residualize_styles")},
    )
    factor_returns, residuals = _collected(result.factor_returns), _collected(result.residuals)
    return factor_returns, residuals, time.perf_counter() - start


# --------------------------------------------------------------------------------------------------------------
# comparison


@dataclass(frozen=True)
class Comparison:
    """How one output of factor_engine differs from toraniko's.

    rows_*: row counts; only_*: keys present in one output only; missing_mismatch: cells missing (null or
    NaN) in one output but not the other; max_abs_diff: over cells present in both (NaN if none);
    columns_only: value columns present in one output only.
    """

    name: str
    rows_toraniko: int
    rows_ours: int
    only_toraniko: int
    only_ours: int
    missing_mismatch: int
    max_abs_diff: float
    columns_only: tuple[str, ...] = ()
    worst: str = ""

    @property
    def ok(self) -> bool:
        return (
            self.only_toraniko == 0
            and self.only_ours == 0
            and self.missing_mismatch == 0
            and not self.columns_only
            and not self.max_abs_diff > TOLERANCE
        )


def _missing(column: str) -> pl.Expr:
    return pl.col(column).is_null() | pl.col(column).is_nan()


def compare_frames(name: str, reference: pl.DataFrame, ours: pl.DataFrame, keys: list[str]) -> Comparison:
    """Full-join ``reference`` (toraniko) and ``ours`` on ``keys`` and measure every shared value column."""
    ref_values = [c for c in reference.columns if c not in keys]
    our_values = [c for c in ours.columns if c not in keys]
    shared = [c for c in ref_values if c in our_values]
    columns_only = tuple(sorted(set(ref_values) ^ set(our_values)))
    ref = reference.select(*keys, *(pl.col(c).cast(pl.Float64) for c in shared)).with_columns(_ref=pl.lit(True))
    our = ours.select(*keys, *(pl.col(c).cast(pl.Float64) for c in shared)).with_columns(_our=pl.lit(True))
    joined = ref.join(our, on=keys, how="full", coalesce=True, suffix="__ours")
    only_ref = joined.filter(pl.col("_our").is_null())
    only_our = joined.filter(pl.col("_ref").is_null())
    both = joined.filter(pl.col("_ref").is_not_null() & pl.col("_our").is_not_null())
    mismatch = 0
    max_abs_diff = math.nan
    worst = ""
    for column in shared:
        other = f"{column}__ours"
        mismatch += both.select((_missing(column) != _missing(other)).sum()).item()
        diffs = both.filter(~_missing(column) & ~_missing(other)).select(
            *keys, (pl.col(column) - pl.col(other)).abs().alias("diff")
        )
        if diffs.height and not diffs.get_column("diff").max() <= max_abs_diff:
            row = diffs.sort("diff", descending=True).row(0, named=True)
            max_abs_diff = row["diff"]
            worst = f"{column} at " + ", ".join(str(row[k]) for k in keys)
    return Comparison(
        name=name,
        rows_toraniko=reference.height,
        rows_ours=ours.height,
        only_toraniko=only_ref.height,
        only_ours=only_our.height,
        missing_mismatch=mismatch,
        max_abs_diff=max_abs_diff,
        columns_only=columns_only,
        worst=worst,
    )


# --------------------------------------------------------------------------------------------------------------
# memory of factor_engine alone


def _vm_hwm_mb() -> float:
    """This process's peak resident set size (VmHWM) in MiB, from /proc; NaN where unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def _rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def engine_only(panel_path: Path, report_path: Path) -> None:
    """Child mode: read the panel, run factor_engine's styles + factor returns, write seconds and memory.

    ``seconds`` covers the engine's calls only; preparing the regression inputs (this script's joins) is
    timed apart as ``prepare_seconds``. The peak RSS covers the whole process, preparation included.
    """
    import factor_engine  # noqa: F401  (import cost outside the measurement)

    rss_after_imports = _rss_mb()
    panel = pl.read_parquet(panel_path)
    rss_with_panel = _rss_mb()
    scores, style_seconds = ours_styles(panel)
    start = time.perf_counter()
    inputs = prepare_regression_inputs(panel, scores)
    prepare_seconds = time.perf_counter() - start
    _, _, regression_seconds = ours_regression(inputs)
    report = {
        "seconds": sum(style_seconds.values()) + regression_seconds,
        "prepare_seconds": prepare_seconds,
        "rss_after_imports_mb": rss_after_imports,
        "rss_with_panel_mb": rss_with_panel,
        "vm_hwm_mb": _vm_hwm_mb(),
    }
    report_path.write_text(json.dumps(report))


def measure_engine_alone(panel_path: Path, work: Path) -> dict[str, float]:
    """Run engine_only in a fresh interpreter and return its report (seconds, RSS figures in MiB).

    The peak is the child's own VmHWM. getrusage's ru_maxrss is not used: Linux carries the high-water mark
    of the forked copy of THIS (large) process over the exec, so it would report our RSS, not the child's.
    """
    report_path = work / "engine_only.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--engine-only", str(panel_path), str(report_path)]
    done = subprocess.run(command, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"engine-only child failed with exit code {done.returncode}")
    report: dict[str, float] = json.loads(report_path.read_text())
    return report


# --------------------------------------------------------------------------------------------------------------
# one size


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        try:
            assets, days = (int(part) for part in item.lower().split("x"))
        except ValueError:
            raise SystemExit(f"--sizes: {item!r} is not ASSETSxDAYS (e.g. 1000x1000)") from None
        sizes.append((assets, days))
    return sizes


def _fmt_seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _fmt_ratio(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or denominator is None or denominator <= 0:
        return "-"
    return f"{numerator / denominator:.1f}x"


def bench_size(
    n_assets: int, n_days: int, work: Path, toraniko_python: Path | None, measure_memory: bool, repeat: int = 1
) -> list[Comparison]:
    """Benchmark one panel size; print its table; return the comparisons (empty without toraniko)."""
    from factor_engine.synthetic import generate_market

    print(f"\n=== {n_assets} assets x {n_days} days (generate_market seed={SEED}) ===", flush=True)
    panel = generate_market(n_assets, n_days, seed=SEED).panel.sort(KEY)
    panel_path = work / "panel.parquet"
    panel.write_parquet(panel_path)
    params_path = work / "params.json"
    params_path.write_text(json.dumps(PARAMS))

    tor_seconds: dict[str, float] = {}
    tor_scores: dict[str, pl.DataFrame] = {}
    if toraniko_python is not None:
        run_toraniko(toraniko_python, "styles", ["--panel", str(panel_path), "--out", str(work / "tor")], params_path)
        tor_seconds.update(json.loads((work / "tor" / "styles_timings.json").read_text())["seconds"])
        tor_scores = {STYLE_SCORES[s]: pl.read_parquet(work / "tor" / f"{s}_scores.parquet") for s in STYLE_SCORES}

    our_seconds: dict[str, float] = {}
    for _ in range(repeat):
        gc.collect()
        our_scores, seconds = ours_styles(panel)
        our_seconds = {stage: min(t, our_seconds.get(stage, math.inf)) for stage, t in seconds.items()}

    check_toraniko_preset(panel, our_scores)
    inputs = prepare_regression_inputs(panel, tor_scores or our_scores)
    write_frames(inputs, work / "regression_inputs")
    n_dates = inputs["returns"].get_column("date").n_unique()
    print(
        f"panel rows {panel.height:,}, regression rows {inputs['returns'].height:,} on {n_dates:,} dates"
        f" (styles from {'toraniko' if tor_scores else 'factor_engine'})",
        flush=True,
    )
    tor_report: dict[str, Any] = {}
    if toraniko_python is not None:
        run_toraniko(
            toraniko_python,
            "regression",
            ["--inputs", str(work / "regression_inputs"), "--out", str(work / "tor")],
            params_path,
        )
        tor_report = json.loads((work / "tor" / "regression_timings.json").read_text())
        tor_seconds.update(tor_report["seconds"])

    shared_inputs = read_frames(work / "regression_inputs", ("returns", "mkt_cap", "sector", "style"))
    our_seconds["regression"] = math.inf
    for _ in range(repeat):
        gc.collect()
        our_factor_returns, our_residuals, seconds_regression = ours_regression(shared_inputs)
        our_seconds["regression"] = min(our_seconds["regression"], seconds_regression)

    best_of = f" (ours: best of {repeat})" if repeat > 1 else ""
    print(f"\n{'stage':<16}{'toraniko s':>12}{'ours s':>10}{'speed-up':>10}{best_of}")
    for stage in STAGES:
        tor = tor_seconds.get(stage)
        print(
            f"{STAGE_LABELS[stage]:<16}{_fmt_seconds(tor):>12}{_fmt_seconds(our_seconds[stage]):>10}"
            f"{_fmt_ratio(tor, our_seconds[stage]):>10}"
        )
    tor_total = sum(tor_seconds.values()) if tor_seconds else None
    our_total = sum(our_seconds.values())
    print(
        f"{'total':<16}{_fmt_seconds(tor_total):>12}{_fmt_seconds(our_total):>10}{_fmt_ratio(tor_total, our_total):>10}"
    )

    comparisons: list[Comparison] = []
    if toraniko_python is not None:
        for column in STYLE_SCORES.values():
            comparisons.append(compare_frames(column, tor_scores[column], our_scores[column], KEY))
        tor_factor_returns = pl.read_parquet(work / "tor" / "factor_returns.parquet")
        comparisons.append(compare_frames("factor returns", tor_factor_returns, our_factor_returns, ["date"]))
        tor_residuals = pl.read_parquet(work / "tor" / "residuals.parquet")
        our_long = our_residuals.select(*KEY, "residual").filter(pl.col("residual").is_not_null())
        comparisons.append(compare_frames("residuals", tor_residuals, our_long, KEY))

        print(
            f"\n{'output':<16}{'rows tor':>10}{'rows ours':>10}{'only tor':>10}{'only ours':>10}"
            f"{'missing≠':>10}{'max |diff|':>12}  ok"
        )
        for c in comparisons:
            print(
                f"{c.name:<16}{c.rows_toraniko:>10,}{c.rows_ours:>10,}{c.only_toraniko:>10,}{c.only_ours:>10,}"
                f"{c.missing_mismatch:>10,}{c.max_abs_diff:>12.2e}  {'yes' if c.ok else 'NO'}"
            )
        for c in comparisons:
            if c.columns_only:
                print(f"  {c.name}: columns in only one output: {list(c.columns_only)}")
            if c.max_abs_diff > TOLERANCE:
                print(f"  {c.name}: largest difference {c.max_abs_diff:.3e} ({c.worst})")
        dropped = tor_report.get("dropped_residual_symbols", 0)
        if dropped:
            print(f"  note: stock toraniko dropped every residual of {dropped} symbol(s) (schema inference)")

    if measure_memory:
        alone = measure_engine_alone(panel_path, work)
        print(
            f"\nfactor_engine alone (fresh process): styles + factor returns {alone['seconds']:.3f} s "
            f"(+ {alone['prepare_seconds']:.3f} s preparing regression inputs), "
            f"peak RSS (VmHWM) {alone['vm_hwm_mb']:.0f} MiB "
            f"({alone['rss_after_imports_mb']:.0f} MiB after imports, {alone['rss_with_panel_mb']:.0f} MiB "
            "with the panel loaded)",
            flush=True,
        )
    return comparisons


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated ASSETSxDAYS (default: %(default)s)")
    parser.add_argument("--skip-toraniko", action="store_true", help="time factor_engine only, compare nothing")
    parser.add_argument("--no-memory", action="store_true", help="skip the fresh-process peak memory run")
    parser.add_argument("--repeat", type=int, default=1, help="time factor_engine's stages N times, keep the best")
    parser.add_argument("--keep", type=Path, help="write the work files under this directory and keep them")
    parser.add_argument("--engine-only", nargs=2, type=Path, metavar=("PANEL", "REPORT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.engine_only:
        engine_only(*args.engine_only)
        return 0

    sizes = parse_sizes(args.sizes)
    toraniko_python: Path | None = None
    if not args.skip_toraniko:
        sys.path.insert(0, str(BENCH_DIR))
        from toraniko_env import ensure_toraniko_venv, toraniko_versions

        toraniko_python = ensure_toraniko_venv()
        print(f"toraniko venv: {toraniko_python} {toraniko_versions(toraniko_python)}")
    print(f"factor_engine: polars {pl.__version__}, python {sys.version.split()[0]}")
    print(f"parameters: {json.dumps({k: v for k, v in PARAMS.items() if k != 'complete_residual_columns'})}")

    failures = 0
    with tempfile.TemporaryDirectory(prefix="bench_core_") as tmp:
        root = args.keep or Path(tmp)
        for n_assets, n_days in sizes:
            work = root / f"{n_assets}x{n_days}"
            work.mkdir(parents=True, exist_ok=True)
            comparisons = bench_size(n_assets, n_days, work, toraniko_python, not args.no_memory, args.repeat)
            failures += sum(not c.ok for c in comparisons)
    if toraniko_python is not None:
        print(
            f"\n{'PARITY OK' if failures == 0 else f'PARITY FAILED ({failures} output(s))'} at tolerance {TOLERANCE:g}"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
