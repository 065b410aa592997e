"""Real data end to end, as a new user runs it: 20 US stocks' adjusted closes 1990–2022 (skfolio's S&P 500
data set, shipped in its wheel), a sector map in the seed's names, no market caps, no fundamentals: momentum,
and USE4's beta and residual volatility on the equal-weighted market.

``prepare → build`` (no configuration) ``→ risk → report → validate`` all succeed through the command line;
the equal-weight portfolio's forecast volatility is plausible for large US stocks, and the bias statistics of
the pure factor and random portfolios lie in 0.9–1.1.
"""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cli_runner import invoke
from factor_engine.model import RiskModel, load_model
from factor_engine.panel import SEED_SECTORS
from factor_engine.portfolio import decompose_risk
from factor_engine.portfolio.snapshot import snapshot_at
from factor_engine.risk import validation
from factor_engine.update import differences
from real_data import SP500_TICKERS, sp500_prices_path, sp500_sectors_path


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("real")
    code, stdout, stderr = invoke(
        "prepare", "--prices", str(sp500_prices_path()), "--sectors", str(sp500_sectors_path()),
        "--out", str(folder / "panel.parquet"),
    )  # fmt: skip
    assert code == 0, stderr
    code, stdout, stderr = invoke("build", "--data", str(folder / "panel.parquet"), "--out", str(folder / "model"))
    assert code == 0, stderr
    (folder / "build.txt").write_text(stdout)
    return folder


@pytest.fixture(scope="module")
def model(work: Path) -> RiskModel:
    return load_model(work / "model")


def test_build_follows_the_data_and_says_so(work: Path, model: RiskModel) -> None:
    assert set(model.sectors) <= set(SEED_SECTORS) and len(model.sectors) == 7
    # no caps: USE4's beta and residual volatility on the equal-weighted market; no size styles
    assert set(model.styles) == {"mom_score", "beta_score", "resvol_score"}
    assert model.factor_returns["date"].min().year == 1990  # type: ignore[union-attr]
    meta = json.loads((work / "model" / "model.json").read_text())
    assert meta["build"]["market_cap"].startswith("absent")
    skipped = meta["build"]["styles"]["skipped"]
    assert {"value", "size", "nlsize"} <= set(skipped) and not {"beta", "resvol"} & set(skipped)
    assert skipped["size"] == skipped["nlsize"] == "the panel has no market_cap column"
    assert "beta on the equal-weighted market" in meta["build"]["market_cap"]
    printed = " ".join((work / "build.txt").read_text().split())
    assert "style left out" in printed and "value: the panel has no book_price" in printed
    assert "warning: sector 'Industrials' has fewer than 5 assets" in printed  # GE alone in its sector


def test_real_betas_order_the_stocks_as_the_market_knows_them(model: RiskModel) -> None:
    """USE4's beta on the equal-weighted market of the 20 stocks, averaged over 2018-2022: the consumer staples
    (Procter & Gamble, Coca-Cola, PepsiCo, Walmart) are low-beta names and AMD, Range Resources (an oil and gas
    producer), Bank of America and GE high-beta ones, as every published beta of the period has them."""
    recent = model.exposures.filter(pl.col("date") >= datetime.date(2018, 1, 1))
    mean = dict(recent.group_by("symbol").agg(pl.col("beta_score").mean()).iter_rows())
    defensive, cyclical = ["PG", "KO", "PEP", "WMT"], ["AMD", "RRC", "BAC", "GE"]
    assert max(mean[s] for s in defensive) < -0.5 < 0.3 < min(mean[s] for s in cyclical), mean
    assert min(mean["AMD"], mean["RRC"]) > 1.0, mean


def test_risk_of_the_equal_weight_portfolio_is_plausible(work: Path, model: RiskModel) -> None:
    weights = work / "equal.csv"
    pl.DataFrame({"symbol": list(SP500_TICKERS), "weight": [1.0 / len(SP500_TICKERS)] * len(SP500_TICKERS)}).write_csv(
        weights
    )
    code, stdout, stderr = invoke("risk", "--model", str(work / "model"), "--portfolio", str(weights))
    assert code == 0, stderr
    snapshot = snapshot_at(model)
    equal = np.full(len(snapshot.symbols), 1.0 / len(snapshot.symbols))
    annual = decompose_risk(snapshot, equal).total_risk * np.sqrt(252)
    assert 0.10 < annual < 0.35, annual  # 20 large US stocks at the end of 2022
    shown = re.search(r"total risk\s*│\s*([0-9.]+) %", stdout)
    assert shown is not None and abs(float(shown.group(1)) - 100 * annual) < 0.01


def test_report_is_written(work: Path) -> None:
    code, _, stderr = invoke("report", "--model", str(work / "model"), "--out", str(work / "report.html"))
    assert code == 0, stderr
    page = (work / "report.html").read_text()
    assert "What the build did with the data" in page and "no market_cap column" in page


def test_validate_runs_and_the_bias_statistics_are_in_band(work: Path, model: RiskModel) -> None:
    code, stdout, stderr = invoke(
        "validate", "--model", str(work / "model"), "--data", str(work / "panel.parquet"), "--no-compare"
    )
    assert code == 0, stderr
    assert "Bias statistics" in stdout and "n/a" not in stdout.split("Bias statistics")[1].split("minimum")[0]
    panel = pl.read_parquet(work / "panel.parquet")
    summary = validation.model_bias_summary(model, panel.select("date", "symbol", "asset_returns"))
    means = dict(zip(summary["tested"], summary["mean_bias"], strict=True))
    assert 0.9 <= means["pure factor portfolios"] <= 1.1, means
    assert 0.9 <= means["random portfolios"] <= 1.1, means


def test_update_on_real_prices_equals_the_build(work: Path, model: RiskModel, tmp_path: Path) -> None:
    """The S&P 500 closes without their last three dates, built, then extended by `update` from the whole panel:
    the result equals the build on the whole panel (no caps: equal weights; momentum, beta and residual volatility)."""
    panel = pl.read_parquet(work / "panel.parquet")
    cut = panel.get_column("date").unique().sort()[-4]
    panel.filter(pl.col("date") <= cut).write_parquet(tmp_path / "head.parquet")
    code, _, stderr = invoke("build", "--data", str(tmp_path / "head.parquet"), "--out", str(tmp_path / "model"))
    assert code == 0, stderr
    code, stdout, stderr = invoke("update", "--model", str(tmp_path / "model"), "--data", str(work / "panel.parquet"))
    assert code == 0, stderr
    assert "added: 3 date(s)" in stdout
    gaps = differences(load_model(tmp_path / "model"), model, cut)
    assert all(gap < 1e-10 for gap in gaps.values()), gaps
