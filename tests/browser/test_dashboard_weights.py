"""The dashboard's Portfolio view on weights that look wrong: a sum other than 1 shows the API's warning and
the numbers of the weights as given; percentages show the API's 422 next to the input; the long-short box
sends allow_unnormalized."""

from __future__ import annotations

import pytest
from browser_helpers import StoredModel, call, severe_messages, wait_rendered
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from factor_engine.portfolio.snapshot import snapshot_at
from factor_engine.report.data import FACTOR_CHARTS, PORTFOLIO_CHARTS


def _analyze(driver: WebDriver, text: str, *, long_short: bool = False) -> None:
    driver.execute_script("document.getElementById('portfolio-text').value = arguments[0];", text)
    box = driver.find_element(By.ID, "allow-unnormalized")
    if box.is_selected() != long_short:
        box.click()
    driver.find_element(By.ID, "portfolio-submit").click()


def test_portfolio_weights_that_look_wrong(driver: WebDriver, service_url: str, stored_model: StoredModel) -> None:
    driver.get(f"{service_url}/dashboard")
    wait_rendered(driver, FACTOR_CHARTS)
    driver.find_element(By.CSS_SELECTOR, '.tab[data-view="portfolio"]').click()
    a, b = snapshot_at(stored_model.model).symbols[:2]
    warning = driver.find_element(By.ID, "portfolio-warnings")
    error = driver.find_element(By.ID, "portfolio-error")

    _analyze(driver, f"{a},0.5\n{b},0.4")
    wait_rendered(driver, PORTFOLIO_CHARTS)
    WebDriverWait(driver, 10).until(lambda _: warning.is_displayed() and warning.text)
    status, api = call(
        service_url, "POST", "/portfolio/risk", {"model_id": stored_model.model_id, "weights": {a: 0.5, b: 0.4}}
    )
    assert status == 200 and api["warnings"]
    assert warning.text == api["warnings"][0]
    assert warning.text.startswith("weights sum to 0.9, not 1 (tolerance 0.01)")
    shown = driver.find_element(By.CSS_SELECTOR, '#risk-totals tr[data-figure="total_risk"] td:nth-child(3)')
    assert float(shown.get_attribute("data-value")) == pytest.approx(api["annualized"]["total_risk"], rel=1e-12)

    _analyze(driver, f"{a},60\n{b},40")
    WebDriverWait(driver, 10).until(lambda _: error.is_displayed() and "percentages" in error.text)
    assert "weights look like percentages, not fractions of capital: they sum to 100" in error.text
    assert not warning.is_displayed()
    assert any("422" in message for message in severe_messages(driver))  # the page logged the API's answer

    _analyze(driver, f"{a},1.5\n{b},-1.5", long_short=True)
    WebDriverWait(driver, 10).until(lambda _: not error.is_displayed())
    wait_rendered(driver, PORTFOLIO_CHARTS)
    assert not warning.is_displayed()
