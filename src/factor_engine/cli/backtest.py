"""``factor-engine backtest``: the factor-constrained portfolio strategy run in NautilusTrader's BacktestEngine on a
panel's returns (:mod:`factor_engine.integrations.nautilus`; needs ``pip install 'factor-engine[nautilus]'``).
The optimization options are those of ``factor-engine optimize`` and fill the same
:class:`~factor_engine.portfolio.spec.OptimizeSpec`."""

from __future__ import annotations

import json
import math
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from factor_engine.cli._common import (
    _LIVE_PROGRESS,
    Verbose,
    _format,
    _percent,
    _print_written,
    _progress_bar,
    _reported_errors,
    _Stages,
    app,
    console,
)
from factor_engine.cli.optimize import _OPTION_OF, _symbol_table, parse_factor_bounds, read_spec_file
from factor_engine.model import load_model
from factor_engine.panel import DATE, RETURNS, SYMBOL, load_panel
from factor_engine.portfolio.spec import OptimizeSpec

__all__ = ["backtest"]

#: The files ``factor-engine backtest`` writes to ``--out``.
OUTPUT_FILES = ("summary.json", "equity_curve.parquet", "exposures.parquet", "rebalances.parquet", "report.html")


class Strategy(StrEnum):
    """Objectives the strategy can rebalance to (``max-alpha`` needs an alpha per date: not offered)."""

    min_variance = "min-variance"
    min_tracking_error = "min-tracking-error"


def _guard_bounds(spec: OptimizeSpec, slack: float) -> dict[str, tuple[float | None, float | None]]:
    """The optimizer's factor bounds widened by ``slack`` on each closed side (the guard's limits)."""
    return {
        factor: (None if math.isinf(lower) else lower - slack, None if math.isinf(upper) else upper + slack)
        for factor, (lower, upper) in spec.factor_bounds.items()
    }


