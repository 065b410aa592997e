"""``factor-engine report`` and the demo's report: the written page holds report_data of the same inputs; bad
inputs are one error line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest
from report_helpers import chart_divs, embedded_data

from cli_runner import invoke
from factor_engine.model import RiskModel, load_model
from factor_engine.portfolio.snapshot import forecast_dates
from factor_engine.report import CHART_NAMES, bias_statistics, report_data


@pytest.fixture(scope="module")
def files(
    report_model: RiskModel,
    report_panel: pl.DataFrame,
    weights: dict[str, dict[str, float]],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("report_cli")
    report_model.save(folder / "model")
    report_panel.write_parquet(folder / "panel.parquet")
    paths = {"model": folder / "model", "panel": folder / "panel.parquet"}
    for name in ("portfolio", "benchmark"):
        pl.DataFrame({"symbol": list(weights[name]), "weight": list(weights[name].values())}).write_csv(
            folder / f"{name}.csv"
        )
        paths[name] = folder / f"{name}.csv"
    pl.DataFrame({"symbol": ["NOT_A_SYMBOL", *list(weights["benchmark"])[:3]], "weight": [0.25] * 4}).write_csv(
        folder / "unknown.csv"
    )
    paths["unknown"] = folder / "unknown.csv"
    return paths


def test_report_command_writes_the_library_numbers(files: dict[str, Path], tmp_path: Path) -> None:
    model = load_model(files["model"])
    day = str(forecast_dates(model)[-30])
    out = tmp_path / "out" / "report.html"
    code, stdout, stderr = invoke(
        "report",
        *("--model", str(files["model"]), "--portfolio", str(files["portfolio"])),
        *("--benchmark", str(files["benchmark"]), "--date", day, "--data", str(files["panel"])),
        *("--validate", "--portfolios", "15", "--out", str(out), "--title", "Model review"),
    )
    assert code == 0, stderr
    page = out.read_text(encoding="utf-8")
    assert sorted(chart_divs(page)) == sorted(CHART_NAMES)
    assert "<title>Model review</title>" in page
    panel = pl.read_parquet(files["panel"])
    portfolio, benchmark = (pl.read_csv(files[name]) for name in ("portfolio", "benchmark"))
    expected = report_data(
        model,
        date=day,
        portfolio=portfolio,
        benchmark=benchmark,
        bias=bias_statistics(model, panel, n_portfolios=15),
    )
    assert embedded_data(page) == json.loads(json.dumps(expected))
    for stage in ("load model", "bias statistics", "write report", "Seconds per stage"):
        assert stage in stdout
    size = out.stat().st_size / 1e6
    assert f"report: {out} ({size:.1f} MB)" in stdout.replace("\n", "")


def test_report_command_without_options_shows_the_model_views(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "plain.html"
    code, _, stderr = invoke("report", "--model", str(files["model"]), "--out", str(out))
    assert code == 0, stderr
    page = out.read_text(encoding="utf-8")
    optional = {"bias-statistics", "portfolio-exposures", "portfolio-risk"}
    assert sorted(chart_divs(page)) == sorted(set(CHART_NAMES) - optional)
    assert embedded_data(page)["date"] == str(forecast_dates(load_model(files["model"]))[-1])


def error_line(*args: str) -> str:
    code, stdout, stderr = invoke("report", *args)
    assert code == 1
    assert "error" not in stdout
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_bad_inputs_are_one_error_line(files: dict[str, Path], tmp_path: Path) -> None:
    model = ("--model", str(files["model"]))
    out = ("--out", str(tmp_path / "r.html"))
    assert re.fullmatch(
        r"error: no risk forecast for 2001-01-01: the model has no exposures on that date; available dates: "
        r"nearest after \d{4}-\d\d-\d\d \(range .*\)",
        error_line(*model, *out, "--date", "2001-01-01"),
    )
    assert error_line(*model, *out, "--date", "01/02/2020") == "error: not a date: '01/02/2020' (use YYYY-MM-DD)"
    line = error_line(*model, *out, "--portfolio", str(files["unknown"]))
    assert re.fullmatch(
        r"error: weights name 1 symbol\(s\) the risk model does not cover on \d{4}-\d\d-\d\d: 'NOT_A_SYMBOL' "
        r"\(remove them from the weights\)",
        line,
    )
    assert (
        error_line(*model, *out, "--validate") == "error: --validate needs --data: the panel the model was built from"
    )
    assert error_line(*model, *out, "--data", str(files["panel"])) == (
        "error: --data is only used with --validate: add --validate or drop --data"
    )
    assert error_line(*model, *out, "--benchmark", str(files["benchmark"])) == "error: --benchmark needs --portfolio"
    assert error_line(*model, "--out", str(tmp_path / "r.pdf")) == (
        f"error: cannot write the report to {tmp_path / 'r.pdf'}: use a .html or .htm file name"
    )
    assert error_line("--model", str(tmp_path), *out) == (
        f"error: {tmp_path} is not a model folder: model.json is missing"
    )
    assert not (tmp_path / "r.html").exists()


def test_report_help_has_an_example() -> None:
    code, stdout, _ = invoke("report", "--help")
    assert code == 0
    assert "Example" in stdout
    assert "factor-engine report --model model --portfolio weights.csv" in stdout


def test_demo_writes_its_report(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    code, stdout, stderr = invoke("demo", "--assets", "80", "--days", "400", "--seed", "2", "--out", str(out))
    assert code == 0, stderr
    report = out / "report.html"
    assert f"report: {report}" in stdout.replace("\n", "")
    page = report.read_text(encoding="utf-8")
    assert sorted(chart_divs(page)) == sorted(CHART_NAMES)
    data = embedded_data(page)
    model_dates = data["summary"]["n_dates"]  # type: ignore[index]
    assert model_dates > 63 and data["charts"]["portfolio-risk"]["active"] is True  # type: ignore[index]
    assert [row["tested"] for row in data["charts"]["bias-statistics"]["rows"]] == [  # type: ignore[index]
        "pure factor portfolios",
        "random portfolios",
        "single assets",
    ]
    assert "build risk model" in stdout and "bias statistics and report" in stdout


def test_weights_in_percent_and_sums_other_than_one(
    files: dict[str, Path], weights: dict[str, dict[str, float]], tmp_path: Path
) -> None:
    symbols = list(weights["portfolio"])[:2]
    percent = tmp_path / "percent.csv"
    pl.DataFrame({"symbol": symbols, "weight": [50.0, 50.0]}).write_csv(percent)
    out = tmp_path / "report.html"
    code, _, stderr = invoke("report", "--model", str(files["model"]), "--portfolio", str(percent), "--out", str(out))
    assert code == 1 and not out.exists()
    assert "pass --allow-unnormalized" in " ".join(stderr.split())
    half = tmp_path / "half.csv"
    pl.DataFrame({"symbol": symbols, "weight": [0.25, 0.25]}).write_csv(half)
    code, _, stderr = invoke("report", "--model", str(files["model"]), "--portfolio", str(half), "--out", str(out))
    assert code == 0, stderr
    risk = embedded_data(out.read_text())["charts"]["portfolio-risk"]
    assert len(risk["warnings"]) == 1 and risk["warnings"][0].startswith("weights sum to 0.5")
    assert "weights sum to 0.5" in out.read_text().split("</main>")[0]
