"""Tests for the ``factor-engine`` command line: its files equal the library's results, its errors are one line."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import typer
from polars.testing import assert_frame_equal

from cli_runner import invoke
from factor_engine import estimate_factor_returns, load_panel, styles, validate_panel
from factor_engine.cli import TRUE_EXPOSURES_COLUMN, app
from factor_engine.regression import FactorReturns
from factor_engine.synthetic import SyntheticMarket, generate_market

N_ASSETS, N_DAYS, SEED = 120, 300, 3
STYLES = ["momentum", "value", "size"]
RESULT_FILES = ("factor_returns", "residuals", "diagnostics")


def estimate(panel: pl.DataFrame, style_df: pl.DataFrame, **options: object) -> FactorReturns:
    """The library call the CLI is expected to make: sector labels, returns and caps from the panel."""
    return estimate_factor_returns(
        panel.select("date", "symbol", "asset_returns"),
        panel.select("date", "symbol", "market_cap"),
        panel.select("date", "symbol", "sector"),
        style_df,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def market() -> SyntheticMarket:
    return generate_market(N_ASSETS, N_DAYS, seed=SEED)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "out"
    code, stdout, stderr = invoke(
        "demo", "--assets", str(N_ASSETS), "--days", str(N_DAYS), "--seed", str(SEED), "--out", str(out)
    )
    assert code == 0, stderr
    return out, stdout


def test_demo_writes_the_library_results(demo_run: tuple[Path, str], market: SyntheticMarket) -> None:
    out, _ = demo_run
    panel = validate_panel(market.panel)
    scores = styles.compute_styles(panel, STYLES)
    expected = estimate(panel, scores, method="barra")
    assert expected.factor_returns.height > 0
    assert_frame_equal(pl.read_parquet(out / "factor_returns.parquet"), expected.factor_returns)
    assert_frame_equal(pl.read_parquet(out / "residuals.parquet"), expected.residuals)
    assert_frame_equal(pl.read_parquet(out / "diagnostics.parquet"), expected.diagnostics)
    assert_frame_equal(pl.read_parquet(out / "style_scores.parquet"), scores)


def _table_row(stdout: str, label: str) -> list[str]:
    """Cells of the Rich table row whose first cell is ``label``."""
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if cells and cells[0] == label:
            return cells
    raise AssertionError(f"no table row {label!r} in:\n{stdout}")


def test_demo_summary_reports_the_comparison_with_truth(demo_run: tuple[Path, str], market: SyntheticMarket) -> None:
    out, stdout = demo_run
    panel = validate_panel(market.panel)
    assert f"{panel.height:,} rows, {N_ASSETS} assets, {N_DAYS} dates" in stdout
    for heading in (*TRUE_EXPOSURES_COLUMN.split(" ("), "mean R²", "median condition number", "Seconds per stage"):
        assert heading in stdout
    for name in ("factor_returns", "residuals", "diagnostics", "style_scores"):
        assert str(out / f"{name}.parquet") in stdout
    # momentum warms up while the other factors are estimated: the short demo still has forecasts and a report
    assert "note: no report" not in stdout
    assert (out / "report.html").is_file()

    # the printed correlations, recomputed from the library's outputs and the truth
    truth = market.truth.factor_returns
    from_scores = estimate(panel, styles.compute_styles(panel, STYLES), method="barra").factor_returns
    from_exposures = estimate(panel, market.truth.exposures, method="barra").factor_returns
    for factor, score in (("market", "market"), ("value", "val_score")):
        cells = _table_row(stdout, factor if factor == score else f"{factor} ({score})")
        for estimated, column, cell in ((from_scores, score, cells[3]), (from_exposures, factor, cells[4])):
            joined = estimated.select("date", pl.col(column).alias("estimated")).join(truth, on="date")
            correlation = np.corrcoef(joined["estimated"].to_numpy(), joined[factor].to_numpy())[0, 1]
            assert cell == f"{correlation:.3f}"
        volatility = np.std(from_scores[score].to_numpy(), ddof=1) * math.sqrt(252)
        assert cells[1] == f"{100 * volatility:.1f} %"
    # with the true exposures the style factors are recovered closely
    assert float(_table_row(stdout, "momentum (mom_score)")[4]) > 0.8


@pytest.fixture(scope="module")
def synthetic_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("synthetic")
    code, _, stderr = invoke(
        "synthetic",
        "--assets",
        "80",
        "--days",
        "300",
        "--seed",
        "5",
        "--out",
        str(directory / "panel.parquet"),
        "--truth-dir",
        str(directory / "truth"),
    )
    assert code == 0, stderr
    return directory


def test_synthetic_writes_the_generated_market(synthetic_files: Path) -> None:
    market = generate_market(80, 300, seed=5)
    assert_frame_equal(pl.read_parquet(synthetic_files / "panel.parquet"), market.panel)
    assert_frame_equal(
        pl.read_parquet(synthetic_files / "truth" / "factor_returns.parquet"), market.truth.factor_returns
    )
    assert_frame_equal(pl.read_parquet(synthetic_files / "truth" / "exposures.parquet"), market.truth.exposures)
    covariance = pl.read_parquet(synthetic_files / "truth" / "factor_covariance.parquet")
    assert covariance["factor"].to_list() == list(market.truth.factors)
    np.testing.assert_array_equal(covariance.drop("factor").to_numpy(), market.truth.factor_covariance)


def test_synthetic_csv_loads_back_to_the_same_panel(tmp_path: Path) -> None:
    code, _, stderr = invoke("synthetic", "--assets", "20", "--days", "15", "--out", str(tmp_path / "panel.csv"))
    assert code == 0, stderr
    assert_frame_equal(load_panel(tmp_path / "panel.csv"), validate_panel(generate_market(20, 15, seed=0).panel))


def test_styles_command_equals_library(synthetic_files: Path, tmp_path: Path) -> None:
    data, out = synthetic_files / "panel.parquet", tmp_path / "scores.parquet"
    code, stdout, stderr = invoke(
        "styles",
        "--data",
        str(data),
        "--out",
        str(out),
        "--styles",
        "momentum,size",
        "--trailing-days",
        "60",
        "--half-life",
        "30",
        "--lag",
        "5",
        "--winsor-factor",
        "0.02",
    )
    assert code == 0, stderr
    params = {"momentum": {"trailing_days": 60, "half_life": 30.0, "lag": 5, "winsor_factor": 0.02}}
    expected = styles.compute_styles(load_panel(data), ["momentum", "size"], params=params)
    written = pl.read_parquet(out)
    assert written.columns == ["date", "symbol", "mom_score", "sze_score"]
    assert written["mom_score"].null_count() < written.height
    assert_frame_equal(written, expected)
    assert str(out) in stdout


@pytest.mark.parametrize(
    ("options", "library_options"),
    [
        ([], {"method": "barra"}),
        (
            ["--method", "toraniko", "--exposure-lag", "1", "--winsor-factor", "0.1", "--no-residualize-styles"],
            {"method": "toraniko", "exposure_lag": 1, "winsor_factor": 0.1, "residualize_styles": False},
        ),
    ],
    ids=["barra-defaults", "toraniko-options"],
)
def test_factor_returns_command_equals_library(
    synthetic_files: Path, tmp_path: Path, options: list[str], library_options: dict[str, object]
) -> None:
    data = synthetic_files / "panel.parquet"
    code, stdout, stderr = invoke("factor-returns", "--data", str(data), "--out", str(tmp_path), *options)
    assert code == 0, stderr
    panel = load_panel(data)
    expected = estimate(panel, styles.compute_styles(panel, STYLES), **library_options)
    assert expected.factor_returns.height > 0
    for name in RESULT_FILES:
        assert_frame_equal(pl.read_parquet(tmp_path / f"{name}.parquet"), getattr(expected, name))
    assert f"dates solved: {expected.factor_returns.height} of {expected.diagnostics.height} return dates" in stdout
    assert f"method {expected.method}, exposure_lag {expected.exposure_lag}" in stdout
    for reason, n_rows in expected.excluded.iter_rows():
        assert reason[:20] in stdout  # a long reason may wrap inside its table cell
        assert f"{n_rows:,}" in stdout


@pytest.fixture
def bad_panel(tmp_path: Path) -> Path:
    """A CSV panel whose market_cap is negative in one row."""
    panel = generate_market(20, 10, seed=1).panel
    panel = panel.with_columns(
        pl.when(pl.int_range(pl.len()) == 7).then(-pl.col("market_cap")).otherwise("market_cap").alias("market_cap")
    )
    path = tmp_path / "bad.csv"
    panel.write_csv(path)
    return path


@pytest.mark.parametrize("command", ["styles", "factor-returns"])
def test_bad_panel_is_one_error_line(bad_panel: Path, tmp_path: Path, command: str) -> None:
    out = tmp_path / ("scores.parquet" if command == "styles" else "model")
    code, stdout, stderr = invoke(command, "--data", str(bad_panel), "--out", str(out))
    assert code == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: market_cap must be positive and finite")
    assert "1 bad row" in lines[0]
    assert "Traceback" not in stdout + stderr
    assert not out.exists()


def test_verbose_adds_the_traceback(bad_panel: Path, tmp_path: Path) -> None:
    code, _, stderr = invoke("styles", "--data", str(bad_panel), "--out", str(tmp_path / "s.parquet"), "--verbose")
    assert code == 1
    assert "Traceback" in stderr
    assert "PanelError" in stderr
    assert stderr.strip().splitlines()[-1].startswith("error: market_cap must be positive")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["styles", "--styles", "momentum,carry"], "error: no style factor named 'carry'"),
        (["styles", "--out", "scores.txt"], "error: cannot write scores.txt: unsupported suffix '.txt'"),
        (["factor-returns", "--exposure-lag", "-1"], "error: exposure_lag must be a non-negative integer"),
    ],
)
def test_parameter_errors(synthetic_files: Path, tmp_path: Path, args: list[str], message: str) -> None:
    command, *options = args
    out = ["--out", str(tmp_path / "out.parquet")] if "--out" not in options else []
    code, _, stderr = invoke(command, "--data", str(synthetic_files / "panel.parquet"), *out, *options)
    assert code == 1
    assert stderr.startswith(message), stderr


def test_missing_panel_file(tmp_path: Path) -> None:
    code, _, stderr = invoke("factor-returns", "--data", str(tmp_path / "none.parquet"), "--out", str(tmp_path))
    assert code == 1
    assert stderr.strip() == f"error: cannot read panel {tmp_path / 'none.parquet'}: no such file"


def test_demo_rejects_too_few_assets(tmp_path: Path) -> None:
    code, _, stderr = invoke("demo", "--assets", "5", "--days", "20", "--out", str(tmp_path))
    assert code == 1
    assert stderr.startswith("error: n_assets must be at least 11")


COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def test_every_command_is_covered() -> None:
    assert COMMANDS == [
        "backtest",
        "build",
        "delete-panel",
        "demo",
        "factor-returns",
        "ingest",
        "ingest-ib",
        "optimize",
        "prepare",
        "report",
        "risk",
        "serve",
        "styles",
        "synthetic",
        "update",
        "validate",
    ]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_an_example(command: str) -> None:
    code, stdout, _ = invoke(command, "--help")
    assert code == 0
    assert "Example:" in stdout
    assert f"factor-engine {command} --" in stdout


def test_build_writes_the_model_of_build_model(tmp_path: Path) -> None:
    from factor_engine.config import load_config
    from factor_engine.model import build_model, load_model

    panel_path = tmp_path / "panel.parquet"
    generate_market(120, 320, seed=4).panel.write_parquet(panel_path)
    config_path = tmp_path / "model.toml"
    config_path.write_text("[universe]\nsize = 100\n[styles.momentum]\ntrailing_days = 60\nlag = 5\n")
    code, out, err = invoke(
        "build", "--data", str(panel_path), "--out", str(tmp_path / "model"), "--config", str(config_path)
    )
    assert code == 0, err
    assert "wrote model folder" in out
    written = load_model(tmp_path / "model")
    expected = build_model(load_panel(panel_path), load_config(config_path))
    assert_frame_equal(written.factor_returns, expected.factor_returns)
    assert_frame_equal(written.exposures, expected.exposures)
    assert written.config["universe"]["size"] == 100
    code, _, err = invoke(
        "build", "--data", str(panel_path), "--out", str(tmp_path / "m2"), "--config", str(tmp_path / "x.toml")
    )
    assert code == 1
    assert "error: configuration file" in err and "does not exist" in err


def test_stages_show_a_progress_bar_and_stop_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a total, stages run under a Rich progress bar (stage name, stages done, elapsed time) that is stopped
    when the last stage ends, or when a stage fails."""
    import io
    import re

    from rich.console import Console

    from factor_engine.cli import _common as cli

    screen = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=screen, force_terminal=True, width=100))
    stages = cli._Stages(total=2)
    with stages.run("first stage"):
        pass
    assert len(cli._LIVE_PROGRESS) == 1
    with stages.run("second stage"):
        pass
    assert not cli._LIVE_PROGRESS
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())
    assert "first stage…" in text and "second stage…" in text
    assert "0/2" in text and "1/2" in text and "0:00:00" in text
    assert "✓ first stage" in text and "✓ second stage" in text
    assert list(stages.seconds) == ["first stage", "second stage"]

    failing = cli._Stages(total=3)
    with pytest.raises(RuntimeError, match="boom"), failing.run("doomed"):
        raise RuntimeError("boom")
    assert not cli._LIVE_PROGRESS and "doomed" not in failing.seconds


