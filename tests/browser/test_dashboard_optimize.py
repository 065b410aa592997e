"""The dashboard's Optimize form in headless Chromium against the real service: the weights it puts into the
portfolio box are the library's ``optimize`` on the stored snapshot under the constraints typed in, their
holdings table and risk are shown, and an infeasible set shows the API's 422 naming the conflict."""

from __future__ import annotations

import datetime

import numpy as np
import pytest
from browser_helpers import StoredModel, call, severe_messages, wait_rendered
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from factor_engine.portfolio import Constraints, decompose_risk, optimize
from factor_engine.report.data import FACTOR_CHARTS, PORTFOLIO_CHARTS
from factor_engine.storage import connect


def _type(driver: WebDriver, element_id: str, text: str) -> None:
    driver.execute_script("document.getElementById(arguments[0]).value = arguments[1];", element_id, text)


def test_optimize_form(driver: WebDriver, service_url: str, stored_model: StoredModel) -> None:
    driver.get(f"{service_url}/dashboard")
    wait_rendered(driver, FACTOR_CHARTS)
    driver.find_element(By.CSS_SELECTOR, '.tab[data-view="portfolio"]').click()
    day = datetime.date.fromisoformat(Select(driver.find_element(By.ID, "date-select")).first_selected_option.text)
    store = connect(stored_model.url, schema=stored_model.schema)
    try:
        snapshot = store.snapshot(stored_model.model_id, day)
    finally:
        store.close()
    style = next(s for s in stored_model.model.styles if s in snapshot.factors)
    benchmark = {symbol: 1.0 / snapshot.n_assets for symbol in snapshot.symbols}

    _type(driver, "benchmark-text", "\n".join(f"{s},{w}" for s, w in benchmark.items()))
    _type(driver, "optimize-max-weight", "0.05")
    _type(driver, "optimize-neutral", style)
    _type(driver, "optimize-bounds", "market=1:1")
    Select(driver.find_element(By.ID, "optimize-objective")).select_by_value("min-tracking-error")
    driver.find_element(By.ID, "optimize-submit").click()
    holdings = driver.find_element(By.ID, "optimized-weights")
    WebDriverWait(driver, 20).until(lambda _: holdings.is_displayed())
    wait_rendered(driver, PORTFOLIO_CHARTS)

    text = driver.execute_script("return document.getElementById('portfolio-text').value;")
    shown = {line.split(",")[0]: float(line.split(",")[1]) for line in text.splitlines()}
    constraints = Constraints(
        long_only=True,
        benchmark=benchmark,
        asset_bounds=(-0.05, 0.05),
        neutral_factors=(style,),
        factor_bounds={"market": (1.0, 1.0)},
    )
    expected = optimize(snapshot, constraints=constraints).weights
    expected_map = {s: w for s, w in expected.iter_rows() if w != 0.0}
    assert set(shown) == set(expected_map)
    np.testing.assert_allclose([shown[s] for s in expected_map], list(expected_map.values()), rtol=0, atol=1e-8)
    weights = np.array([shown.get(s, 0.0) for s in snapshot.symbols])
    k = snapshot.factors.index(style)
    assert abs(snapshot.exposures[:, k] @ (weights - 1.0 / snapshot.n_assets)) <= 1e-6
    assert weights.max() <= 0.05 + 1e-6 and weights.min() >= -1e-6
    # the risk table is of the optimized weights against the benchmark
    risk = decompose_risk(snapshot, shown, benchmark)
    cell = driver.find_element(By.CSS_SELECTOR, '#risk-totals tr[data-figure="total_risk"] td:nth-child(3)')
    assert float(cell.get_attribute("data-value")) == pytest.approx(risk.annualized().total_risk, rel=1e-9)
    assert "min-tracking-error" in holdings.text and f"neutral to {style}" in holdings.text

    _type(driver, "optimize-max-weight", "0.001")
    driver.find_element(By.ID, "optimize-submit").click()
    error = driver.find_element(By.ID, "optimize-error")
    WebDriverWait(driver, 20).until(lambda _: error.is_displayed() and "infeasible" in error.text)
    assert "max_weight = 0.001 conflicts with" in error.text
    status, api = call(
        service_url,
        "POST",
        "/portfolio/optimize",
        {"model_id": stored_model.model_id, "date": str(day), "max_weight": 0.001, "long_only": True},
    )
    assert status == 422 and "max_weight = 0.001 conflicts with" in api["detail"]
    assert not holdings.is_displayed()
    assert any("422" in message for message in severe_messages(driver))  # the page logged the API's answer
