"""``factor-engine optimize``: per constraint type, the weights it writes equal the library's ``optimize`` on the
same snapshot and meet the constraint on the explicit Σ (numpy); each infeasible type names its conflict; the
options, optimize.toml and the written files are checked, and so is the report of an optimized portfolio."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from cli_runner import invoke
from factor_engine.model import RiskModel, load_model
from factor_engine.portfolio import Constraints, RiskModelSnapshot, decompose_risk, optimize
from factor_engine.portfolio.snapshot import forecast_dates, snapshot_at
from optimize_cases import (
    FEASIBLE,
    SAME,
    TOL,
    Case,
    Infeasible,
    Inputs,
    by_symbol,
    feasible_cases,
    infeasible_cases,
    inputs,
    library_weights,
    small_model,
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("optimize_cli") / "model"
    small_model().save(folder)
    return folder


@pytest.fixture(scope="module")
def model(model_dir: Path) -> RiskModel:
    return load_model(model_dir)


@pytest.fixture(scope="module")
def snapshot(model: RiskModel) -> RiskModelSnapshot:
    return snapshot_at(model)


@pytest.fixture(scope="module")
def given(snapshot: RiskModelSnapshot, model: RiskModel) -> Inputs:
    return inputs(snapshot, model.styles)


@pytest.fixture(scope="module")
def cases(snapshot: RiskModelSnapshot, given: Inputs) -> dict[str, Case]:
    return {case.name: case for case in feasible_cases(snapshot, given)}


@pytest.fixture(scope="module")
def infeasible(snapshot: RiskModelSnapshot, given: Inputs) -> dict[str, Infeasible]:
    return {case.name: case for case in infeasible_cases(snapshot, given)}


def write_table(path: Path, table: dict[str, float], column: str = "weight") -> Path:
    pl.DataFrame({"symbol": list(table), column: list(table.values())}).write_csv(path)
    return path


def cli_args(spec: dict[str, Any], folder: Path) -> list[str]:
    """The options standing for ``spec`` (weight tables written as CSV files into ``folder``)."""
    args: list[str] = []
    for key, value in spec.items():
        option = "--" + key.replace("_", "-")
        if key in ("benchmark", "current", "alpha"):
            path = write_table(folder / f"{key}.csv", value, "alpha" if key == "alpha" else "weight")
            args += [option, str(path)]
        elif key in ("long_only", "allow_unnormalized"):
            assert value is True
            args.append(option)
        elif key == "neutral":
            for factor in value:
                args += [option, factor]
        elif key == "factor_bounds":
            for factor, (lower, upper) in value.items():
                args += [option, f"{factor}={'' if lower is None else lower}:{'' if upper is None else upper}"]
        else:
            args += [option, str(value)]
    return args


def risk_text(value: float) -> str:
    return f"{100 * value:.3f} %"


@pytest.mark.parametrize("name", FEASIBLE)
def test_weights_equal_the_library_and_meet_the_constraint(
    name: str, cases: dict[str, Case], snapshot: RiskModelSnapshot, model_dir: Path, tmp_path: Path
) -> None:
    case = cases[name]
    out = tmp_path / "out" / "weights.csv"
    code, stdout, stderr = invoke(
        "optimize", "--model", str(model_dir), "--out", str(out), *cli_args(case.spec, tmp_path)
    )
    assert code == 0, stderr
    written = pl.read_csv(out, schema_overrides={"symbol": pl.String})
    assert written.columns == ["symbol", "weight"]
    assert (written.get_column("weight") != 0.0).all()  # nonzero holdings only
    weights = by_symbol(snapshot, written)
    expected = library_weights(case.library(snapshot))
    np.testing.assert_allclose(weights, expected, rtol=0, atol=SAME)
    assert abs(weights.sum() - 1.0) <= TOL  # fully invested
    case.check(weights)
    # the ex-ante risk table is the library's decomposition of these weights (annualized)
    risk = decompose_risk(snapshot, dict(written.iter_rows()), allow_unnormalized=True).annualized()
    for label, value in (("total risk", risk.total_risk), ("factor risk", risk.factor_risk)):
        assert re.search(rf"│ {label}\s+│\s+{re.escape(risk_text(value))} │", stdout), stdout
    benchmark = case.spec.get("benchmark")
    if benchmark is None:
        assert "tracking error" not in stdout
    else:
        active = decompose_risk(snapshot, dict(written.iter_rows()), benchmark, allow_unnormalized=True).annualized()
        assert active.tracking_error is not None
        assert re.search(rf"│ tracking error\s+│\s+{re.escape(risk_text(active.tracking_error))} │", stdout), stdout
    assert not list(out.parent.glob(".*tmp"))  # written through a temporary file, renamed


@pytest.mark.parametrize("name", FEASIBLE)
def test_infeasible_sets_name_the_conflict(
    name: str, infeasible: dict[str, Infeasible], model_dir: Path, tmp_path: Path
) -> None:
    case = infeasible[name]
    out = tmp_path / "weights.csv"
    out.write_text("symbol,weight\nKEEP,1.0\n")
    code, stdout, stderr = invoke(
        "optimize", "--model", str(model_dir), "--out", str(out), *cli_args(case.spec, tmp_path)
    )
    assert code == 1, stdout
    assert stderr.startswith("error: ")
    for words in case.words:
        assert words in stderr, stderr
    assert out.read_text() == "symbol,weight\nKEEP,1.0\n"  # an error leaves the previous file alone


def test_config_file_with_options_overriding_it(
    snapshot: RiskModelSnapshot, given: Inputs, model_dir: Path, tmp_path: Path
) -> None:
    """optimize.toml keys (a benchmark as a path relative to the file, factor bounds as a table) with
    --max-weight overriding the file's infeasible value: the library's weights under the merged constraints."""
    write_table(tmp_path / "bench.csv", given.benchmark)
    config = tmp_path / "conf" / "optimize.toml"
    config.parent.mkdir()
    config.write_text(
        'objective = "min-tracking-error"\nbenchmark = "../bench.csv"\nlong_only = true\nmax_weight = 0.001\n'
        f'neutral = ["{given.style}"]\n[factor_bounds]\n{given.other_style} = [-0.05, 0.05]\n'
    )
    out = tmp_path / "weights.csv"
    code, _, stderr = invoke("optimize", "--model", str(model_dir), "--out", str(out), "--config", str(config))
    assert code == 1 and "max_weight = 0.001 conflicts with" in stderr, stderr
    code, _, stderr = invoke(
        "optimize", "--model", str(model_dir), "--out", str(out), "--config", str(config), "--max-weight", "0.05"
    )
    assert code == 0, stderr
    constraints = Constraints(
        long_only=True,
        benchmark=given.benchmark,
        asset_bounds=(-0.05, 0.05),
        neutral_factors=(given.style,),
        factor_bounds={given.other_style: (-0.05, 0.05)},
    )
    expected = library_weights(optimize(snapshot, constraints=constraints))
    weights = by_symbol(snapshot, pl.read_csv(out))
    np.testing.assert_allclose(weights, expected, rtol=0, atol=SAME)
    k = snapshot.factors.index(given.other_style)
    assert abs(snapshot.exposures[:, k] @ weights) <= 0.05 + TOL and np.abs(weights).max() <= 0.05 + TOL


def test_an_earlier_date_uses_that_snapshot(model: RiskModel, model_dir: Path, tmp_path: Path) -> None:
    day = str(forecast_dates(model)[-15])
    out = tmp_path / "weights.parquet"
    code, stdout, stderr = invoke(
        "optimize", "--model", str(model_dir), "--out", str(out), "--date", day, "--long-only", "--daily"
    )
    assert code == 0, stderr
    earlier = snapshot_at(model, day)
    expected = optimize(earlier, constraints=Constraints(long_only=True), objective_on="total")
    np.testing.assert_allclose(by_symbol(earlier, pl.read_parquet(out)), library_weights(expected), rtol=0, atol=SAME)
    assert f"as of {day}" in stdout and risk_text(expected.risk) in stdout  # daily figures


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--neutral", "quality"], "neutral names unknown factor 'quality'; the model has ['market'"),
        (["--factor-bounds", "market=a:1"], "--factor-bounds 'market=a:1': expected FACTOR=LO:HI"),
        (["--factor-bounds", "market=1"], "expected FACTOR=LO:HI (LO or HI may be empty for an open side)"),
        (["--factor-bounds", "market=2:1"], "--factor-bounds['market'] has lower 2 > upper 1"),
        (["--factor-bounds", "market=:"], "--factor-bounds['market'] bounds nothing"),
        (["--max-turnover", "0.2"], "--max-turnover needs --current"),
        (["--max-tracking-error", "0.02"], "--max-tracking-error needs --benchmark"),
        (["--objective", "min-tracking-error"], "--objective min-tracking-error needs --benchmark"),
        (["--objective", "max-alpha"], "--objective max-alpha needs --alpha"),
        (["--risk-aversion", "2"], "--risk-aversion is used only by --objective max-alpha"),
        (["--max-weight", "0"], "--max-weight must be > 0, not 0"),
        (["--max-weight", "nan"], "--max-weight must be a finite number"),
        (["--date", "1999-01-04"], "no risk forecast for 1999-01-04"),
        (["--out", "weights.txt"], "unsupported suffix '.txt'"),
        (["--report", "report.pdf"], "use a .html or .htm file name"),
    ],
)
def test_bad_options_are_named(args: list[str], message: str, model_dir: Path, tmp_path: Path) -> None:
    code, _, stderr = invoke("optimize", "--model", str(model_dir), "--out", str(tmp_path / "w.csv"), *args)
    assert code == 1
    assert message in stderr, stderr


def test_bad_files_are_named(given: Inputs, model_dir: Path, tmp_path: Path) -> None:
    base = ["optimize", "--model", str(model_dir), "--out", str(tmp_path / "w.csv")]
    columns = tmp_path / "columns.csv"
    pl.DataFrame({"ticker": ["S00001"], "w": [1.0]}).write_csv(columns)
    code, _, stderr = invoke(*base, "--benchmark", str(columns))
    assert code == 1 and "benchmark" in stderr and "lacks column(s) ['symbol', 'weight']" in stderr, stderr
    duplicated = tmp_path / "duplicated.csv"
    duplicated.write_text("symbol,weight\nS00001,0.5\nS00001,0.5\n")
    code, _, stderr = invoke(*base, "--benchmark", str(duplicated))
    assert code == 1 and "--benchmark name 1 symbol(s) more than once: ['S00001']" in stderr, stderr
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("symbol,weight\nNOT_A_SYMBOL,1.0\n")
    code, _, stderr = invoke(*base, "--current", str(unknown), "--max-turnover", "1")
    assert code == 1 and "current weights name 1 symbol(s) the risk model does not cover: 'NOT_A_SYMBOL'" in stderr
    assert "unknown='drop'" not in stderr
    percent = write_table(tmp_path / "percent.csv", {s: 100 * w for s, w in given.benchmark.items()})
    code, _, stderr = invoke(*base, "--benchmark", str(percent))
    assert code == 1 and "look like percentages" in stderr and "pass --allow-unnormalized" in stderr, stderr
    bad_key = tmp_path / "bad_key.toml"
    bad_key.write_text("max_weigth = 0.05\n")
    code, _, stderr = invoke(*base, "--config", str(bad_key))
    assert code == 1 and f"--config {bad_key}: unknown key(s) ['max_weigth']; the keys are objective" in stderr
    bad_value = tmp_path / "bad_value.toml"
    bad_value.write_text('long_only = "yes"\n')
    code, _, stderr = invoke(*base, "--config", str(bad_value))
    assert code == 1 and f"long_only ({bad_value}) must be true or false, not 'yes'" in stderr, stderr
    not_toml = tmp_path / "not.toml"
    not_toml.write_text("max_weight = \n")
    code, _, stderr = invoke(*base, "--config", str(not_toml))
    assert code == 1 and "is not valid TOML" in stderr, stderr
    code, _, stderr = invoke(*base, "--alpha", str(tmp_path / "missing.csv"), "--objective", "max-alpha")
    assert code == 1 and "cannot read alpha" in stderr and "no such file" in stderr, stderr


def test_report_shows_the_optimized_portfolio(
    snapshot: RiskModelSnapshot, given: Inputs, cases: dict[str, Case], model_dir: Path, tmp_path: Path
) -> None:
    case = cases["max_tracking_error"]
    out, report = tmp_path / "w.csv", tmp_path / "report.html"
    code, stdout, stderr = invoke(
        "optimize",
        "--model",
        str(model_dir),
        "--out",
        str(out),
        "--report",
        str(report),
        *cli_args(case.spec, tmp_path),
    )
    assert code == 0, stderr
    page = report.read_text(encoding="utf-8")
    data = json.loads(re.search(r'<script type="application/json" id="fe-data">(.*?)</script>', page).group(1))
    weights = pl.read_csv(out)
    summary = data["optimization"]
    assert summary["holdings"] == weights.height
    largest = weights.sort(pl.col("weight").abs(), descending=True).head(20)
    assert [row["symbol"] for row in summary["largest"]] == largest.get_column("symbol").to_list()
    np.testing.assert_allclose([row["weight"] for row in summary["largest"]], largest.get_column("weight"), rtol=1e-15)
    assert f"tracking error ≤ {case.spec['max_tracking_error']:g} annualized" in summary["constraints"]
    assert "Optimized portfolio" in page and "tracking error ≤" in page
    # the report's portfolio view is of the optimized weights against the benchmark
    expected = decompose_risk(snapshot, dict(weights.iter_rows()), given.benchmark, allow_unnormalized=True)
    assert data["charts"]["portfolio-risk"]["active"] is True
    assert data["charts"]["portfolio-risk"]["total_risk"] == pytest.approx(expected.annualized().total_risk, rel=1e-12)
    assert summary["tracking_error"] == pytest.approx(expected.annualized().total_risk, rel=1e-9)
    assert f"report: {report}" in stdout
