"""The report in headless Chromium: every chart is drawn with the number of values report_data holds.

Needs /usr/bin/chromium and /usr/bin/chromedriver (fails, never skips, without them). The screenshot goes to
test-artifacts/report-<file>.png.
"""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from factor_engine.model import RiskModel
from factor_engine.report import CHART_NAMES, bias_statistics, report_data, write_report

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
STATE = (
    "return Array.from(document.querySelectorAll('.fe-chart')).map(div => [div.dataset.chart, "
    "div.dataset.rendered || null, div.dataset.points || null, div.dataset.error || null])"
)


def rendered_state(path: Path) -> tuple[list[list[str | None]], list[str]]:
    """Open ``path`` in headless Chromium; wait until every chart is drawn or failed (20 s at most). Returns each
    chart's (name, data-rendered, data-points, data-error) and the console errors; saves a screenshot."""
    chrome = webdriver.ChromeOptions()
    chrome.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--window-size=1400,1000"):
        chrome.add_argument(argument)
    chrome.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=chrome)
    try:
        driver.get(path.as_uri())
        deadline = time.monotonic() + 20
        state = driver.execute_script(STATE)
        while not all(rendered or error for _, rendered, _, error in state) and time.monotonic() < deadline:
            time.sleep(0.05)
            state = driver.execute_script(STATE)
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / f"report-{path.stem}.png"))
        errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    finally:
        driver.quit()
    return state, errors


def test_every_chart_renders_in_chromium(
    report_model: RiskModel, report_panel: pl.DataFrame, weights: dict[str, dict[str, float]], tmp_path: Path
) -> None:
    bias = bias_statistics(report_model, report_panel, n_portfolios=10)
    options = {"portfolio": weights["portfolio"], "benchmark": weights["benchmark"], "bias": bias}
    path = write_report(report_model, tmp_path / "report.html", **options)  # type: ignore[arg-type]
    expected = report_data(report_model, **options)  # type: ignore[arg-type]

    state, errors = rendered_state(path)
    assert errors == []
    assert sorted(name for name, *_ in state) == sorted(CHART_NAMES)
    for name, rendered, points, error in state:
        assert error is None, f"{name}: {error}"
        assert rendered == "true", name
        assert int(points) == expected["charts"][name]["points"], name


def test_a_chart_without_data_reports_its_error(report_model: RiskModel, tmp_path: Path) -> None:
    """A chart div whose data is absent gets data-error and a console error instead of hanging."""
    page = write_report(report_model, tmp_path / "plain.html").read_text(encoding="utf-8")
    missing = "portfolio-risk"
    broken = page.replace("<main>", f'<main><div class="fe-chart" data-chart="{missing}"></div>', 1)
    path = tmp_path / "broken.html"
    path.write_text(broken, encoding="utf-8")
    state, logs = rendered_state(path)
    errors = {name: error for name, _, _, error in state if error}
    assert errors == {missing: f"no data for chart {missing}"}
    assert len(logs) == 1 and f"chart {missing}: no data for chart {missing}" in logs[0]