@app.command("backtest")
def backtest(
    model_dir: Annotated[Path, typer.Option("--model", "-m", help="Model folder written by factor-engine build.")],
    data: Annotated[
        Path, typer.Option("--data", "-d", help="Panel file (.parquet, .pq or .csv): its returns make the prices.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for summary.json, the Parquet files, report.html.")],
    strategy: Annotated[
        Strategy,
        typer.Option(
            "--strategy",
            help="min-variance (least total risk) or min-tracking-error (least active risk; needs --benchmark).",
        ),
    ] = Strategy.min_variance,
    rebalance_days: Annotated[int, typer.Option("--rebalance-days", help="Trading days between rebalances.")] = 21,
    capital: Annotated[float, typer.Option("--capital", help="Starting cash of the account (USD).")] = 1_000_000.0,
    factor_bounds: Annotated[
        list[str] | None,
        typer.Option(
            "--factor-bounds", help="FACTOR=LO:HI bounds on the portfolio's exposure (a side may be empty); repeatable."
        ),
    ] = None,
    neutral: Annotated[
        list[str] | None, typer.Option("--neutral", help="A factor with zero (active) exposure; repeatable.")
    ] = None,
    max_weight: Annotated[
        float | None, typer.Option("--max-weight", help="weight ≤ X per asset (fraction of equity).")
    ] = None,
    benchmark: Annotated[
        Path | None, typer.Option("--benchmark", "-b", help="Benchmark weights file: symbol,weight (fractions).")
    ] = None,
    max_tracking_error: Annotated[
        float | None,
        typer.Option("--max-tracking-error", help="Annualized tracking error ≤ X against --benchmark (fraction)."),
    ] = None,
    max_turnover: Annotated[
        float | None,
        typer.Option("--max-turnover", help="Σ|w − current| ≤ X per rebalance (fraction of equity)."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="optimize.toml with the keys of factor-engine optimize (options win)."),
    ] = None,
    guard_slack: Annotated[
        float,
        typer.Option(
            "--guard-slack",
            help="The guard denies orders taking an exposure beyond the --factor-bounds widened by this much.",
        ),
    ] = 0.02,
    max_risk: Annotated[
        float | None,
        typer.Option("--max-risk", help="The guard's budget for the book's annualized risk (fraction)."),
    ] = None,
    cash_buffer: Annotated[
        float, typer.Option("--cash-buffer", help="Fraction of equity kept in cash at each rebalance.")
    ] = 0.0,
    fee_bps: Annotated[float, typer.Option("--fee-bps", help="Commission in basis points of the traded value.")] = 0.0,
    verbose: Verbose = False,
) -> None:
    """Backtest a factor-constrained portfolio in NautilusTrader's BacktestEngine.

    The panel becomes one equity per symbol on the venue SIM with daily bars made from its returns (each
    symbol starts at 100); the account is a USD cash account (long only). After each close the strategy
    counts a trading day; every --rebalance-days it optimizes on the model's snapshot as of that close, turns
    the weights into whole shares and, once the factor risk guard allows them, sends market orders that fill
    at that close (the next bar's open). The guard denies a rebalance that would take an exposure beyond the
    --factor-bounds widened by --guard-slack or the risk beyond --max-risk. A risk actor publishes the
    book's exposures and ex-ante risk after each close.

    Writes to --out: summary.json (engine, orders filled and denied, realized and mean forecast volatility
    and their ratio, turnover, final equity, annualized return, the largest |exposure| per factor, ...),
    equity_curve.parquet, exposures.parquet, rebalances.parquet and report.html. Needs
    `pip install 'factor-engine[nautilus]'`.

    Example:

        factor-engine backtest --model model --data panel.parquet --out backtest

        factor-engine backtest -m model -d panel.parquet -o bt --rebalance-days 10 --factor-bounds sze_score=-0.2:0.2
    """
    with _reported_errors(verbose):
        started = time.perf_counter()
        if rebalance_days < 1:
            raise ValueError(f"--rebalance-days must be at least 1, got {rebalance_days}")
        if not (math.isfinite(capital) and capital > 0):
            raise ValueError(f"--capital must be a positive amount, got {capital}")
        if not (math.isfinite(guard_slack) and guard_slack >= 0):
            raise ValueError(f"--guard-slack must be >= 0, got {guard_slack}")
        if not 0.0 <= cash_buffer < 1.0:
            raise ValueError(f"--cash-buffer must be in [0, 1), got {cash_buffer}")
        if not (math.isfinite(fee_bps) and fee_bps >= 0):
            raise ValueError(f"--fee-bps must be >= 0, got {fee_bps}")
        try:
            from factor_engine.integrations.nautilus import run_backtest, strategy_spec
        except ImportError as error:
            raise ValueError(
                f"the backtest needs NautilusTrader ({error}): pip install 'factor-engine[nautilus]'"
            ) from None
        from factor_engine.report import write_report
        from factor_engine.report.data import backtest_summary

        stages = _Stages()
        with stages.run("read the constraints"):
            spec_data: dict[str, Any] = {} if config is None else read_spec_file(config)
            names = {**_OPTION_OF, **{key: f"{key} ({config})" for key in spec_data}}
            options: dict[str, Any] = {
                "objective": strategy.value,
                "long_only": True,
                "neutral": neutral or None,
                "factor_bounds": parse_factor_bounds(factor_bounds) if factor_bounds else None,
                "max_weight": max_weight,
                "max_tracking_error": max_tracking_error,
                "max_turnover": max_turnover,
                "benchmark": None if benchmark is None else _symbol_table(benchmark, "benchmark"),
            }
            for key, value in options.items():
                if value is not None:
                    spec_data[key] = value
                    names[key] = _OPTION_OF.get(key, key)
            spec = strategy_spec(spec_data, names)
        with stages.run(f"load model {model_dir}"):
            model = load_model(model_dir)
        with stages.run(f"read {data}"):
            panel = load_panel(data, require=(DATE, SYMBOL, RETURNS))
        n_closes = panel.get_column(DATE).n_unique()
        progress = _progress_bar()
        task = progress.add_task("backtest: closes", total=n_closes)
        progress.start()
        _LIVE_PROGRESS.add(progress)
        try:
            result = run_backtest(
                model,
                panel,
                optimize=spec_data,
                rebalance_days=rebalance_days,
                capital=capital,
                guard_factor_bounds=_guard_bounds(spec, guard_slack),
                guard_max_risk=max_risk,
                cash_buffer=cash_buffer,
                fee=fee_bps / 10_000,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
        finally:
            progress.stop()
            _LIVE_PROGRESS.discard(progress)
        console.print(
            Text.assemble(("✓ ", "green"), f"backtest in NautilusTrader ({result.summary['run_seconds']:.1f} s)")
        )
        with stages.run(f"write {out}"):
            out.mkdir(parents=True, exist_ok=True)
            summary = result.summary | {"guard_slack": guard_slack}
            (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n", encoding="utf-8")
            result.equity_curve.write_parquet(out / "equity_curve.parquet")
            result.exposures.write_parquet(out / "exposures.parquet")
            result.rebalances.write_parquet(out / "rebalances.parquet")
            write_report(
                model,
                out / "report.html",
                title="Factor Engine backtest",
                backtest=backtest_summary(summary, result.equity_curve, result.exposures),
            )
        console.print(_summary_table(summary))
        denied = result.rebalances.filter(result.rebalances.get_column("status") != "traded")
        for day, status, reasons in denied.select(DATE, "status", "reasons").head(5).iter_rows():
            console.print(Text(f"{day}: {status}: {reasons}", style="yellow"), soft_wrap=True)
        _print_written([out / name for name in OUTPUT_FILES])
        console.print(Text.assemble(("run time: ", "bold"), f"{time.perf_counter() - started:.1f} s"))


def _summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"Backtest, {summary['engine']}", title_justify="left")
    table.add_column("")
    table.add_column("value", justify="right")
    statuses = ", ".join(f"{n} {status}" for status, n in summary["rebalances_by_status"].items())
    rows = [
        ("period held", f"{summary['start']} → {summary['end']} ({summary['holding_days']} days)"),
        ("rebalances", f"{summary['rebalances']} ({statuses})" if statuses else "0"),
        ("orders filled", f"{summary['orders_filled']:,}"),
        ("orders denied by the guard", f"{summary['orders_denied']:,}"),
        ("orders rejected by the engine", f"{summary['orders_rejected']:,}"),
        ("realized volatility (annualized)", _maybe_percent(summary["realized_vol"])),
        ("mean forecast volatility (annualized)", _maybe_percent(summary["forecast_vol"])),
        ("realized / forecast", _format(summary["vol_ratio"], ".3f")),
        ("turnover per year", _format(summary["turnover"], ".2f")),
        ("annualized return", _maybe_percent(summary["annualized_return"])),
        ("final equity", _format(summary["final_equity"], ",.2f")),
    ]
    for label, value in rows:
        table.add_row(label, value)
    return table


def _maybe_percent(value: float | None) -> str:
    return "n/a" if value is None else _percent(value)
