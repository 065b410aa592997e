"""``factor-engine`` command line: style scores, factor returns and risk models from a panel file, a portfolio's
risk decomposition on a built model, and a synthetic demo.

Every command calls the library (:mod:`factor_engine.panel`, :mod:`factor_engine.styles`,
:func:`factor_engine.estimate_factor_returns`, :mod:`factor_engine.model`, :mod:`factor_engine.portfolio`,
:mod:`factor_engine.synthetic`) and only formats its results; ``serve`` runs the REST service
(:mod:`factor_engine.service`) and ``ingest`` loads a panel file into the store (:mod:`factor_engine.storage`).
A library error (an invalid panel, a bad parameter, an unwritable path) is printed as one red line
``error: <message>`` and the command exits with code 1; ``--verbose`` prints the traceback as well.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

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
from factor_engine.config import load_config
from factor_engine.model import RiskModel, build_model, load_model
from factor_engine.panel import (
    CSV_SUFFIXES,
    DATE,
    MARKET_CAP,
    PARQUET_SUFFIXES,
    RETURNS,
    SYMBOL,
    load_panel,
    validate_panel,
)
from factor_engine.portfolio import PortfolioError, RiskDecomposition, decompose_risk
from factor_engine.portfolio.snapshot import forecast_dates, snapshot_at
from factor_engine.regression import FactorReturns, estimate_from_panel
from factor_engine.report import bias_statistics, write_report
from factor_engine.report.html import HTML_SUFFIXES
from factor_engine.risk import validation
from factor_engine.synthetic import SyntheticTruth, generate_market

__all__ = ["app", "main"]

DEFAULT_STYLES = ("momentum", "value", "size")
TRADING_DAYS_PER_YEAR = 252
TRUE_EXPOSURES_COLUMN = "corr vs truth (true exposures)"
# stages build_model reports through its ``stage`` callback: universe, styles, factor returns, exposures,
# factor covariance, specific risk
BUILD_MODEL_STAGES = 6

app = typer.Typer(
    name="factor-engine",
    help="Factor Engine: characteristic factor equity risk model — style scores and factor returns.",
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
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
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
            with console.status(Text(f"{label}…")):
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


# --------------------------------------------------------------------------------------------------
# commands


@app.command()
def demo(
    assets: Annotated[int, typer.Option("--assets", help="Distinct assets over the whole history.")] = 500,
    days: Annotated[int, typer.Option("--days", help="Business days of the synthetic panel.")] = 756,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic market.")] = 0,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the output Parquet files.")] = Path(
        "demo_out"
    ),
    verbose: Verbose = False,
) -> None:
    """Run the whole pipeline on a synthetic market and compare the estimates with its known truth.

    Generates a seeded synthetic market, validates the panel, computes the momentum, value and size
    scores, estimates factor returns (method barra, exposure_lag 1) once on those scores and once on
    the true exposures, prints a summary and writes factor_returns, residuals, diagnostics and
    style_scores as Parquet files to --out. Then it builds the risk model of the panel (default
    configuration) and writes its HTML report, report.html in --out, with an equal-weight portfolio
    against the cap-weighted benchmark and the model's bias statistics, and prints its path.

    Example:

        factor-engine demo --assets 500 --days 756 --seed 0 --out demo_out
    """
    with _reported_errors(verbose):
        stages = _Stages(total=8)
        with stages.run("generate synthetic market"):
            market = generate_market(assets, days, seed=seed)
        with stages.run("validate panel"):
            panel = validate_panel(market.panel)
        with stages.run("compute style scores"):
            style_scores = styles.compute_styles(panel, list(DEFAULT_STYLES))
        with stages.run("estimate factor returns (style scores)"):
            result = estimate_from_panel(panel, style_scores, method="barra")
        with stages.run("estimate factor returns (true exposures)"):
            result_true_exposures = estimate_from_panel(panel, market.truth.exposures, method="barra")
        with stages.run("write outputs"):
            written = _write_frames({**_result_frames(result), "style_scores": style_scores}, out)
        with stages.run("build risk model"):
            model = build_model(panel)
        report_path: Path | None = None
        if forecast_dates(model).len():
            with stages.run("bias statistics and report"):
                report_path = _write_demo_report(model, panel, out / "report.html")

        truth = market.truth
        score_of = {name: styles.get_style(name).score for name in truth.styles}
        from_scores = _versus_truth(result, truth, {score: name for name, score in score_of.items()})
        from_true_exposures = _versus_truth(result_true_exposures, truth, {})

        console.print()
        console.rule("Factor Engine demo")
        console.print(Text.assemble(("panel: ", "bold"), _panel_summary(panel), f" (seed {seed})"))
        console.print(_excluded_table(result))
        console.print(stages.table())
        console.print(_factor_table(truth, from_scores, from_true_exposures, score_of))
        score_vs_exposure = _score_exposure_correlation(style_scores, truth, score_of)
        console.print(
            Text(
                "computed score vs true exposure, pooled correlation: "
                + ", ".join(f"{style} {_format(corr, '.3f')}" for style, corr in score_vs_exposure.items())
                + " (the synthetic momentum exposure is a latent process, not built from past returns)"
            )
        )
        console.print(_fit_table({"style scores": result, "true exposures": result_true_exposures}))
        if result.factor_returns.height == 0:
            defaults = styles.get_style("momentum").defaults
            console.print(
                Text(
                    "note: no date could be solved with the computed style scores: momentum needs "
                    f"{defaults['lag'] + defaults['trailing_days']} observations of an asset; use more --days.",
                    style="yellow",
                )
            )
        _print_written(written)
        if report_path is None:
            console.print(
                Text(
                    "note: no report: the risk model has no date with a factor covariance forecast; use more --days.",
                    style="yellow",
                ),
                soft_wrap=True,
            )
        else:
            console.print(Text.assemble(("report: ", "bold"), str(report_path)), soft_wrap=True)


@app.command("styles")
def styles_command(
    data: DataPath,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file (.parquet, .pq or .csv).")],
    style_list: Annotated[str, typer.Option("--styles", help="Comma-separated registered style names.")] = ",".join(
        DEFAULT_STYLES
    ),
    trailing_days: Annotated[
        int, typer.Option("--trailing-days", help="Momentum window in observations (rows of the symbol).")
    ] = 252,
    half_life: Annotated[float, typer.Option("--half-life", help="Momentum weight half-life in observations.")] = 126,
    lag: Annotated[int, typer.Option("--lag", help="Momentum: latest observations skipped.")] = 20,
    winsor_factor: Annotated[
        float, typer.Option("--winsor-factor", help="Momentum: fraction clipped at each tail per date.")
    ] = 0.01,
    verbose: Verbose = False,
) -> None:
    """Compute style scores (date, symbol and one score column per style, e.g. mom_score) from a panel file.

    The momentum options apply to the momentum style; value and size use their defaults.

    Example:

        factor-engine styles --data panel.parquet --out scores.parquet --styles momentum,value,size --lag 20
    """
    with _reported_errors(verbose):
        names = _style_names(style_list)
        _check_output_file(out)
        params: dict[str, dict[str, Any]] = {}
        if "momentum" in names:
            params["momentum"] = {
                "trailing_days": trailing_days,
                "half_life": half_life,
                "lag": lag,
                "winsor_factor": winsor_factor,
            }
        stages = _Stages()
        with stages.run(f"load panel {data}"):
            panel = load_panel(data)
        with stages.run(f"compute {', '.join(names)}"):
            scores = styles.compute_styles(panel, names, params=params)
        with stages.run("write scores"):
            written = _write_frame(scores, out)

        console.print(Text.assemble(("panel: ", "bold"), _panel_summary(panel)))
        table = Table(title="Style scores", title_justify="left")
        table.add_column("score")
        table.add_column("non-null rows", justify="right")
        for column in scores.columns[2:]:
            table.add_row(column, f"{scores.height - scores.get_column(column).null_count():,} of {scores.height:,}")
        console.print(table)
        console.print(stages.table())
        _print_written([written])


@app.command("factor-returns")
def factor_returns_command(
    data: DataPath,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the output Parquet files.")],
    method: Annotated[
        Method, typer.Option("--method", help="barra: joint WLS, cap-weighted constraint; toraniko: two-stage.")
    ] = Method.barra,
    exposure_lag: Annotated[
        int | None,
        typer.Option(
            "--exposure-lag", help="Dates between exposures and returns (default: 1 for barra, 0 for toraniko)."
        ),
    ] = None,
    winsor_factor: Annotated[
        float, typer.Option("--winsor-factor", help="Fraction of returns clipped at each tail per date.")
    ] = 0.05,
    residualize_styles: Annotated[
        bool,
        typer.Option(
            "--residualize-styles/--no-residualize-styles",
            help="toraniko: fit styles on the returns left after market and sectors.",
        ),
    ] = True,
    verbose: Verbose = False,
) -> None:
    """Estimate daily factor returns (market, sectors, momentum, value, size) from a panel file.

    Computes the three style scores with their default parameters, regresses each date's returns on
    them and writes factor_returns, residuals and diagnostics as Parquet files to --out.

    Example:

        factor-engine factor-returns --data panel.parquet --out model --method barra --exposure-lag 1
    """
    with _reported_errors(verbose):
        stages = _Stages()
        with stages.run(f"load panel {data}"):
            panel = load_panel(data)
        with stages.run("compute style scores"):
            style_scores = styles.compute_styles(panel, list(DEFAULT_STYLES))
        with stages.run(f"estimate factor returns ({method.value})"):
            result = estimate_from_panel(
                panel,
                style_scores,
                method=method.value,
                exposure_lag=exposure_lag,
                winsor_factor=winsor_factor,
                residualize_styles=residualize_styles,
            )
        with stages.run("write outputs"):
            written = _write_frames(_result_frames(result), out)

        console.print(Text.assemble(("panel: ", "bold"), _panel_summary(panel)))
        console.print(
            Text.assemble(
                ("model: ", "bold"),
                f"method {result.method}, exposure_lag {result.exposure_lag}, {len(result.factors)} factors "
                f"(market, {len(result.sectors)} sectors, styles {', '.join(result.styles)})",
            )
        )
        for key, value in _fit_summary(result).items():
            console.print(Text.assemble((f"{key}: ", "bold"), value))
        console.print(_excluded_table(result))
        console.print(stages.table())
        _print_written(written)


@app.command()
def build(
    data: DataPath,
    out: Annotated[Path, typer.Option("--out", "-o", help="Model folder to write (created if needed).")],
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Model configuration TOML (defaults when omitted).")
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Build a risk model from a panel file and write it as a model folder.

    Runs validation, universe selection, style scores and factor returns as configured, and writes
    factor_returns, exposures (known at each date's close), residuals and diagnostics as Parquet files,
    plus model.json with the effective configuration, factor list, date range, units and engine version.

    Example:

        factor-engine build --data panel.parquet --out model --config model.toml
    """
    with _reported_errors(verbose):
        stages = _Stages(total=3 + BUILD_MODEL_STAGES)
        with stages.run("read configuration"):
            model_config = load_config(config)
        with stages.run(f"load panel {data}"):
            panel = load_panel(data)
        model = build_model(panel, model_config, stage=stages.run)
        with stages.run(f"write model folder {out}"):
            model.save(out)
        console.print(Text.assemble(("panel: ", "bold"), _panel_summary(panel)))
        meta = model.metadata()
        console.print(
            Text.assemble(
                ("model: ", "bold"),
                f"{len(model.factors)} factors (market, {len(model.sectors)} sectors, styles "
                f"{', '.join(model.styles)}), {model.factor_returns.height} dates solved, "
                f"{meta['date_range'][0]} → {meta['date_range'][1]}",
            )
        )
        console.print(stages.table())
        console.print(f"wrote model folder {out}")


