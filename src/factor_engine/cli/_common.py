"""What the ``factor-engine`` commands share: the one Typer ``app``, the consoles, error reporting (one red
``error: <message>`` line and exit code 1; ``--verbose`` adds the traceback), stage timing with progress bars,
output files, and the summary tables of the estimation commands."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import numpy as np
import polars as pl
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from factor_engine import styles
from factor_engine.panel import (
    CSV_SUFFIXES,
    DATE,
    PARQUET_SUFFIXES,
    SYMBOL,
)
from factor_engine.regression import FactorReturns
from factor_engine.synthetic import SyntheticTruth

__all__ = ["app", "console", "err_console"]

DEFAULT_STYLES = ("momentum", "value", "size")
TRADING_DAYS_PER_YEAR = 252
TRUE_EXPOSURES_COLUMN = "corr vs truth (true exposures)"
# stages build_model reports through its ``stage`` callback: universe, styles, factor returns, exposures,
# specific risk, factor covariance (forecast in the background meanwhile)
BUILD_MODEL_STAGES = 6

app = typer.Typer(
    name="factor-engine",
    help=(
        "Factor Engine: a Barra-style equity factor risk model built from your own data (any sector taxonomy; "
        "market caps and fundamentals when you have them).\n\n"
        "**Data**: `prepare` makes a panel from adjusted closes and a sector map; `synthetic` writes a seeded "
        "market with known truth; `ingest-ib` downloads one from Interactive Brokers.\n\n"
        "**Risk models**: `build` estimates factor returns, the factor covariance and specific risk into a model "
        "folder; `update` extends one by new dates without a rebuild; `validate` tests its forecasts out of sample "
        "(bias statistics); `report` writes an offline HTML report. `styles` and `factor-returns` run single "
        "steps; `demo` runs it all on a synthetic market.\n\n"
        "**Portfolios**: `risk` decomposes a portfolio's risk, or its tracking error against a benchmark; "
        "`optimize` finds a portfolio under factor constraints; `backtest` runs a factor-constrained strategy in "
        "NautilusTrader's backtest engine.\n\n"
        "**Service**: `ingest` loads a panel into the store (PostgreSQL or SQLite), `delete-panel` removes rows, "
        "`serve` runs the REST API and its dashboard.\n\n"
        "Every command has --help with an example."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
console = Console()
err_console = Console(stderr=True)


class Method(StrEnum):
    """Factor return estimators of :func:`factor_engine.estimate_factor_returns`."""

    barra = "barra"
    toraniko = "toraniko"


Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="On error, print the full traceback too.")]
DataPath = Annotated[
    Path, typer.Option("--data", "-d", help="Panel file (.parquet, .pq or .csv) following the data contract.")
]


# --------------------------------------------------------------------------------------------------
# plumbing: errors, stages, files


def _one_line(error: BaseException) -> str:
    """The error's message on one line (multi-problem panel messages joined with '; ')."""
    message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    message = str(message).replace("\n- ", "; ").replace("\n", " ")
    if isinstance(error, ValueError | KeyError | OSError | pl.exceptions.PolarsError):
        return message
    return f"{type(error).__name__}: {message} (run with --verbose for the traceback)"


@contextmanager
def _reported_errors(verbose: bool) -> Iterator[None]:
    """Turn any exception into ``error: <message>`` on stderr and exit code 1 (traceback with ``verbose``)."""
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except Exception as error:
        for progress in list(_LIVE_PROGRESS):  # an error between two stages: end the bar before printing
            progress.stop()
        _LIVE_PROGRESS.clear()
        if verbose:
            err_console.print_exception()
        err_console.print(Text(f"error: {_one_line(error)}", style="bold red"), soft_wrap=True)
        raise typer.Exit(code=1) from None


_LIVE_PROGRESS: set[Progress] = set()


# Redraws per second of the progress display: each redraw renders the bar in a thread holding the GIL (about
# 3 ms on the 2-core machine), which the numerical threads of a build wait for; Rich's default of 10 cost a
# build about 0.8 s of CPU. Where the console is not a terminal (output piped or captured) nothing animates:
# the display is redrawn only when a stage changes.
_REFRESH_PER_SECOND = 2


