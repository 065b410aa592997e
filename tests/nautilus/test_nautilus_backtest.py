"""FactorPortfolioStrategy in BacktestEngine (run_backtest and factor-engine backtest): it fills orders, keeps its
factor bounds, the guard denies what breaches its budget, and on a 150 × 900 market the minimum-variance book's
realized volatility matches the mean forecast."""

from __future__ import annotations

import json
import time
from pathlib import Path

import polars as pl
import pytest

from cli_runner import invoke
from factor_engine.integrations.nautilus import run_backtest
from factor_engine.model import RiskModel, build_model
from factor_engine.synthetic import generate_market

SUMMARY_KEYS = {
    "engine",
    "orders_filled",
    "orders_denied",
    "realized_vol",
    "forecast_vol",
    "vol_ratio",
    "turnover",
    "final_equity",
    "annualized_return",
    "max_abs_exposure",
}


def test_the_strategy_fills_orders_within_its_factor_bounds(small_model: RiskModel, small_panel: pl.DataFrame) -> None:
    calls: list[tuple[int, int]] = []
    result = run_backtest(
        small_model,
        small_panel,
        optimize={"factor_bounds": {"sze_score": [-0.1, 0.1]}},
        rebalance_days=10,
        guard_factor_bounds={"sze_score": (-0.12, 0.12)},
        progress=lambda done, total: calls.append((done, total)),
    )
    summary = result.summary
    assert set(summary) >= SUMMARY_KEYS
    assert summary["engine"].startswith("NautilusTrader 1.221")
    assert summary["orders_filled"] > 0 and summary["orders_denied"] == 0 and summary["orders_rejected"] == 0
    traded = result.rebalances.filter(pl.col("status") == "traded")
    assert traded.height == summary["rebalances"] > 10
    # right after each rebalance the book's size exposure is within the optimizer's bounds up to whole shares
    after = result.exposures.join(traded.select("date"), on="date", how="semi").get_column("sze_score")
    assert after.len() == traded.height and after.abs().max() < 0.1 + 0.01
    assert calls[-1] == (small_panel.get_column("date").n_unique(),) * 2
    curve = result.equity_curve
    assert curve.get_column("invested").max() <= 1.0 and curve.get_column("invested").tail(1).item() > 0.95
    assert summary["final_equity"] == pytest.approx(curve.get_column("equity").tail(1).item())


def test_the_guard_denies_a_rebalance_over_its_risk_budget(small_model: RiskModel, small_panel: pl.DataFrame) -> None:
    result = run_backtest(small_model, small_panel, rebalance_days=30, guard_max_risk=0.01)
    summary = result.summary
    assert summary["orders_filled"] == 0
    assert summary["orders_denied"] == result.rebalances.get_column("orders").sum() > 0
    assert set(result.rebalances.get_column("status")) == {"denied"}
    for reasons in result.rebalances.get_column("reasons"):
        assert reasons.startswith("risk would be") and "above the budget 1.00 %" in reasons
    assert summary["final_equity"] == pytest.approx(1_000_000.0)


def test_backtest_command_writes_every_file(small_files: Path, tmp_path: Path) -> None:
    out = tmp_path / "bt"
    code, stdout, stderr = invoke(
        "backtest", "--model", str(small_files / "model"), "--data", str(small_files / "panel.parquet"),
        "--out", str(out), "--rebalance-days", "15", "--factor-bounds", "sze_score=-0.2:0.2", "--max-weight", "0.1",
    )  # fmt: skip
    assert code == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) >= SUMMARY_KEYS and summary["orders_filled"] > 0
    assert summary["strategy"]["factor_bounds"] == {"sze_score": [-0.2, 0.2]} and summary["strategy"]["long_only"]
    assert summary["guard"]["factor_bounds"] == {"sze_score": [-0.22, 0.22]}
    assert set(summary["max_abs_exposure"]) == set(pl.read_parquet(out / "exposures.parquet").columns) - {"date"}
    curve = pl.read_parquet(out / "equity_curve.parquet")
    assert curve.columns[:4] == ["date", "equity", "invested", "daily_return"]
    assert pl.read_parquet(out / "rebalances.parquet").height == summary["rebalances"]
    page = (out / "report.html").read_text()
    assert "id='backtest'" in page and 'data-chart="backtest-equity"' in page
    assert "run time:" in stdout and "orders filled" in stdout


def test_backtest_command_names_a_bad_option(small_files: Path, tmp_path: Path) -> None:
    code, _, stderr = invoke(
        "backtest", "-m", str(small_files / "model"), "-d", str(small_files / "panel.parquet"), "-o", str(tmp_path),
        "--rebalance-days", "0",
    )  # fmt: skip
    assert code == 1 and "--rebalance-days must be at least 1" in stderr
    code, _, stderr = invoke(
        "backtest", "-m", str(small_files / "model"), "-d", str(small_files / "panel.parquet"), "-o", str(tmp_path),
        "--strategy", "min-tracking-error",
    )  # fmt: skip
    assert code == 1 and "objective min-tracking-error needs --benchmark" in stderr


@pytest.mark.slow
def test_min_variance_on_150_assets_and_900_days(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    panel = generate_market(150, 900, seed=7).panel
    panel.write_parquet(tmp_path / "panel.parquet")
    build_model(panel).save(tmp_path / "model")
    started = time.perf_counter()
    code, stdout, stderr = invoke(
        "backtest", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "panel.parquet"),
        "--out", str(tmp_path / "bt"), "--strategy", "min-variance", "--rebalance-days", "21",
    )  # fmt: skip
    seconds = time.perf_counter() - started
    assert code == 0, stderr
    summary = json.loads((tmp_path / "bt" / "summary.json").read_text())
    ratio = summary["realized_vol"] / summary["forecast_vol"]
    with capsys.disabled():
        print(
            f"\n150 x 900 backtest: {seconds:.1f} s (engine {summary['run_seconds']:.1f} s), "
            f"{summary['orders_filled']} orders filled, {summary['orders_denied']} denied, realized "
            f"{summary['realized_vol']:.4f} / forecast {summary['forecast_vol']:.4f} = {ratio:.3f}"
        )
    assert summary["orders_filled"] > 0 and summary["n_assets"] == 150 and summary["n_closes"] == 900
    assert 0.8 <= ratio <= 1.25
    assert "run time:" in stdout