def _read_weights(path: Path, what: str) -> pl.DataFrame:
    """A weights file (.csv, or .parquet/.pq) with columns ``symbol, weight`` as ``symbol`` String, ``weight``
    Float64."""
    if not path.is_file():
        raise ValueError(f"cannot read {what} {path}: no such file")
    if path.suffix.lower() in PARQUET_SUFFIXES:
        frame = pl.read_parquet(path)
    else:
        frame = pl.read_csv(path, schema_overrides={SYMBOL: pl.String})
    missing = [c for c in (SYMBOL, "weight") if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} {path} lacks column(s) {missing}; it has {frame.columns}")
    return frame.select(pl.col(SYMBOL).cast(pl.String), pl.col("weight").cast(pl.Float64))


def _risk(value: float | None) -> str:
    """A risk figure (fraction) as a percentage with 3 decimals."""
    return _format(None if value is None else 100 * value, ".3f") + " %"


def _risk_summary_table(decomposition: RiskDecomposition, units: str) -> Table:
    table = Table(title=f"Risk ({units})", title_justify="left")
    table.add_column("")
    table.add_column("risk", justify="right")
    table.add_column("share of variance", justify="right")
    rows: list[tuple[str, float | None, str]] = [
        ("total risk", decomposition.total_risk, "100.0 %"),
        ("factor risk", decomposition.factor_risk, _percent(decomposition.factor_variance_share)),
        ("specific risk", decomposition.specific_risk, _percent(decomposition.specific_variance_share)),
    ]
    if decomposition.tracking_error is not None:
        rows.append(("tracking error", decomposition.tracking_error, ""))
    for label, value, share in rows:
        table.add_row(label, _risk(value), share)
    return table