def _progress_bar() -> Progress:
    """A transient Rich bar on the console: spinner, description, bar, done of total, elapsed time."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        auto_refresh=console.is_terminal,
        refresh_per_second=_REFRESH_PER_SECOND,
    )


class _Stages:
    """Runs named stages, prints a check mark when each ends and records its seconds.

    With ``total`` (the number of stages the command will run) a Rich progress bar over the stages shows the
    current stage name, the stages done and the elapsed time; without it, a spinner shows the stage name.
    """

    def __init__(self, total: int | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self.total = total
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def _bar(self) -> tuple[Progress, TaskID]:
        if self._progress is None or self._task is None:
            self._progress = _progress_bar()
            self._task = self._progress.add_task("", total=self.total)
            self._progress.start()
            _LIVE_PROGRESS.add(self._progress)
        return self._progress, self._task

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            _LIVE_PROGRESS.discard(self._progress)
            self._progress = self._task = None

    @contextmanager
    def run(self, label: str) -> Iterator[None]:
        start = time.perf_counter()
        if self.total is None:
            with console.status(Text(f"{label}…"), refresh_per_second=_REFRESH_PER_SECOND):
                yield
        else:
            progress, task = self._bar()
            progress.update(task, description=f"{label}…", refresh=True)
            try:
                yield
            except BaseException:
                self._stop()
                raise
            progress.advance(task)
        self.seconds[label] = time.perf_counter() - start
        console.print(Text.assemble(("✓ ", "green"), label))
        if self.total is not None and len(self.seconds) >= self.total:
            self._stop()

    def table(self) -> Table:
        self._stop()
        table = Table(title="Seconds per stage", title_justify="left")
        table.add_column("stage")
        table.add_column("seconds", justify="right")
        for label, seconds in self.seconds.items():
            table.add_row(label, f"{seconds:.2f}")
        table.add_row(Text("total", style="bold"), Text(f"{sum(self.seconds.values()):.2f}", style="bold"))
        return table


def _check_output_file(path: Path) -> Path:
    """``path`` if its suffix is one :func:`_write_frame` writes; checked before any work is done."""
    if path.suffix.lower() not in PARQUET_SUFFIXES + CSV_SUFFIXES:
        supported = ", ".join(PARQUET_SUFFIXES + CSV_SUFFIXES)
        raise ValueError(f"cannot write {path}: unsupported suffix {path.suffix!r} (use {supported})")
    return path


def _write_frame(frame: pl.DataFrame, path: Path) -> Path:
    """Write ``frame`` as Parquet (``.parquet``/``.pq``) or CSV (``.csv``), creating parent directories."""
    _check_output_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in CSV_SUFFIXES:
        frame.write_csv(path)
    else:
        frame.write_parquet(path)
    return path


def _write_frames(frames: Mapping[str, pl.DataFrame], directory: Path) -> list[Path]:
    """Write each frame to ``directory/<name>.parquet``."""
    return [_write_frame(frame, directory / f"{name}.parquet") for name, frame in frames.items()]


def _print_written(paths: Sequence[Path]) -> None:
    console.print(Text("wrote:", style="bold"))
    for path in paths:
        console.print(Text(f"  {path}"), soft_wrap=True)


# --------------------------------------------------------------------------------------------------
# library calls shared by the commands


def _style_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError(f"--styles needs at least one style name, got {text!r}")
    for name in names:
        styles.get_style(name)  # raises KeyError naming the registered styles
    return names


def _result_frames(result: FactorReturns) -> dict[str, pl.DataFrame]:
    return {
        "factor_returns": result.factor_returns,
        "residuals": result.residuals,
        "diagnostics": result.diagnostics,
    }


# --------------------------------------------------------------------------------------------------
# summaries


def _format(value: float | None, spec: str) -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def _percent(value: float) -> str:
    return _format(100 * value, ".1f") + " %" if math.isfinite(value) else "n/a"


def _panel_summary(panel: pl.DataFrame) -> str:
    first, last, n_dates, n_assets = panel.select(
        pl.col(DATE).min().alias("first"),
        pl.col(DATE).max().alias("last"),
        pl.col(DATE).n_unique().alias("n_dates"),
        pl.col(SYMBOL).n_unique().alias("n_assets"),
    ).row(0)
    return f"{panel.height:,} rows, {n_assets:,} assets, {n_dates:,} dates, {first} → {last}"


def _solved_diagnostics(result: FactorReturns) -> pl.DataFrame:
    """Diagnostics of the dates whose factor returns were solved."""
    return result.diagnostics.join(result.factor_returns.select(DATE), on=DATE, how="semi")


def _fit_summary(result: FactorReturns) -> dict[str, str]:
    """Dates solved, rows used, mean R² and median condition number (over solved dates) of a result."""
    solved = _solved_diagnostics(result)
    mean_r2 = solved.get_column("r2").mean()
    median_condition = solved.get_column("condition_number").median()
    return {
        "dates solved": f"{result.factor_returns.height:,} of {result.diagnostics.height:,} return dates",
        "rows used": f"{result.residuals.height:,}",
        "mean R²": _format(mean_r2 if isinstance(mean_r2, float) else None, ".3f"),
        "median condition number": _format(median_condition if isinstance(median_condition, float) else None, ".1f"),
    }


def _excluded_table(result: FactorReturns) -> Table:
    table = Table(title="Rows excluded from the regressions, by first reason", title_justify="left")
    table.add_column("reason")
    table.add_column("rows", justify="right")
    for reason, n_rows in result.excluded.iter_rows():
        table.add_row(Text(reason), f"{n_rows:,}")
    return table


def _annualized_vol(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.std(finite, ddof=1) * math.sqrt(TRADING_DAYS_PER_YEAR)) if finite.size > 1 else math.nan


def _correlation(first: np.ndarray, second: np.ndarray) -> float:
    both = np.isfinite(first) & np.isfinite(second)
    if both.sum() < 3 or np.std(first[both]) == 0.0 or np.std(second[both]) == 0.0:
        return math.nan
    return float(np.corrcoef(first[both], second[both])[0, 1])


def _versus_truth(
    result: FactorReturns, truth: SyntheticTruth, truth_name: Mapping[str, str]
) -> dict[str, tuple[float, float, float]]:
    """Per true factor: annualized vol of the estimated and of the true returns, and their correlation.

    ``truth_name`` maps an estimated factor column to the true factor it estimates (identity if absent).
    Everything is measured over the dates solved in ``result``; a factor not estimated gets NaN.
    """
    estimated = result.factor_returns.rename({name: truth_name.get(name, name) for name in result.factors})
    joined = estimated.join(truth.factor_returns, on=DATE, how="inner", suffix="_true")
    comparison: dict[str, tuple[float, float, float]] = {}
    for factor in truth.factors:
        if factor not in estimated.columns:
            comparison[factor] = (math.nan, math.nan, math.nan)
            continue
        values = joined.get_column(factor).cast(pl.Float64).fill_null(math.nan).to_numpy()
        true_values = joined.get_column(f"{factor}_true").to_numpy()
        comparison[factor] = (_annualized_vol(values), _annualized_vol(true_values), _correlation(values, true_values))
    return comparison


def _factor_table(
    truth: SyntheticTruth,
    from_scores: Mapping[str, tuple[float, float, float]],
    from_true_exposures: Mapping[str, tuple[float, float, float]],
    score_of: Mapping[str, str],
) -> Table:
    """Rows: true factors. Columns: vols and correlation of the regression on the computed style scores
    (over its solved dates), and the correlation of the same regression on the true exposures."""
    table = Table(
        title=f"Factor returns versus the synthetic truth (annualized vol = daily sd × √{TRADING_DAYS_PER_YEAR})",
        title_justify="left",
        caption=(
            "vols and corr vs truth: regression on the style scores computed from the panel, over its solved "
            "dates; (true exposures): the same regression on truth.exposures."
        ),
        caption_justify="left",
    )
    table.add_column("factor")
    table.add_column("ann. vol\n(est.)", justify="right")
    table.add_column("ann. vol\n(truth)", justify="right")
    table.add_column("corr vs\ntruth", justify="right")
    table.add_column(TRUE_EXPOSURES_COLUMN.replace(" (", "\n("), justify="right")
    for factor in truth.factors:
        label = f"{factor} ({score_of[factor]})" if factor in score_of else factor
        vol, true_vol, corr = from_scores[factor]
        corr_true_exposures = from_true_exposures[factor][2]
        table.add_row(
            label,
            _percent(vol),
            _percent(true_vol),
            _format(corr, ".3f"),
            _format(corr_true_exposures, ".3f"),
        )
    return table


def _score_exposure_correlation(
    style_scores: pl.DataFrame, truth: SyntheticTruth, score_of: Mapping[str, str]
) -> dict[str, float]:
    """Per style: correlation of the computed score with the true exposure, pooled over (date, symbol) rows."""
    joined = style_scores.join(truth.exposures, on=[DATE, SYMBOL], how="inner")
    return {
        style: _correlation(
            joined.get_column(score).cast(pl.Float64).fill_null(math.nan).to_numpy(),
            joined.get_column(style).cast(pl.Float64).fill_null(math.nan).to_numpy(),
        )
        for style, score in score_of.items()
        if score in joined.columns
    }


def _fit_table(results: Mapping[str, FactorReturns]) -> Table:
    """One column of :func:`_fit_summary` per result (all estimated with the same method and lag)."""
    first = next(iter(results.values()))
    table = Table(
        title=f"Regression fit (method {first.method}, exposure_lag {first.exposure_lag})", title_justify="left"
    )
    table.add_column("")
    summaries = {heading: _fit_summary(result) for heading, result in results.items()}
    for heading in summaries:
        table.add_column(heading, justify="right")
    for key in summaries[next(iter(summaries))]:
        table.add_row(key, *(summary[key] for summary in summaries.values()))
    return table
