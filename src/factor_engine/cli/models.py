"""``factor-engine build``, ``update``, ``risk``, ``validate`` and ``report``: risk model folders and what is read
from them."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Annotated, Any

import polars as pl
import typer
from rich.table import Table
from rich.text import Text

from factor_engine.cli._common import (
    BUILD_MODEL_STAGES,
    TRADING_DAYS_PER_YEAR,
    DataPath,
    Verbose,
    _format,
    _panel_summary,
    _percent,
    _reported_errors,
    _Stages,
    app,
    console,
)
from factor_engine.config import load_config
from factor_engine.model import RiskModel, build_model, load_model
from factor_engine.panel import (
    DATE,
    PARQUET_SUFFIXES,
    RETURNS,
    SYMBOL,
    load_panel,
)
from factor_engine.portfolio import PortfolioError, RiskDecomposition, decompose_risk
from factor_engine.portfolio.analytics import ALLOW_UNNORMALIZED_HINT
from factor_engine.portfolio.snapshot import forecast_dates, snapshot_at
from factor_engine.report import bias_statistics, write_report
from factor_engine.report.html import HTML_SUFFIXES
from factor_engine.risk import validation

AllowUnnormalized = Annotated[
    bool,
    typer.Option(
        "--allow-unnormalized",
        help="Accept weights that do not look like a fully invested book (long-short, leveraged, in percent on "
        "purpose): no check and no warning.",
    ),
]


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

    Runs validation, universe selection, style scores, factor returns, the factor covariance and specific risk
    as configured, and writes them as Parquet files (one folder per table), plus model.json listing them with
    the effective configuration, factor list, date range, units, engine version and what the build did with
    the data. Without a configuration the model follows the data: every style whose input columns the panel
    has, the panel's own sector labels, equal weights when there is no market_cap column (or no cap in it), the
    rows without a market cap left out; what was left out, and why, is printed.

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
                f"{', '.join(model.styles) or 'none'}), {model.factor_returns.height} dates solved, "
                f"{meta['date_range'][0]} → {meta['date_range'][1]}",
            )
        )
        print_build_notes(model)
        console.print(stages.table())
        console.print(f"wrote model folder {out}")


@app.command()
def update(
    model_dir: Annotated[Path, typer.Option("--model", "-m", help="Model folder to extend (written in place).")],
    data: DataPath,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write the extended model to this folder instead (the model is kept)."),
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Extend a model by the dates of a panel after its last date, without a rebuild.

    The result equals a build on the whole panel: the styles are recomputed on the recent rows their
    look-backs need, each new date's regression is the build's, and the factor covariance and specific risk
    continue from the state saved with the model. The panel may hold the whole history or only its recent
    rows: from the history start the command prints (about a year and a month with the default styles) and
    each asset's latest row before the new dates. The new dates are appended; nothing saved is rewritten, and
    the model folder is replaced atomically. Rows without a market cap are left out, as the build leaves them
    out, and a warning counts those of the new dates. A new sector label or style factor needs a rebuild: the
    command says so.

    Example:

        factor-engine update --model model --data panel.parquet
    """
    from factor_engine.update import update_model

    with _reported_errors(verbose):
        stages = _Stages(total=8)
        with stages.run(f"load panel {data}"):
            panel = load_panel(data)
        result = update_model(model_dir, panel, out=out, stage=stages.run)
        if not result.new_dates:
            console.print(f"the model in {model_dir} already ends on or after the panel's last date: nothing to add")
            return
        console.print(
            Text.assemble(
                ("added: ", "bold"),
                f"{len(result.new_dates)} date(s), {result.new_dates[0]} → {result.new_dates[-1]}; styles "
                f"recomputed from {result.history_start}",
            )
        )
        for warning in result.warnings:
            console.print(Text(f"warning: {warning}", style="yellow"), soft_wrap=True)
        console.print(stages.table())
        console.print(f"wrote model folder {result.folder}")


def _annualized(daily_vol: float | None) -> str:
    """A daily volatility (fraction) as an annualized percentage; ``n/a`` when missing."""
    return "n/a" if daily_vol is None else _percent(daily_vol * math.sqrt(TRADING_DAYS_PER_YEAR))