def _factor_contribution_table(decomposition: RiskDecomposition, top: int) -> Table:
    contributions = decomposition.factor_contributions.sort(pl.col("contribution").abs(), descending=True).head(top)
    table = Table(
        title=f"Top {contributions.height} factor contributions (x·σ·ρ, sum = factor risk)", title_justify="left"
    )
    for heading in ("factor", "exposure", "vol", "corr", "x·σ·ρ", "% var"):
        table.add_column(heading, justify="left" if heading == "factor" else "right", no_wrap=heading == "factor")
    for factor, exposure, vol, corr, contribution, share in contributions.iter_rows():
        table.add_row(
            Text(factor),
            _format(exposure, ".3f"),
            _risk(vol),
            _format(corr, ".3f"),
            _risk(contribution),
            _percent(share),
        )
    return table


def _asset_contribution_table(decomposition: RiskDecomposition, top: int, active: bool) -> Table:
    contributions = decomposition.asset_contributions.sort(pl.col("contribution").abs(), descending=True).head(top)
    table = Table(
        title=f"Top {contributions.height} asset contributions (all sum to total risk)",
        title_justify="left",
    )
    for heading in ("symbol", "active weight" if active else "weight", "mcr", "contribution", "share"):
        table.add_column(heading, justify="left" if heading == "symbol" else "right")
    for symbol, weight, mcr, contribution, share in contributions.iter_rows():
        weight_text = _format(100 * weight, ".2f") + " %"
        table.add_row(Text(symbol), weight_text, _risk(mcr), _risk(contribution), _percent(share))
    return table