@pytest.mark.parametrize("with_shares", [True, False], ids=["volume and shares", "volume only"])
def test_prepare_prints_the_trading_columns(tmp_path: Path, with_shares: bool) -> None:
    """Long prices with volume keep it; with shares outstanding liquidity can use both, without them the line
    says what is missing."""
    days = ["2024-01-02", "2024-01-03", "2024-01-04"]
    prices = pl.DataFrame(
        {
            "date": days * 2,
            "symbol": ["AAA"] * 3 + ["BBB"] * 3,
            "close": [10.0, 11.0, 12.0, 20.0, 19.0, 21.0],
            "volume": [1000.0, 1200.0, 900.0, 500.0, 700.0, 650.0],
        }
    )
    prices.write_csv(tmp_path / "prices.csv")
    pl.DataFrame({"symbol": ["AAA", "BBB"], "sector": ["Energy", "Utilities"]}).write_csv(tmp_path / "sectors.csv")
    sizes = pl.DataFrame({"date": [days[0]] * 2, "symbol": ["AAA", "BBB"], "shares": [1e6, 2e6]})
    if with_shares:
        sizes.write_csv(tmp_path / "shares.csv")
        extra = ["--shares", str(tmp_path / "shares.csv")]
    else:
        sizes.rename({"shares": "market_cap"}).write_csv(tmp_path / "caps.csv")
        extra = ["--caps", str(tmp_path / "caps.csv")]
    out = tmp_path / "panel.parquet"
    code, stdout, stderr = invoke(
        "prepare", "--prices", str(tmp_path / "prices.csv"), "--sectors", str(tmp_path / "sectors.csv"), *extra,
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, stderr
    text = " ".join(stdout.split())
    if with_shares:
        assert (
            "trading columns: volume, shares_outstanding (liquidity's turnover = volume / shares_outstanding)" in text
        )
        assert load_panel(out).columns[-2:] == ["volume", "shares_outstanding"]
    else:
        assert "trading columns: volume (liquidity also needs shares outstanding: give --shares)" in text
        assert load_panel(out).columns[-1] == "volume"
