"""``factor-engine optimize``: a factor-constrained portfolio on a built model, as a ``symbol,weight`` file and
its ex-ante risk. Options and ``--config optimize.toml`` fill one :class:`~factor_engine.portfolio.spec.OptimizeSpec`
(options override the file's keys); the spec calls the library optimizer."""

from __future__ import annotations

import math
import os
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import polars as pl
import typer
from rich.table import Table
from rich.text import Text

from factor_engine.cli._common import (
    TRADING_DAYS_PER_YEAR,
    Verbose,
    _check_output_file,
    _format,
    _reported_errors,
    _Stages,
    app,
    console,
)
from factor_engine.cli.models import (
    _factor_contribution_table,
    _read_weights,
    _risk_summary_table,
)
from factor_engine.model import load_model
from factor_engine.panel import CSV_SUFFIXES, SYMBOL
from factor_engine.portfolio import OptimizationError, decompose_risk
from factor_engine.portfolio.analytics import WEIGHT
from factor_engine.portfolio.snapshot import forecast_dates, snapshot_at
from factor_engine.portfolio.spec import SPEC_KEYS, OptimizeSpec
from factor_engine.report import write_report
from factor_engine.report.data import optimization_summary
from factor_engine.report.html import HTML_SUFFIXES

__all__ = ["optimize", "parse_factor_bounds", "read_spec_file"]

# the spec keys whose value is a table of symbols, and the column a file of them has
_SYMBOL_TABLES = {"benchmark": "weight", "current": "weight", "alpha": "alpha"}
_OPTION_OF = {
    "objective": "--objective",
    "benchmark": "--benchmark",
    "alpha": "--alpha",
    "risk_aversion": "--risk-aversion",
    "long_only": "--long-only",
    "neutral": "--neutral",
    "factor_bounds": "--factor-bounds",
    "max_weight": "--max-weight",
    "max_tracking_error": "--max-tracking-error",
    "max_turnover": "--max-turnover",
    "current": "--current",
    "allow_unnormalized": "--allow-unnormalized",
}


class Objective(StrEnum):
    """The objectives of :data:`factor_engine.portfolio.spec.OBJECTIVES`."""

    min_variance = "min-variance"
    min_tracking_error = "min-tracking-error"
    max_alpha = "max-alpha"


def parse_factor_bounds(texts: list[str]) -> dict[str, list[float | None]]:
    """``["market=0.9:1.1", "sze_score=:0"]`` as ``{factor: [lower, upper]}`` (an empty side is open, None)."""
    bounds: dict[str, list[float | None]] = {}
    for text in texts:
        factor, equals, interval = text.rpartition("=")
        lower_text, colon, upper_text = interval.partition(":")
        usage = f"--factor-bounds {text!r}: expected FACTOR=LO:HI (LO or HI may be empty for an open side)"
        if not equals or not factor.strip() or not colon or ":" in upper_text:
            raise ValueError(usage)
        pair: list[float | None] = []
        for side in (lower_text.strip(), upper_text.strip()):
            try:
                pair.append(None if side == "" else float(side))
            except ValueError:
                raise ValueError(f"{usage}; {side!r} is not a number") from None
        if factor.strip() in bounds:
            raise ValueError(f"--factor-bounds names {factor.strip()!r} more than once")
        bounds[factor.strip()] = pair
    return bounds


def _symbol_table(path: Path, key: str) -> list[dict[str, Any]]:
    """A ``symbol,weight`` (``symbol,alpha`` for alpha) file as the spec's list form (duplicates stay visible)."""
    column = _SYMBOL_TABLES[key]
    frame = _read_weights(path, key, column)
    return [{"symbol": symbol, column: value} for symbol, value in frame.iter_rows()]