@app.command()
def risk(
    model_dir: Annotated[Path, typer.Option("--model", "-m", help="Model folder written by factor-engine build.")],
    portfolio: Annotated[
        Path, typer.Option("--portfolio", "-p", help="Weights file (.csv or .parquet): symbol, weight (fractions).")
    ],
    benchmark: Annotated[
        Path | None,
        typer.Option("--benchmark", "-b", help="Benchmark weights (symbol, weight): decompose the active weights."),
    ] = None,
    date: Annotated[
        str | None,
        typer.Option("--date", help="YYYY-MM-DD: the model as of that close (default: the last forecast date)."),
    ] = None,
    annualize: Annotated[
        bool,
        typer.Option("--annualize/--daily", help=f"Annualized (daily × √{TRADING_DAYS_PER_YEAR}) or daily figures."),
    ] = True,
    drop_unknown: Annotated[
        bool, typer.Option("--drop-unknown", help="Drop symbols the model does not cover (default: error).")
    ] = False,
    top: Annotated[int, typer.Option("--top", help="Rows of the factor and asset contribution tables.")] = 10,
    verbose: Verbose = False,
) -> None:
    """Decompose a portfolio's risk (or its tracking error against a benchmark) with a built risk model.

    Takes the model as of the close of --date (exposures, factor covariance, specific risk) and prints
    total, factor and specific risk, the tracking error when --benchmark is given, the largest factor
    contributions (exposure x, vol σ and correlation ρ with the factor part: x·σ·ρ adds up to the factor
    risk) and the largest asset contributions. Weights are fractions of capital; a symbol the model does
    not cover on that date is an error unless --drop-unknown.

    Example:

        factor-engine risk --model model --portfolio weights.csv --benchmark bench.csv --date 2024-06-28
    """
    with _reported_errors(verbose):
        if top < 1:
            raise ValueError(f"--top must be at least 1, got {top}")
        weights = _read_weights(portfolio, "portfolio")
        bench = None if benchmark is None else _read_weights(benchmark, "benchmark")
        model = load_model(model_dir)
        snapshot = snapshot_at(model, date)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the dropped symbols are reported below
            try:
                decomposition = decompose_risk(snapshot, weights, bench, unknown="drop" if drop_unknown else "raise")
            except PortfolioError as error:
                raise PortfolioError(str(error).replace("pass unknown='drop'", "pass --drop-unknown")) from None
        if annualize:
            decomposition = decomposition.annualized(TRADING_DAYS_PER_YEAR)
        units = f"annualized: daily sd × √{TRADING_DAYS_PER_YEAR}" if annualize else "daily sd"
        day = date if date is not None else f"{forecast_dates(model)[-1]} (last forecast date)"
        console.print(
            Text.assemble(
                ("model: ", "bold"),
                f"{model_dir} as of {day}, {snapshot.n_assets:,} assets, {snapshot.n_factors} factors",
            ),
            soft_wrap=True,
        )
        if decomposition.dropped_symbols:
            dropped = decomposition.dropped_symbols
            shown = ", ".join(dropped[:5]) + (", ..." if len(dropped) > 5 else "")
            console.print(
                Text(f"dropped {len(dropped)} symbol(s) the model does not cover: {shown}", style="yellow"),
                soft_wrap=True,
            )
        console.print(_risk_summary_table(decomposition, units))
        console.print(_factor_contribution_table(decomposition, top))
        console.print(_asset_contribution_table(decomposition, top, active=bench is not None))


