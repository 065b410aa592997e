"""The dashboard in headless Chromium against the real service: every chart of each view drawn with data
(the chart contract), numbers equal to the library and the API, date changes, API errors shown in the page."""

from __future__ import annotations

import numpy as np
import pytest
from browser_helpers import (
    StoredModel,
    call,
    chart_states,
    clear_artifact,
    library_correlation,
    plotted_data,
    screenshot,
    serve,
    severe_messages,
    store_model,
    wait_rendered,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from db_fixtures import postgres_schema
from factor_engine.portfolio import portfolio_exposures
from factor_engine.portfolio.analytics import WeightsWarning
from factor_engine.portfolio.snapshot import snapshot_at
from factor_engine.report.data import FACTOR_CHARTS, PORTFOLIO_CHARTS
from factor_engine.service import Settings


def heatmap_matrix(driver: WebDriver) -> tuple[list[str], np.ndarray]:
    """(factor names, correlation values) of the heatmap as Plotly holds them (null → NaN)."""
    (trace,) = plotted_data(driver, "correlation-heatmap")
    z = np.array([[np.nan if value is None else value for value in row] for row in trace["z"]], dtype=float)
    return list(trace["x"]), z


def open_dashboard(driver: WebDriver, base: str) -> None:
    driver.get(f"{base}/")  # the root redirects to /dashboard
    wait_rendered(driver, FACTOR_CHARTS)


def test_factors_view_renders_every_chart(driver: WebDriver, service_url: str, stored_model: StoredModel) -> None:
    clear_artifact("dashboard-factors.png")
    open_dashboard(driver, service_url)
    assert driver.current_url == f"{service_url}/dashboard"
    states = chart_states(driver, FACTOR_CHARTS)
    for name, state in states.items():
        assert state["rendered"] == "true", name
        assert int(state["points"]) > 0, (name, state)
        assert "error" not in state, (name, state)
    n_dates = stored_model.model.factor_returns.height
    k = len(stored_model.model.factors)
    # every date is drawn (≤ 520 dates: no sampling); the market chart has one series, the heatmap K × K cells
    market = plotted_data(driver, "cumulative-returns-market")
    assert [trace["name"] for trace in market] == ["market"]
    assert len(market[0]["y"]) == n_dates
    assert int(states["correlation-heatmap"]["points"]) == k * k
    assert states["correlation-heatmap"]["date"] == stored_model.dates[-1].isoformat()
    selected = Select(driver.find_element(By.ID, "date-select")).first_selected_option.get_attribute("value")
    assert selected == stored_model.dates[-1].isoformat()
    screenshot(driver, "dashboard-factors.png", full_page=True)


def test_factor_series_equal_the_library(driver: WebDriver, service_url: str, stored_model: StoredModel) -> None:
    open_dashboard(driver, service_url)
    returns = stored_model.model.factor_returns.sort("date")
    # cumulative returns: prod(1 + f) − 1 by an explicit loop, a missing return counting as 0
    for trace in plotted_data(driver, "cumulative-returns-styles"):
        growth, expected = 1.0, []
        for value in returns.get_column(trace["name"]).to_list():
            growth *= 1.0 + (value or 0.0)
            expected.append(growth - 1.0)
        np.testing.assert_allclose(trace["y"], expected, rtol=1e-9, atol=1e-12)
    # rolling volatility: annualized sample sd of the last 63 daily returns
    market = returns.get_column("market").to_numpy()
    (vol,) = [trace for trace in plotted_data(driver, "rolling-volatility") if trace["name"] == "market"]
    for i in (62, 100, len(market) - 1):
        window = market[i - 62 : i + 1]
        window = window[np.isfinite(window)]
        assert vol["y"][i] == pytest.approx(np.std(window, ddof=1) * np.sqrt(252), rel=1e-6)
    assert all(value is None for value in vol["y"][:62])
    # diagnostics: assets used and R² per date, as the regression reported them
    diagnostics = stored_model.model.diagnostics.sort("date")
    (assets,) = plotted_data(driver, "diagnostics-assets")
    assert assets["y"] == diagnostics.get_column("n_assets").to_list()
    (r2,) = plotted_data(driver, "diagnostics-r2")
    np.testing.assert_allclose(
        np.array([np.nan if v is None else v for v in r2["y"]], dtype=float),
        diagnostics.get_column("r2").cast(float).fill_null(np.nan).to_numpy(),
        rtol=1e-12,
    )


def test_heatmap_equals_library_correlation_and_follows_the_date(
    driver: WebDriver, service_url: str, stored_model: StoredModel
) -> None:
    open_dashboard(driver, service_url)
    last = stored_model.dates[-1]
    factors, z = heatmap_matrix(driver)
    assert factors == list(stored_model.model.factors)
    np.testing.assert_allclose(z, library_correlation(stored_model, last), rtol=1e-9, atol=1e-12)

    earlier = stored_model.dates[len(stored_model.dates) // 2]
    Select(driver.find_element(By.ID, "date-select")).select_by_value(earlier.isoformat())
    wait_rendered(driver, ("correlation-heatmap", "style-distributions"), date=earlier.isoformat())
    _, z_earlier = heatmap_matrix(driver)
    expected = library_correlation(stored_model, earlier)
    np.testing.assert_allclose(z_earlier, expected, rtol=1e-9, atol=1e-12)
    assert not np.allclose(expected, library_correlation(stored_model, last), equal_nan=True)
    # the style histograms count every asset's score at that date (≤ 50 bins)
    exposures = stored_model.model.exposures.filter(stored_model.model.exposures["date"] == earlier)
    for trace in plotted_data(driver, "style-distributions"):
        assert len(trace["y"]) <= 50
        assert sum(trace["y"]) == exposures.get_column(trace["name"]).drop_nulls().drop_nans().len()


def _paste(driver: WebDriver, element_id: str, text: str) -> None:
    driver.execute_script("document.getElementById(arguments[0]).value = arguments[1];", element_id, text)


def test_portfolio_view_matches_the_api_and_the_library(
    driver: WebDriver, service_url: str, stored_model: StoredModel
) -> None:
    clear_artifact("dashboard-portfolio.png")
    open_dashboard(driver, service_url)
    day = stored_model.dates[-1]
    snapshot = snapshot_at(stored_model.model, day)
    symbols = list(snapshot.symbols)
    rng = np.random.default_rng(5)
    weights = {symbol: float(w) for symbol, w in zip(symbols[:30], rng.uniform(0.0, 1.0, 30) / 15.0, strict=True)}
    benchmark = {symbol: 1.0 / 60 for symbol in symbols[10:70]}
    driver.find_element(By.CSS_SELECTOR, '.tab[data-view="portfolio"]').click()
    _paste(driver, "portfolio-text", "symbol,weight\n" + "\n".join(f"{s},{w!r}" for s, w in weights.items()))
    _paste(driver, "benchmark-text", "\n".join(f"{s},{w!r}" for s, w in benchmark.items()))
    driver.find_element(By.ID, "portfolio-submit").click()
    wait_rendered(driver, PORTFOLIO_CHARTS)

    status, api = call(
        service_url,
        "POST",
        "/portfolio/exposures",
        {"model_id": stored_model.model_id, "date": day.isoformat(), "weights": weights, "benchmark": benchmark},
    )
    assert status == 200, api
    with pytest.warns(WeightsWarning, match="not 1"):  # the API answers the same warning: the sum is not 1
        library = portfolio_exposures(snapshot, weights, benchmark)
    assert api["warnings"] and "not 1" in api["warnings"][0]
    traces = {trace["name"]: trace for trace in plotted_data(driver, "portfolio-exposures")}
    assert set(traces) == {"portfolio", "benchmark", "active"}
    for what, trace in traces.items():
        assert trace["x"] == [row["factor"] for row in api["exposures"]]
        np.testing.assert_allclose(trace["y"], [row[what] for row in api["exposures"]], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(trace["y"], library.get_column(what).to_numpy(), rtol=1e-9, atol=1e-12)

    status, risk = call(
        service_url,
        "POST",
        "/portfolio/risk",
        {"model_id": stored_model.model_id, "date": day.isoformat(), "weights": weights, "benchmark": benchmark},
    )
    assert status == 200, risk
    (contributions,) = plotted_data(driver, "portfolio-risk")
    assert contributions["x"][-1] == "specific"
    # contributions to annualized risk (as in the report): variance shares times the risk, summing to it
    assert sum(contributions["y"]) == pytest.approx(risk["annualized"]["total_risk"], rel=1e-9)
    shares = [row["variance_share"] for row in risk["factor_contributions"]] + [
        risk["daily"]["specific_variance_share"]
    ]
    np.testing.assert_allclose(contributions["y"], np.array(shares) * risk["annualized"]["total_risk"], rtol=1e-12)
    shown = driver.find_element(By.CSS_SELECTOR, '#risk-totals tr[data-figure="total_risk"] td:nth-child(3)')
    assert float(shown.get_attribute("data-value")) == pytest.approx(risk["annualized"]["total_risk"], rel=1e-12)
    screenshot(driver, "dashboard-portfolio.png")


def test_bad_portfolio_shows_the_api_message(driver: WebDriver, service_url: str, stored_model: StoredModel) -> None:
    clear_artifact("dashboard-portfolio-error.png")
    open_dashboard(driver, service_url)
    driver.find_element(By.CSS_SELECTOR, '.tab[data-view="portfolio"]').click()
    symbol = snapshot_at(stored_model.model).symbols[0]
    _paste(driver, "portfolio-text", f"{symbol},0.5\nNOT_A_SYMBOL,0.5")
    driver.find_element(By.ID, "portfolio-submit").click()
    error = driver.find_element(By.ID, "portfolio-error")
    WebDriverWait(driver, 10).until(lambda _: error.is_displayed() and error.text)
    assert "weights name 1 symbol(s) the model does not cover" in error.text
    assert "'NOT_A_SYMBOL'" in error.text
    states = chart_states(driver, PORTFOLIO_CHARTS)
    assert all("does not cover" in state["error"] for state in states.values()), states
    # the page reported it on the console too (and the browser logged the 422)
    console = severe_messages(driver)
    assert any("NOT_A_SYMBOL" in message for message in console), console
    assert any("422" in message for message in console), console
    screenshot(driver, "dashboard-portfolio-error.png")

    # a weight that is not a number is caught in the page before any request
    _paste(driver, "portfolio-text", f"symbol,weight\n{symbol},0.5\n{symbol},abc")
    driver.find_element(By.ID, "portfolio-submit").click()
    WebDriverWait(driver, 5).until(lambda _: "abc" in error.text)
    assert error.text == 'portfolio, line 3: weight "abc" is not a number'
    assert any("is not a number" in message for message in severe_messages(driver))


def test_dashboard_on_postgresql(driver: WebDriver) -> None:
    with postgres_schema() as isolated:
        stored = store_model(isolated.url, isolated.schema, assets=60, days=300)
        settings = Settings(database_url=stored.url, database_schema=stored.schema, redis_url=None, api_key=None)
        with serve(settings) as base:
            open_dashboard(driver, base)
            factors, z = heatmap_matrix(driver)
            assert factors == list(stored.model.factors)
            np.testing.assert_allclose(z, library_correlation(stored, stored.dates[-1]), rtol=1e-9, atol=1e-12)
            driver.get("about:blank")  # leave the page before the server stops


def test_api_key_typed_in_the_page_is_sent(driver: WebDriver, stored_model: StoredModel) -> None:
    settings = Settings(database_url=stored_model.url, database_schema=None, redis_url=None, api_key="k3y")
    with serve(settings) as base:
        driver.get(f"{base}/dashboard")
        message = driver.find_element(By.ID, "global-error")
        WebDriverWait(driver, 10).until(lambda _: message.is_displayed())
        assert message.text.startswith("GET /models: missing API key: send the header X-API-Key")
        console = severe_messages(driver)
        assert any("401" in line for line in console) and any("missing API key" in line for line in console)
        key = driver.find_element(By.ID, "api-key")
        key.send_keys("k3y\n")  # Enter commits the field: its change event reloads with the key
        driver.execute_script("arguments[0].blur();", key)
        wait_rendered(driver, FACTOR_CHARTS)
        assert not message.is_displayed()
        assert driver.execute_script("return sessionStorage.getItem('factor-engine-api-key')") == "k3y"
        driver.execute_script("sessionStorage.clear();")
        driver.get("about:blank")
