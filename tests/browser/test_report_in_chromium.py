"""The HTML report of factor_engine.report in headless Chromium, opened as file:// with the network cut off:
every chart of the contract drawn with the number of values report_data holds, the heatmap equal to the
library's correlation, no console error; a chart without data reports its error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from browser_helpers import (
    StoredModel,
    chart_states,
    chrome,
    clear_artifact,
    library_correlation,
    plotted_data,
    screenshot,
    severe_messages,
    wait_rendered,
)
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from factor_engine.portfolio.snapshot import snapshot_at
from factor_engine.report import bias_statistics, report_data, write_report
from factor_engine.report.data import CHART_NAMES

CONTRACT_CHARTS = set(CHART_NAMES)


@pytest.fixture(scope="module")
def offline_browser() -> Iterator[WebDriver]:
    """Headless Chromium whose every http(s) request fails (a dead proxy): only file:// pages load."""
    driver = chrome(offline=True)
    try:
        yield driver
    finally:
        driver.quit()


def test_report_renders_every_chart_offline(
    offline_browser: WebDriver, stored_model: StoredModel, tmp_path: Path
) -> None:
    clear_artifact("report.png")
    driver = offline_browser
    model = stored_model.model
    symbols = list(snapshot_at(model).symbols)
    portfolio = {symbol: 1.0 / 40 for symbol in symbols[:40]}
    benchmark = {symbol: 1.0 / len(symbols) for symbol in symbols}
    bias = bias_statistics(model, stored_model.panel, n_portfolios=20)
    path = write_report(model, tmp_path / "report.html", portfolio=portfolio, benchmark=benchmark, bias=bias)
    expected = report_data(model, portfolio=portfolio, benchmark=benchmark, bias=bias)

    severe_messages(driver)
    driver.get(path.as_uri())
    names = set(driver.execute_script("return [...document.querySelectorAll('.fe-chart')].map(d => d.dataset.chart)"))
    assert names == CONTRACT_CHARTS
    wait_rendered(driver, tuple(sorted(names)))
    states = chart_states(driver, tuple(sorted(names)))
    for name, state in states.items():
        assert state.get("rendered") == "true" and "error" not in state, (name, state)
        assert int(state["points"]) == expected["charts"][name]["points"] > 0, (name, state)
    (heatmap,) = plotted_data(driver, "correlation-heatmap")
    z = np.array([[np.nan if v is None else v for v in row] for row in heatmap["z"]], dtype=float)
    order = [list(model.factors).index(name) for name in heatmap["x"]]
    expected = library_correlation(stored_model, stored_model.dates[-1])[np.ix_(order, order)]
    np.testing.assert_allclose(z, expected, rtol=1e-9, atol=1e-12)
    assert severe_messages(driver) == []
    screenshot(driver, "report.png", full_page=True)


def test_a_chart_without_data_reports_its_error(
    offline_browser: WebDriver, stored_model: StoredModel, tmp_path: Path
) -> None:
    """A chart div whose data is absent gets data-error and one console error instead of hanging."""
    driver = offline_browser
    page = write_report(stored_model.model, tmp_path / "plain.html").read_text(encoding="utf-8")
    missing = "portfolio-risk"  # a report without a portfolio has no data for it
    broken = page.replace("<main>", f'<main><div class="fe-chart" data-chart="{missing}"></div>', 1)
    path = tmp_path / "broken.html"
    path.write_text(broken, encoding="utf-8")
    severe_messages(driver)
    driver.get(path.as_uri())
    WebDriverWait(driver, 20, poll_frequency=0.05).until(
        lambda d: "error" in (chart_states(d, (missing,))[missing] or {})
    )
    assert chart_states(driver, (missing,))[missing]["error"] == f"no data for chart {missing}"
    logs = severe_messages(driver)
    assert len(logs) == 1 and f"chart {missing}: no data for chart {missing}" in logs[0], logs
