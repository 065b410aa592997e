"""``factor-engine risk``: its printed figures equal decompose_risk on snapshot_at of the built model."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from cli_runner import invoke
from factor_engine.model import RiskModel, load_model
from factor_engine.portfolio import RiskDecomposition, decompose_risk
from factor_engine.portfolio.analytics import WeightsWarning
from factor_engine.portfolio.snapshot import forecast_dates, snapshot_at
from factor_engine.synthetic import generate_market


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("risk_cli")
    panel_path = folder / "panel.parquet"
    generate_market(150, 400, seed=1).panel.write_parquet(panel_path)
    config_path = folder / "model.toml"
    config_path.write_text("[styles.momentum]\ntrailing_days = 60\nlag = 5\n")
    out = folder / "model"
    code, _, err = invoke("build", "--data", str(panel_path), "--out", str(out), "--config", str(config_path))
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def model(model_dir: Path) -> RiskModel:
    return load_model(model_dir)


@pytest.fixture(scope="module")
def weights(model: RiskModel, model_dir: Path) -> dict[str, Path]:
    at_last, earlier = snapshot_at(model), snapshot_at(model, earlier_date(model))
    symbols = sorted(set(at_last.symbols) & set(earlier.symbols))
    frames = {
        "portfolio": pl.DataFrame({"symbol": symbols[:30], "weight": [1 / 30] * 30}),
        "benchmark": pl.DataFrame({"symbol": symbols[10:60], "weight": [1 / 50] * 50}),
        "unknown": pl.DataFrame({"symbol": [*symbols[:3], "NOT_A_SYMBOL"], "weight": [0.25] * 4}),
    }
    paths = {}
    for name, frame in frames.items():
        paths[name] = model_dir.parent / f"{name}.csv"
        frame.write_csv(paths[name])
    return paths


def earlier_date(model: RiskModel) -> str:
    """A forecast date other than the default (last) one."""
    return str(forecast_dates(model)[-20])


def risk_text(value: float) -> str:
    return f"{100 * value:.3f} %"


def line_with(stdout: str, label: str) -> str:
    lines = [line for line in stdout.splitlines() if f" {label} " in line]
    assert len(lines) == 1, f"{label!r} not found once in:\n{stdout}"
    return lines[0]


def assert_printed(stdout: str, expected: RiskDecomposition) -> None:
    assert risk_text(expected.total_risk) in line_with(stdout, "total risk")
    assert risk_text(expected.factor_risk) in line_with(stdout, "factor risk")
    assert risk_text(expected.specific_risk) in line_with(stdout, "specific risk")
    if expected.tracking_error is None:
        assert "tracking error" not in stdout
    else:
        assert risk_text(expected.tracking_error) in line_with(stdout, "tracking error")
    factors = expected.factor_contributions.sort(pl.col("contribution").abs(), descending=True).head(10)
    for factor, _, vol, _, contribution, _ in factors.iter_rows():
        line = line_with(stdout, factor)
        assert risk_text(vol) in line and risk_text(contribution) in line
    assets = expected.asset_contributions.sort(pl.col("contribution").abs(), descending=True)
    for symbol, _, mcr, contribution, _ in assets.head(10).iter_rows():
        line = line_with(stdout, symbol)
        assert risk_text(mcr) in line and risk_text(contribution) in line
    for symbol in assets.slice(10).get_column("symbol").to_list():
        assert f" {symbol} " not in stdout


def test_risk_prints_the_library_decomposition(model: RiskModel, model_dir: Path, weights: dict[str, Path]) -> None:
    code, stdout, stderr = invoke("risk", "--model", str(model_dir), "--portfolio", str(weights["portfolio"]))
    assert code == 0, stderr
    expected = decompose_risk(snapshot_at(model), pl.read_csv(weights["portfolio"])).annualized()
    assert_printed(stdout, expected)
    assert f"as of {forecast_dates(model)[-1]}" in stdout


def test_risk_with_benchmark_daily_at_a_date(model: RiskModel, model_dir: Path, weights: dict[str, Path]) -> None:
    date = earlier_date(model)
    code, stdout, stderr = invoke(
        "risk",
        "--model",
        str(model_dir),
        "--portfolio",
        str(weights["portfolio"]),
        "--benchmark",
        str(weights["benchmark"]),
        "--date",
        date,
        "--daily",
    )
    assert code == 0, stderr
    expected = decompose_risk(
        snapshot_at(model, date), pl.read_csv(weights["portfolio"]), pl.read_csv(weights["benchmark"])
    )
    assert expected.tracking_error is not None
    assert_printed(stdout, expected)


def test_unknown_symbol_is_an_error_naming_it(model_dir: Path, weights: dict[str, Path]) -> None:
    code, stdout, stderr = invoke("risk", "--model", str(model_dir), "--portfolio", str(weights["unknown"]))
    assert code == 1
    assert stderr.startswith("error: ")
    assert "1 symbol(s) the risk model does not cover: 'NOT_A_SYMBOL'" in stderr
    assert "--drop-unknown" in stderr
    assert "total risk" not in stdout


def test_drop_unknown_drops_and_counts(model: RiskModel, model_dir: Path, weights: dict[str, Path]) -> None:
    code, stdout, stderr = invoke(
        "risk", "--model", str(model_dir), "--portfolio", str(weights["unknown"]), "--drop-unknown"
    )
    assert code == 0, stderr
    assert "dropped 1 symbol(s) the model does not cover: NOT_A_SYMBOL" in stdout
    known = pl.read_csv(weights["unknown"]).filter(pl.col("symbol") != "NOT_A_SYMBOL")
    assert "warning: weights sum to 0.75" in " ".join(stdout.split())  # 3 of the 4 quarter weights are kept
    with pytest.warns(WeightsWarning, match="weights sum to 0.75"):
        assert_printed(stdout, decompose_risk(snapshot_at(model), known).annualized())


def test_date_without_forecast_is_an_error(model: RiskModel, model_dir: Path, weights: dict[str, Path]) -> None:
    code, _, stderr = invoke(
        "risk", "--model", str(model_dir), "--portfolio", str(weights["portfolio"]), "--date", "2030-01-02"
    )
    assert code == 1
    assert stderr.startswith("error: no risk forecast for 2030-01-02")
    assert f"nearest before {forecast_dates(model)[-1]}" in stderr


def test_missing_weight_column_is_an_error(model_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "w.csv"
    pl.DataFrame({"symbol": ["A"], "w": [1.0]}).write_csv(path)
    code, _, stderr = invoke("risk", "--model", str(model_dir), "--portfolio", str(path))
    assert code == 1
    assert "lacks column(s) ['weight']" in stderr


def test_help_shows_an_example() -> None:
    code, stdout, _ = invoke("risk", "--help")
    assert code == 0
    assert "Example:" in stdout
    assert "factor-engine risk --model model --portfolio weights.csv" in stdout


def test_weights_in_percent_are_an_error_and_a_sum_other_than_one_a_warning(
    model: RiskModel, model_dir: Path, tmp_path: Path
) -> None:
    """The new user's portfolio file in percent (50 and 50) used to report 3,044 % risk without a word."""
    symbols = list(snapshot_at(model).symbols[:2])
    percent = tmp_path / "percent.csv"
    pl.DataFrame({"symbol": symbols, "weight": [50.0, 50.0]}).write_csv(percent)
    code, _, stderr = invoke("risk", "--model", str(model_dir), "--portfolio", str(percent))
    assert code == 1
    flat = " ".join(stderr.split())
    assert "error: " in flat and "percent" in flat and "pass --allow-unnormalized" in flat
    # the opt-in accepts it (a leveraged book on purpose): the figures are of the weights as given
    code, stdout, _ = invoke("risk", "--model", str(model_dir), "--portfolio", str(percent), "--allow-unnormalized")
    assert code == 0 and "warning:" not in stdout
    half = tmp_path / "half.csv"
    pl.DataFrame({"symbol": symbols, "weight": [0.25, 0.25]}).write_csv(half)
    code, stdout, _ = invoke("risk", "--model", str(model_dir), "--portfolio", str(half))
    assert code == 0
    printed = " ".join(stdout.split())
    assert "warning: weights sum to 0.5" in printed and "allow_unnormalized=True" not in printed