@app.command()
def validate(
    model_dir: Annotated[Path, typer.Option("--model", "-m", help="Model folder written by factor-engine build.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="The panel the model was built from (.parquet/.csv).")],
    portfolios: Annotated[int, typer.Option("--portfolios", help="Random long-only portfolios to test.")] = 100,
    window: Annotated[
        int, typer.Option("--window", help="Days of the rolling windows (sample covariance, MRAD).")
    ] = 252,
    compare: Annotated[
        bool,
        typer.Option("--compare/--no-compare", help="Also test the rolling sample covariance and Ledoit-Wolf."),
    ] = True,
    verbose: Verbose = False,
) -> None:
    """Out-of-sample validation of a risk model by bias statistics (Barra USE4 Appendix A).

    For every forecast date t, b = R(t+1) / σ(t); the bias statistic B is the std of b over the test period,
    inside its 95 % band 1 ± √(2/T) when the forecast is right. Tested under the model: pure factor
    portfolios, random long-only portfolios, single assets and the eigenfactor portfolios of each forecast;
    with --compare, the random portfolios and assets under the rolling sample covariance of asset returns and
    its Ledoit-Wolf shrinkage; then the realized volatility of long-only minimum-variance portfolios built
    from each (lower is better).

    Example:

        factor-engine validate --model model --data panel.parquet --portfolios 100
    """
    with _reported_errors(verbose):
        stages = _Stages(total=4 if compare else 3)
        with stages.run(f"load model {model_dir} and panel {data}"):
            model = load_model(model_dir)
            returns = load_panel(data).select(DATE, SYMBOL, RETURNS)
        rows: list[tuple[str, dict[str, Any]]] = []
        with stages.run("bias statistics under the model"):
            under_model = validation.model_bias_summary(
                model, returns, n_portfolios=portfolios, window=window, eigenfactors=True
            )
            rows.extend(("model", row) for row in under_model.iter_rows(named=True))
        sources: tuple[validation.MinVarianceSource, ...] = ("model",)
        if compare:
            with stages.run("bias statistics of sample covariance and Ledoit-Wolf"):
                for label, shrink in (("sample covariance", "none"), ("Ledoit-Wolf", "ledoit_wolf")):
                    for name, target in (("random portfolios", "portfolios"), ("single assets", "assets")):
                        frame = validation.sample_covariance_bias(
                            returns,
                            window=window,
                            shrink=shrink,  # type: ignore[arg-type]
                            target=target,  # type: ignore[arg-type]
                            n_portfolios=portfolios,
                        )
                        rows.append((label, {"tested": name, **validation.summarize_bias(frame).row(0, named=True)}))
            sources = ("model", "sample", "ledoit_wolf")
        with stages.run("minimum-variance portfolios"):
            realized = validation.min_variance_realized_vol(returns, model=model, sources=sources, window=window)

        table = Table(title="Bias statistics (1 = forecast right; band 1 ± √(2/T))")
        for column in ("forecast", "tested", "count", "mean B", "median B", "in band", "mean MRAD"):
            table.add_column(column, justify="left" if column in ("forecast", "tested") else "right")
        for source, summary in rows:
            table.add_row(
                source,
                summary["tested"],
                f"{summary['count']:,}",
                _format(summary["mean_bias"], ".3f"),
                _format(summary["median_bias"], ".3f"),
                _format(None if summary["fraction_in_band"] is None else 100 * summary["fraction_in_band"], ".0f")
                + " %",
                _format(summary["mean_mrad"], ".3f"),
            )
        console.print(table)
        vol_table = Table(title="Long-only minimum-variance portfolios (annualized)")
        for column in ("forecast", "realized vol", "forecast vol", "days", "rebalances"):
            vol_table.add_column(column, justify="left" if column == "forecast" else "right")
        for row in realized.iter_rows(named=True):
            vol_table.add_row(
                row["source"],
                _percent(row["realized_vol"] * math.sqrt(TRADING_DAYS_PER_YEAR)),
                _percent(row["forecast_vol"] * math.sqrt(TRADING_DAYS_PER_YEAR)),
                f"{row['n_days']:,}",
                f"{row['n_rebalances']:,}",
            )
        console.print(vol_table)
        console.print(stages.table())


def _write_demo_report(model: RiskModel, panel: pl.DataFrame, out: Path) -> Path:
    """The demo's report: an equal-weight portfolio of the last forecast date's assets against their
    cap-weighted benchmark, with the model's bias statistics."""
    snapshot = snapshot_at(model)
    day = forecast_dates(model)[-1]
    symbols = list(snapshot.symbols)
    portfolio = {symbol: 1.0 / len(symbols) for symbol in symbols}
    caps = panel.filter((pl.col(DATE) == day) & pl.col(SYMBOL).is_in(symbols)).select(SYMBOL, MARKET_CAP)
    benchmark = caps.select(SYMBOL, (pl.col(MARKET_CAP) / pl.col(MARKET_CAP).sum()).alias("weight"))
    bias = bias_statistics(model, panel.select(DATE, SYMBOL, RETURNS))
    return write_report(
        model, out, portfolio=portfolio, benchmark=benchmark, bias=bias, title="Factor Engine demo risk model"
    )


@app.command()
def report(
    model_dir: Annotated[Path, typer.Option("--model", "-m", help="Model folder written by factor-engine build.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write (.html or .htm).")],
    portfolio: Annotated[
        Path | None,
        typer.Option("--portfolio", "-p", help="Weights file (.csv or .parquet): symbol, weight (fractions)."),
    ] = None,
    benchmark: Annotated[
        Path | None,
        typer.Option("--benchmark", "-b", help="Benchmark weights (symbol, weight): show active exposures and risk."),
    ] = None,
    date: Annotated[
        str | None,
        typer.Option("--date", help="YYYY-MM-DD: the snapshot date (default: the last forecast date)."),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option("--data", "-d", help="The panel the model was built from (.parquet/.csv), for --validate."),
    ] = None,
    run_validation: Annotated[
        bool,
        typer.Option("--validate/--no-validate", help="Add the bias statistics (needs --data)."),
    ] = False,
    portfolios: Annotated[int, typer.Option("--portfolios", help="--validate: random portfolios to test.")] = 100,
    window: Annotated[int, typer.Option("--window", help="--validate: days of the MRAD windows.")] = 252,
    title: Annotated[str | None, typer.Option("--title", help="Heading of the report.")] = None,
    verbose: Verbose = False,
) -> None:
    """Write a self-contained interactive HTML report of a built risk model (works offline).

    Shows the model summary, cumulative factor returns by family, rolling factor volatility, the factor
    correlations and style score distributions at --date, the regression diagnostics, and with --portfolio
    its factor exposures and risk decomposition (active against --benchmark). With --data and --validate it
    runs the model's bias statistics (pure factor portfolios, random portfolios, single assets) and shows
    them. Weights are fractions of capital; a symbol the model does not cover on the date is an error.

    Example:

        factor-engine report --model model --portfolio weights.csv --benchmark bench.csv --out report.html

        factor-engine report --model model --date 2024-06-28 --data panel.parquet --validate --out report.html
    """
    with _reported_errors(verbose):
        if out.suffix.lower() not in HTML_SUFFIXES:
            raise ValueError(f"cannot write the report to {out}: use a .html or .htm file name")
        if run_validation and data is None:
            raise ValueError("--validate needs --data: the panel the model was built from")
        if data is not None and not run_validation:
            raise ValueError("--data is only used with --validate: add --validate or drop --data")
        if benchmark is not None and portfolio is None:
            raise ValueError("--benchmark needs --portfolio")
        stages = _Stages(total=4 if run_validation else 2)
        with stages.run(f"load model {model_dir}"):
            model = load_model(model_dir)
            weights = None if portfolio is None else _read_weights(portfolio, "portfolio")
            bench = None if benchmark is None else _read_weights(benchmark, "benchmark")
        bias = None
        if run_validation and data is not None:
            with stages.run(f"load panel {data}"):
                returns = load_panel(data).select(DATE, SYMBOL, RETURNS)
            with stages.run("bias statistics"):
                bias = bias_statistics(model, returns, n_portfolios=portfolios, window=window)
        with stages.run(f"write report {out}"):
            written = write_report(model, out, date=date, portfolio=weights, benchmark=bench, bias=bias, title=title)
        console.print(stages.table())
        console.print(
            Text.assemble(("report: ", "bold"), f"{written} ({written.stat().st_size / 1e6:.1f} MB)"), soft_wrap=True
        )


@app.command()
def synthetic(
    out: Annotated[Path, typer.Option("--out", "-o", help="Panel file to write (.parquet, .pq or .csv).")],
    assets: Annotated[int, typer.Option("--assets", help="Distinct assets over the whole history.")] = 500,
    days: Annotated[int, typer.Option("--days", help="Business days.")] = 756,
    seed: Annotated[int, typer.Option("--seed", help="Seed; the same seed writes the same panel.")] = 0,
    truth_dir: Annotated[
        Path | None,
        typer.Option("--truth-dir", help="Also write the true factor returns, exposures, ... here as Parquet."),
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Write a seeded synthetic panel that follows the data contract (and optionally its known truth).

    The truth directory receives factor_returns, exposures, specific_returns, specific_vol,
    factor_vol_multiplier, sector_weights and factor_covariance (rows and columns in factor order).

    Example:

        factor-engine synthetic --assets 500 --days 756 --seed 0 --out panel.parquet --truth-dir truth
    """
    with _reported_errors(verbose):
        _check_output_file(out)
        stages = _Stages()
        with stages.run("generate synthetic market"):
            market = generate_market(assets, days, seed=seed)
        with stages.run("write files"):
            written = [_write_frame(market.panel, out)]
            if truth_dir is not None:
                written += _write_frames(_truth_frames(market.truth), truth_dir)
        console.print(Text.assemble(("panel: ", "bold"), _panel_summary(market.panel), f" (seed {seed})"))
        _print_written(written)


DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="FACTOR_ENGINE_DATABASE_URL",
        help="Store URL (sqlite:///file.db or postgresql://...); default sqlite:///factor_engine.db.",
        show_default=False,
    ),
]
DatabaseSchema = Annotated[
    str | None,
    typer.Option("--schema", envvar="FACTOR_ENGINE_DATABASE_SCHEMA", help="PostgreSQL schema of the store tables."),
]


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log every request (costs latency under load).")
    ] = False,
    database_url: DatabaseUrl = None,
    schema: DatabaseSchema = None,
    verbose: Verbose = False,
) -> None:
    """Run the REST service (uvicorn) on the configured store, under /api/v1/factor-engine (docs at /docs).

    Reads its settings from the environment: FACTOR_ENGINE_DATABASE_URL, FACTOR_ENGINE_DATABASE_SCHEMA,
    REDIS_URL (response cache), FACTOR_ENGINE_API_KEY, FACTOR_ENGINE_MAX_BODY_BYTES,
    FACTOR_ENGINE_SYNC_BUILD_MAX_ROWS and FACTOR_ENGINE_CACHE_TTL_SECONDS.

    Example:

        factor-engine serve --host 0.0.0.0 --port 8000
    """
    with _reported_errors(verbose):
        import uvicorn

        from factor_engine.service import Settings, create_app

        overrides = {"database_url": database_url, "database_schema": schema}
        settings = Settings().model_copy(update={key: value for key, value in overrides.items() if value is not None})
        # one process: the build worker and the snapshot cache live in it (several workers would each fail the
        # others' running builds as interrupted at start-up)
        uvicorn.run(create_app(settings), host=host, port=port, log_level="info", access_log=access_log)


@app.command()
def ingest(
    panel_path: Annotated[
        Path,
        typer.Argument(
            metavar="PANEL", help="Panel file (.parquet, .pq or .csv): date, symbol and any of the contract columns."
        ),
    ],
    database_url: DatabaseUrl = None,
    schema: DatabaseSchema = None,
    verbose: Verbose = False,
) -> None:
    """Load a panel file into the store (upsert by date and symbol).

    The file needs date and symbol; the other contract columns it has (asset_returns, market_cap, sector,
    book_price, sales_price, cf_price) are validated and stored, and stored columns it lacks are left as
    they are. Prints the rows inserted and updated, symbols, date range and seconds.

    Example:

        factor-engine ingest --database-url sqlite:///factors.db panel.parquet
    """
    with _reported_errors(verbose):
        from factor_engine.storage import connect

        started = time.perf_counter()
        panel = load_panel(panel_path, require=(DATE, SYMBOL))
        store = connect(database_url, schema=schema)
        try:
            result = store.ingest_panel(panel)
            where = store.describe()
        finally:
            store.close()
        console.print(
            Text.assemble(
                ("ingested: ", "bold"),
                f"{result.rows:,} rows ({result.inserted:,} inserted, {result.updated:,} updated), "
                f"{result.symbols:,} symbols, {result.first_date} → {result.last_date}, "
                f"{time.perf_counter() - started:.2f} seconds",
            ),
            soft_wrap=True,
        )
        console.print(Text(f"store: {where}"), soft_wrap=True)


def _truth_frames(truth: SyntheticTruth) -> dict[str, pl.DataFrame]:
    covariance = pl.DataFrame(
        {"factor": list(truth.factors)} | {name: truth.factor_covariance[:, k] for k, name in enumerate(truth.factors)}
    )
    return {
        "factor_returns": truth.factor_returns,
        "exposures": truth.exposures,
        "specific_returns": truth.specific_returns,
        "specific_vol": truth.specific_vol,
        "factor_vol_multiplier": truth.factor_vol_multiplier,
        "sector_weights": truth.sector_weights,
        "factor_covariance": covariance,
    }


def main() -> None:
    """Entry point of the ``factor-engine`` console script."""
    app()


if __name__ == "__main__":
    main()
