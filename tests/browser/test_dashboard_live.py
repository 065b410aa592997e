"""The dashboard's Live view in headless Chromium against the real service: a feed sends the next day's prices of
a synthetic market through the stream, in steps, and the view's bars follow each step with the library's live
factor returns; a portfolio typed into the view gets the library's live P&L. Saves the screenshot of the view
(test-artifacts/screenshots/live.png; docs/screenshots/live.png is a copy of it)."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import polars as pl
import pytest
import websocket  # websocket-client
from browser_helpers import API, BROWSER_CONFIG, clear_artifact, plotted_data, screenshot, serve
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from factor_engine.config import ModelConfig
from factor_engine.live import LiveModel, LiveSession
from factor_engine.model import build_model
from factor_engine.service import Settings
from factor_engine.storage import connect
from factor_engine.synthetic import generate_market

STEPS = 4


@pytest.fixture(scope="module")
def live_market(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A model built through the previous close in a fresh store, and the next day's returns and closes."""
    panel = generate_market(120, 300, seed=13, start=datetime.date(2023, 1, 2)).panel
    last = panel.get_column("date").max()
    before = panel.filter(pl.col("date") < last)
    model = build_model(before, ModelConfig.from_mapping(BROWSER_CONFIG))
    url = f"sqlite:///{tmp_path_factory.mktemp('live_browser') / 'store.db'}"
    store = connect(url)
    try:
        store.ingest_panel(before)
        run = store.create_run({"source": "tests/browser/test_dashboard_live"})
        store.start_run(run.id)
        store.save_model(run.id, model, timings={})
    finally:
        store.close()
    live_model = LiveModel.from_model(model, before)
    today = panel.filter((pl.col("date") == last) & pl.col("symbol").is_in(list(live_model.symbols)))
    today = today.filter(pl.col("asset_returns").is_not_null())
    returns = dict(zip(today["symbol"].to_list(), today["asset_returns"].to_list(), strict=True))
    rng = np.random.default_rng(4)
    return {
        "url": url,
        "model_id": run.id,
        "live_model": live_model,
        "returns": returns,
        "closes": {symbol: round(float(rng.uniform(10, 400)), 2) for symbol in returns},
    }


@pytest.fixture(scope="module")
def live_service(live_market: dict[str, Any]) -> Iterator[str]:
    with serve(Settings(database_url=live_market["url"], database_schema=None, redis_url=None, api_key=None)) as base:
        yield base


def wait_update(driver: WebDriver, chart: str, update: int, timeout: float = 20.0) -> None:
    """Wait until ``chart`` is drawn with the result of ``update`` updates."""
    script = 'const d = document.querySelector(`.fe-chart[data-chart="${arguments[0]}"]`); return d && d.dataset;'
    WebDriverWait(driver, timeout, poll_frequency=0.05).until(
        lambda d: (
            (data := d.execute_script(script, chart))
            and data.get("update") == str(update)
            and data.get("rendered") == "true"
        ),
        message=f"{chart} not drawn with update {update}",
    )


def bars(driver: WebDriver) -> dict[str, float]:
    """factor → the bar the Live view shows for it."""
    shown: dict[str, float] = {}
    for trace in plotted_data(driver, "live-factor-returns"):
        shown.update({x: y for x, y in zip(trace["x"], trace["y"], strict=True) if y is not None})
    return shown


def test_live_view_follows_the_feed(driver: WebDriver, live_service: str, live_market: dict[str, Any]) -> None:
    clear_artifact("live.png")
    driver.get(f"{live_service}/dashboard")
    WebDriverWait(driver, 30).until(lambda d: "drawn" in d.find_element(By.ID, "status").text)
    driver.find_element(By.CSS_SELECTOR, '.tab[data-view="live"]').click()
    WebDriverWait(driver, 20).until(lambda d: "subscribed" in d.find_element(By.ID, "live-status").text)

    reference = LiveSession(live_market["live_model"])
    closes, returns = live_market["closes"], live_market["returns"]
    symbols = sorted(returns)
    feed_url = f"{live_service.replace('http://', 'ws://')}{API}/live/stream/{live_market['model_id']}?channel=default"
    feed = websocket.create_connection(feed_url, timeout=20)
    try:
        assert json.loads(feed.recv())["type"] == "ready"
        feed.send(json.dumps({"type": "closes", "closes": closes}))
        reference.set_closes(closes)
        previous: dict[str, float] = {}
        for step in range(1, STEPS + 1):
            # the day's prices arrive in steps: each step prices one more part of the universe
            part = symbols[(step - 1) * len(symbols) // STEPS : step * len(symbols) // STEPS]
            prices = {s: closes[s] * (1.0 + returns[s]) for s in part}
            feed.send(json.dumps({"type": "update", "id": step, "prices": prices}))
            result = reference.update(prices=prices)
            wait_update(driver, "live-factor-returns", step)
            shown = bars(driver)
            expected = {f: v for f, v in zip(result.factors, result.factor_returns.tolist(), strict=True) if v == v}
            assert shown.keys() == expected.keys()
            np.testing.assert_allclose([shown[f] for f in expected], list(expected.values()), rtol=1e-12, atol=0)
            assert shown != previous  # the view changed with the update
            previous = shown
            priced = driver.find_element(By.CSS_SELECTOR, "#live-summary tbody tr:nth-child(3) td")
            assert priced.get_attribute("data-value") == str(result.n_priced)

        snapshot = live_market["live_model"].snapshot
        held = [s for s in snapshot.symbols if s in returns][:25]
        weights = {s: 1.0 / len(held) for s in held}
        driver.execute_script(
            "document.getElementById('live-portfolio-text').value = arguments[0];",
            "\n".join(f"{s},{w}" for s, w in weights.items()),
        )
        driver.find_element(By.ID, "live-portfolio-submit").click()
        wait_update(driver, "live-portfolio-pnl", STEPS)
        want = reference.portfolio(weights)
        total = driver.find_element(By.CSS_SELECTOR, "#live-pnl tbody tr:first-child td")
        assert float(total.get_attribute("data-value") or "nan") == pytest.approx(want.pnl, rel=1e-12)
        (trace,) = plotted_data(driver, "live-portfolio-pnl")
        assert trace["y"][:-1] == pytest.approx(want.factor_pnl["pnl"].to_list(), rel=1e-12, abs=1e-18)
        assert trace["y"][-1] == pytest.approx(want.specific_pnl, rel=1e-9, abs=1e-15)
    finally:
        feed.close()
    path = screenshot(driver, "live.png", full_page=True)
    assert path.stat().st_size > 10_000
