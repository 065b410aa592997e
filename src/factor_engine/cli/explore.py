"""``factor-engine demo``, ``styles``, ``factor-returns`` and ``synthetic``: the estimation steps on a panel
file and the synthetic market with its truth."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import polars as pl
import typer
from rich.table import Table
from rich.text import Text

from factor_engine import styles
from factor_engine.cli._common import (
    DEFAULT_STYLES,
    DataPath,
    Method,
    Verbose,
    _check_output_file,
    _excluded_table,
    _factor_table,
    _fit_summary,
    _fit_table,
    _format,
    _panel_summary,
    _print_written,
    _reported_errors,
    _result_frames,
    _score_exposure_correlation,
    _Stages,
    _style_names,
    _versus_truth,
    _write_frame,
    _write_frames,
    app,
    console,
)
from factor_engine.model import RiskModel, build_model
from factor_engine.panel import (
    DATE,
    MARKET_CAP,
    RETURNS,
    SYMBOL,
    load_panel,
    validate_panel,
)
from factor_engine.portfolio.snapshot import forecast_dates, snapshot_at
from factor_engine.regression import estimate_from_panel
from factor_engine.report import bias_statistics, write_report
from factor_engine.synthetic import SyntheticTruth, generate_market


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


class Taxonomy(StrEnum):
    """Named sector taxonomies of :data:`factor_engine.panel.TAXONOMIES` the ``synthetic`` command can draw."""

    gics = "gics"
    seed = "seed"


@app.command()
def synthetic(
    out: Annotated[Path, typer.Option("--out", "-o", help="Panel file to write (.parquet, .pq or .csv).")],
    assets: Annotated[int, typer.Option("--assets", help="Distinct assets over the whole history.")] = 500,
    days: Annotated[int, typer.Option("--days", help="Business days.")] = 756,
    seed: Annotated[int, typer.Option("--seed", help="Seed; the same seed writes the same panel.")] = 0,
    taxonomy: Annotated[
        Taxonomy,
        typer.Option(
            "--taxonomy",
            help="Sector labels of the panel: gics (the 11 GICS sectors) or seed (Basic Materials, ..., Utilities).",
        ),
    ] = Taxonomy.gics,
    truth_dir: Annotated[
        Path | None,
        typer.Option("--truth-dir", help="Also write the true factor returns, exposures, ... here as Parquet."),
    ] = None,
    style: Annotated[
        list[str] | None,
        typer.Option(
            "--style",
            help="A true style factor of the market, repeatable (default: momentum, value, size). USE4's "
            "beta, resvol, nlsize, liquidity, earnings_yield, growth, leverage, dividend_yield and btop add "
            "the columns their styles read (volume, shares_outstanding, earnings_price, ...).",
        ),
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Write a seeded synthetic panel that follows the data contract (and optionally its known truth).

    The sectors are those of --taxonomy: gics (default) or seed; the true factors are market, the
    sectors in taxonomy order, then the styles (--style, repeatable; default momentum, value and size). The
    truth directory receives factor_returns, exposures, specific_returns, specific_vol, factor_vol_multiplier,
    sector_weights, factor_covariance (rows and columns in factor order) and market_betas (each return's
    exact beta on the cap-weighted market).

    Example:

        factor-engine synthetic --assets 500 --days 756 --seed 0 --taxonomy seed --out panel.parquet --truth-dir truth
        factor-engine synthetic --out use4.parquet --style momentum --style size --style beta --style liquidity
    """
    with _reported_errors(verbose):
        _check_output_file(out)
        stages = _Stages()
        with stages.run("generate synthetic market"):
            styles = tuple(style) if style else ("momentum", "value", "size")
            market = generate_market(assets, days, seed=seed, sectors=taxonomy.value, styles=styles)
        with stages.run("write files"):
            written = [_write_frame(market.panel, out)]
            if truth_dir is not None:
                written += _write_frames(_truth_frames(market.truth), truth_dir)
        console.print(Text.assemble(("panel: ", "bold"), _panel_summary(market.panel), f" (seed {seed})"))
        _print_written(written)


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
        "market_betas": truth.market_betas,
    }