def print_build_notes(model: RiskModel) -> None:
    """What the build did with the data: market cap use, universe, sectors, styles used and left out, factors
    left out (from ``model.notes``), then each warning as a yellow ``warning:`` line."""
    notes = model.notes
    if not notes:
        return
    table = Table(title="What the build did with the data", title_justify="left", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("market cap", notes.get("market_cap", ""))
    table.add_row("universe", notes.get("universe", ""))
    sectors = notes.get("sectors", {})
    labels = sectors.get("labels", list(model.sectors))
    table.add_row("sectors", f"{len(labels)}: " + ", ".join(labels))
    if sectors.get("relabelled"):
        table.add_row("relabelled", ", ".join(f"{old} → {new}" for old, new in sectors["relabelled"].items()))
    styles_note = notes.get("styles", {})
    table.add_row("styles", ", ".join(styles_note.get("used", [])) or "none")
    for name, reason in styles_note.get("skipped", {}).items():
        table.add_row("style left out", f"{name}: {reason}")
    for name, reason in notes.get("factors_dropped", {}).items():
        table.add_row("factor left out", f"{name}: {reason}")
    console.print(table)
    for warning in model.warnings:
        console.print(Text(f"warning: {warning}", style="yellow"), soft_wrap=True)


def _read_weights(path: Path, what: str, column: str = "weight") -> pl.DataFrame:
    """A weights file (.csv, or .parquet/.pq) with columns ``symbol, weight`` (or ``symbol, <column>``) as
    ``symbol`` String and the values Float64."""
    if not path.is_file():
        raise ValueError(f"cannot read {what} {path}: no such file")
    if path.suffix.lower() in PARQUET_SUFFIXES:
        frame = pl.read_parquet(path)
    else:
        frame = pl.read_csv(path, schema_overrides={SYMBOL: pl.String})
    missing = [c for c in (SYMBOL, column) if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} {path} lacks column(s) {missing}; it has {frame.columns}")
    return frame.select(pl.col(SYMBOL).cast(pl.String), pl.col(column).cast(pl.Float64))


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
    allow_unnormalized: AllowUnnormalized = False,
    verbose: Verbose = False,
) -> None:
    """Decompose a portfolio's risk (or its tracking error against a benchmark) with a built risk model.

    Takes the model as of the close of --date (exposures, factor covariance, specific risk) and prints
    total, factor and specific risk, the tracking error when --benchmark is given, the largest factor
    contributions (exposure x, vol σ and correlation ρ with the factor part: x·σ·ρ adds up to the factor
    risk) and the largest asset contributions. Weights are fractions of capital; a symbol the model does
    not cover on that date is an error unless --drop-unknown. Weights that look like percentages (a sum or
    a weight above 1.5 in absolute value) are an error and weights not summing to 1 are warned about,
    unless --allow-unnormalized.

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
                decomposition = decompose_risk(
                    snapshot,
                    weights,
                    bench,
                    unknown="drop" if drop_unknown else "raise",
                    allow_unnormalized=allow_unnormalized,
                )
            except PortfolioError as error:
                message = str(error).replace("pass unknown='drop'", "pass --drop-unknown")
                raise PortfolioError(message.replace(ALLOW_UNNORMALIZED_HINT, "pass --allow-unnormalized")) from None
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
        for warning in decomposition.warnings:
            shown = warning.replace(ALLOW_UNNORMALIZED_HINT, "pass --allow-unnormalized")
            console.print(Text(f"warning: {shown}", style="yellow"), soft_wrap=True)
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
                _annualized(row["realized_vol"]),
                _annualized(row["forecast_vol"]),
                f"{row['n_days']:,}",
                f"{row['n_rebalances']:,}",
            )
        console.print(vol_table)
        console.print(stages.table())


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
    allow_unnormalized: AllowUnnormalized = False,
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
            try:
                written = write_report(
                    model,
                    out,
                    date=date,
                    portfolio=weights,
                    benchmark=bench,
                    bias=bias,
                    title=title,
                    allow_unnormalized=allow_unnormalized,
                )
            except PortfolioError as error:
                raise PortfolioError(str(error).replace(ALLOW_UNNORMALIZED_HINT, "pass --allow-unnormalized")) from None
        console.print(stages.table())
        console.print(
            Text.assemble(("report: ", "bold"), f"{written} ({written.stat().st_size / 1e6:.1f} MB)"), soft_wrap=True
        )
