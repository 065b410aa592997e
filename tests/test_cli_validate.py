"""factor-engine validate: the printed bias statistics are the validation library's numbers."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from factor_engine.cli import app
from factor_engine.config import ModelConfig, StylesConfig
from factor_engine.model import build_model, load_model
from factor_engine.risk import validation
from factor_engine.synthetic import generate_market


def test_validate_prints_the_library_bias_statistics(tmp_path: Path) -> None:
    panel = generate_market(120, 420, seed=6).panel
    panel_path = tmp_path / "panel.parquet"
    panel.write_parquet(panel_path)
    config = ModelConfig(styles=StylesConfig(params={"momentum": {"trailing_days": 60, "half_life": 20, "lag": 5}}))
    build_model(panel, config).save(tmp_path / "model")
    result = CliRunner().invoke(
        app,
        ["validate", "--model", str(tmp_path / "model"), "--data", str(panel_path), "--portfolios", "10"],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    model = load_model(tmp_path / "model")
    factors = validation.summarize_bias(validation.factor_portfolio_bias(model)).row(0, named=True)
    assert f"{factors['mean_bias']:.3f}" in result.output
    returns = panel.select("date", "symbol", "asset_returns")
    lw = validation.sample_covariance_bias(returns, shrink="ledoit_wolf", target="assets")
    assert f"{validation.summarize_bias(lw)['mean_bias'][0]:.3f}" in result.output
    eigen = validation.summarize_bias(validation.eigenfactor_portfolio_bias(model)).row(0, named=True)
    assert f"{eigen['mean_bias']:.3f}" in result.output
    for label in ("pure factor", "random", "eigenfactor", "Ledoit-Wolf", "minimum-variance"):
        assert label in result.output


def test_validate_missing_model_is_one_error_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", "--model", str(tmp_path), "--data", str(tmp_path / "p.parquet")])
    assert result.exit_code == 1
    assert "error:" in result.output and "model.json is missing" in result.output