def read_spec_file(path: Path) -> dict[str, Any]:
    """The keys of an optimize.toml; a symbol table given as a string is a file path, relative to the TOML file."""
    if not path.is_file():
        raise ValueError(f"cannot read --config {path}: no such file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"--config {path} is not valid TOML: {error}") from None
    unknown = [key for key in data if key not in SPEC_KEYS]
    if unknown:
        raise ValueError(f"--config {path}: unknown key(s) {unknown}; the keys are {', '.join(SPEC_KEYS)}")
    for key in _SYMBOL_TABLES:
        if isinstance(data.get(key), str):
            data[key] = _symbol_table(path.parent / data[key], f"{key}")
    return data


def _atomic_write(weights: pl.DataFrame, out: Path) -> Path:
    """Write ``weights`` to ``out`` (CSV or Parquet) through a temporary file renamed over it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        if out.suffix.lower() in CSV_SUFFIXES:
            weights.write_csv(temporary)
        else:
            weights.write_parquet(temporary)
        temporary.replace(out)
    finally:
        temporary.unlink(missing_ok=True)
    return out


@app.command("optimize")
def optimize(
    model_dir: Annotated[Path, typer.Option("--model", "-m", help="Model folder written by factor-engine build.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Weights file to write: symbol,weight (.csv or .parquet).")],
    date: Annotated[
        str | None,
        typer.Option("--date", help="YYYY-MM-DD: the model as of that close (default: the last forecast date)."),
    ] = None,
    objective: Annotated[
        Objective | None,
        typer.Option(
            "--objective",
            help="min-variance (least total risk; default), min-tracking-error (least active risk, needs "
            "--benchmark) or max-alpha (most alpha − λ·variance, needs --alpha; active with --benchmark).",
        ),
    ] = None,
    benchmark: Annotated[
        Path | None, typer.Option("--benchmark", "-b", help="Benchmark weights file: symbol,weight (fractions).")
    ] = None,
    alpha: Annotated[
        Path | None,
        typer.Option("--alpha", help="Daily expected returns file: symbol,alpha (fractions), every model symbol."),
    ] = None,
    risk_aversion: Annotated[
        float | None, typer.Option("--risk-aversion", help="λ > 0 of max-alpha (default 1).")
    ] = None,
    long_only: Annotated[
        bool | None, typer.Option("--long-only/--long-short", help="No short positions (default: long-short).")
    ] = None,
    neutral: Annotated[
        list[str] | None,
        typer.Option("--neutral", help="A factor with zero (active) exposure; repeatable."),
    ] = None,
    factor_bounds: Annotated[
        list[str] | None,
        typer.Option(
            "--factor-bounds", help="FACTOR=LO:HI bounds on the portfolio's exposure (a side may be empty); repeatable."
        ),
    ] = None,
    max_weight: Annotated[
        float | None, typer.Option("--max-weight", help="|weight| ≤ X per asset (fraction of capital).")
    ] = None,
    max_tracking_error: Annotated[
        float | None,
        typer.Option("--max-tracking-error", help="Annualized tracking error ≤ X against --benchmark (fraction)."),
    ] = None,
    max_turnover: Annotated[
        float | None,
        typer.Option("--max-turnover", help="Σ|w − current| ≤ X (fraction of capital); needs --current."),
    ] = None,
    current: Annotated[
        Path | None, typer.Option("--current", help="Current holdings file: symbol,weight (fractions).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="optimize.toml with the same keys (options override its keys)."),
    ] = None,
    allow_unnormalized: Annotated[
        bool | None,
        typer.Option(
            "--allow-unnormalized",
            help="Do not check the benchmark and current holdings for percentage-like weights or a sum other than 1.",
        ),
    ] = None,
    annualize: Annotated[
        bool,
        typer.Option("--annualize/--daily", help=f"Annualized (daily × √{TRADING_DAYS_PER_YEAR}) or daily risk."),
    ] = True,
    top: Annotated[int, typer.Option("--top", help="Rows of the factor and holdings tables.")] = 10,
    report: Annotated[
        Path | None, typer.Option("--report", help="Also write the HTML report of the optimized portfolio here.")
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Optimize a fully invested portfolio on a built risk model under factor constraints.

    Writes the weights (symbol,weight, nonzero weights only, fractions of capital) to --out through a
    temporary file, and prints the ex-ante risk of the result: total, factor and specific risk, and with
    --benchmark the tracking error and the active risk, then the largest factor contributions and holdings.
    The constraints come from the options and from --config (a TOML file with the keys objective, benchmark,
    alpha, risk_aversion, long_only, neutral, factor_bounds, max_weight, max_tracking_error, max_turnover,
    current, allow_unnormalized; a benchmark, alpha or current given as a string is a file path relative to
    it); an option overrides the file's key. An infeasible set of constraints is an error naming the
    constraint that conflicts and those it conflicts with.

    Example:

        factor-engine optimize --model model --out weights.csv --long-only --max-weight 0.05 --neutral sze_score

        factor-engine optimize --model model --out w.csv --objective max-alpha --alpha alpha.csv
            --benchmark bench.csv --max-tracking-error 0.03

        factor-engine optimize --model model --out w.csv --config optimize.toml --max-turnover 0.2 --current w0.csv
    """
    with _reported_errors(verbose):
        if top < 1:
            raise ValueError(f"--top must be at least 1, got {top}")
        _check_output_file(out)
        if report is not None and report.suffix.lower() not in HTML_SUFFIXES:
            raise ValueError(f"cannot write the report to {report}: use a .html or .htm file name")
        stages = _Stages()
        with stages.run("read the constraints"):
            data: dict[str, Any] = {} if config is None else read_spec_file(config)
            names = {**_OPTION_OF, **{key: f"{key} ({config})" for key in data}}
            options: dict[str, Any] = {
                "objective": None if objective is None else objective.value,
                "risk_aversion": risk_aversion,
                "long_only": long_only,
                "neutral": neutral or None,
                "factor_bounds": parse_factor_bounds(factor_bounds) if factor_bounds else None,
                "max_weight": max_weight,
                "max_tracking_error": max_tracking_error,
                "max_turnover": max_turnover,
                "allow_unnormalized": allow_unnormalized,
            }
            for key, path in (("benchmark", benchmark), ("alpha", alpha), ("current", current)):
                options[key] = None if path is None else _symbol_table(path, key)
            for key, value in options.items():
                if value is not None:
                    data[key] = value
                    names[key] = _OPTION_OF[key]
            spec = OptimizeSpec.from_mapping(data, names)
        with stages.run(f"load model {model_dir}"):
            model = load_model(model_dir)
            snapshot = snapshot_at(model, date)
        with stages.run(f"optimize {snapshot.n_assets:,} assets"):
            try:
                result = spec.run(snapshot)
            except OptimizationError as error:
                raise OptimizationError(
                    str(error).replace("set allow_unnormalized = true", "pass --allow-unnormalized")
                ) from None
        held = result.weights.filter(pl.col(WEIGHT) != 0.0)
        with stages.run(f"write {out}"):
            _atomic_write(held, out)
        written_report = None
        if report is not None:
            with stages.run(f"write report {report}"):
                written_report = write_report(
                    model,
                    report,
                    date=date,
                    portfolio=result.weights,
                    benchmark=spec.benchmark,
                    title="Factor Engine optimized portfolio",
                    allow_unnormalized=True,
                    optimization=optimization_summary(spec, result),
                )

        day = date if date is not None else f"{forecast_dates(model)[-1]} (last forecast date)"
        console.print(
            Text.assemble(
                ("model: ", "bold"),
                f"{model_dir} as of {day}, {snapshot.n_assets:,} assets, {snapshot.n_factors} factors",
            ),
            soft_wrap=True,
        )
        console.print(Text.assemble(("constraints: ", "bold"), "; ".join(spec.describe())), soft_wrap=True)
        console.print(
            Text.assemble(
                ("solution: ", "bold"),
                f"{result.status} ({result.solver}, {result.solve_seconds:.2f} s), {held.height:,} holdings, "
                f"largest |weight| {_format(float(np.abs(result.weights.get_column(WEIGHT).to_numpy()).max()), '.4f')}",
            ),
            soft_wrap=True,
        )
        for warning in result.warnings:
            console.print(Text(f"warning: {warning}", style="yellow"), soft_wrap=True)
        # the optimized book may be long-short or leveraged: no percentage check on it
        portfolio_risk = decompose_risk(snapshot, result.weights, allow_unnormalized=True)
        active_risk = (
            None
            if spec.benchmark is None
            else decompose_risk(snapshot, result.weights, spec.benchmark, allow_unnormalized=True)
        )
        units = f"annualized: daily sd × √{TRADING_DAYS_PER_YEAR}" if annualize else "daily sd"
        if annualize:
            portfolio_risk = portfolio_risk.annualized(TRADING_DAYS_PER_YEAR)
            active_risk = None if active_risk is None else active_risk.annualized(TRADING_DAYS_PER_YEAR)
        console.print(_risk_summary_table(portfolio_risk, f"portfolio, {units}"))
        if active_risk is not None:
            console.print(_risk_summary_table(active_risk, f"active, against the benchmark, {units}"))
        shown = active_risk if active_risk is not None else portfolio_risk
        console.print(_factor_contribution_table(shown, top))
        console.print(_holdings_table(held, top))
        if written_report is not None:
            console.print(Text.assemble(("report: ", "bold"), str(written_report)), soft_wrap=True)
        console.print(
            Text.assemble(("wrote: ", "bold"), f"{out} ({held.height:,} rows: symbol, weight)"), soft_wrap=True
        )


def _holdings_table(held: pl.DataFrame, top: int) -> Table:
    largest = held.sort(pl.col(WEIGHT).abs(), descending=True).head(top)
    table = Table(title=f"Largest {largest.height} holdings", title_justify="left")
    table.add_column(SYMBOL)
    table.add_column(WEIGHT, justify="right")
    for symbol, weight in largest.iter_rows():
        table.add_row(Text(symbol), _format(100 * weight, ".2f") + " %" if math.isfinite(weight) else "n/a")
    return table
