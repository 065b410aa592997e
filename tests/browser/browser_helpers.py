"""Helpers of the browser tests: a stored synthetic model, headless Chromium, the service on a background thread,
chart-contract waits and reads."""

from __future__ import annotations

import datetime
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import uvicorn
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from factor_engine.config import ModelConfig
from factor_engine.model import RiskModel, build_model
from factor_engine.service import Settings, create_app
from factor_engine.storage import Store, connect
from factor_engine.synthetic import generate_market

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
API = "/api/v1/factor-engine"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


def chrome(*, offline: bool = False) -> WebDriver:
    """Headless Debian Chromium through /usr/bin/chromedriver, keeping every browser console message; FAILS
    (never skips) when either is missing. ``offline``: no network at all (file:// pages only)."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.fail(
            f"the browser tests need headless Chromium and chromedriver; missing: {', '.join(missing)} "
            "(run `.ci/services`, which installs them)",
            pytrace=False,
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--window-size=1400,1000", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    if offline:
        options.add_argument("--proxy-server=http://127.0.0.1:9")  # any http(s) request fails: nothing leaves
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """The real service (uvicorn, lifespan and all) on a background thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the service did not start on port {port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def call(base: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """(status, JSON body) of one API request."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{base}{API}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_rendered(driver: WebDriver, names: tuple[str, ...], timeout: float = 20.0, **attributes: str) -> None:
    """Wait until every chart ``names`` has ``data-rendered="true"`` (and the given ``data-*`` values); on a
    timeout, fail naming each chart's state and the browser console."""
    script = """
        const [names, wanted] = arguments;
        return names.every((name) => {
            const div = document.querySelector(`.fe-chart[data-chart="${name}"]`);
            return div && div.dataset.rendered === "true"
                && Object.entries(wanted).every(([key, value]) => div.dataset[key] === value);
        });"""
    try:
        WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: d.execute_script(script, names, attributes))
    except TimeoutException:
        raise AssertionError(
            f"charts not rendered with {attributes} after {timeout} s: {chart_states(driver, names)}; "
            f"console: {driver.get_log('browser')}"
        ) from None


def chart_states(driver: WebDriver, names: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """``{name: its data-* attributes}`` of each chart."""
    states: dict[str, dict[str, str]] = driver.execute_script(
        """return Object.fromEntries(arguments[0].map((name) => {
            const div = document.querySelector(`.fe-chart[data-chart="${name}"]`);
            return [name, div ? {...div.dataset} : null];
        }));""",
        list(names),
    )
    return states


def plotted_data(driver: WebDriver, name: str) -> list[dict[str, Any]]:
    """The traces Plotly holds for chart ``name`` (``div.data``), as JSON."""
    traces: list[dict[str, Any]] = driver.execute_script(
        'const div = document.querySelector(`.fe-chart[data-chart="${arguments[0]}"]`);'
        "return JSON.parse(JSON.stringify(div.data));",
        name,
    )
    return traces


def severe_messages(driver: WebDriver) -> list[str]:
    """Console messages of level SEVERE since the last call (reading the log clears it)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def screenshot(driver: WebDriver, name: str, *, full_page: bool = False) -> Path:
    """Save a PNG under test-artifacts/screenshots/ (full page: the window grown to the document height)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    if full_page:  # the window's frame takes part of its height: grow until the viewport holds the document
        for _ in range(3):
            height, frame = driver.execute_script(
                "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]"
            )
            if driver.execute_script("return window.innerHeight") >= height:
                break
            driver.set_window_size(1400, int(height) + int(frame))
    path = ARTIFACTS / name
    if not driver.save_screenshot(str(path)):
        raise AssertionError(f"could not save the screenshot {path}")
    return path


def clear_artifact(name: str) -> None:
    """Remove a stale screenshot so a test proves it wrote a new one."""
    (ARTIFACTS / name).unlink(missing_ok=True)


# A short momentum window so that 500 days give covariance and specific-risk forecasts on most dates.
BROWSER_CONFIG = {
    "styles": {"momentum": {"trailing_days": 20, "half_life": 10, "lag": 5}},
    "covariance": {"min_periods": 20},
    "adjustments": {"eigenfactor_simulations": 20},
    "specific_risk": {"min_periods": 10},
}


@dataclass(frozen=True)
class StoredModel:
    """A model built from a synthetic market and saved in a store.

    url, schema: where the store is (SQLAlchemy URL; PostgreSQL schema or None).
    model_id: its id in the store. model: the library's RiskModel. panel: the market's panel.
    dates: the dates with every forecast (those the dashboard offers).
    """

    url: str
    schema: str | None
    model_id: str
    model: RiskModel
    panel: pl.DataFrame
    dates: list[datetime.date]


def store_model(url: str, schema: str | None, assets: int = 120, days: int = 500) -> StoredModel:
    """Ingest a synthetic market (seed 11), build its model and save it as a finished run."""
    market = generate_market(assets, days, seed=11, start=datetime.date(2022, 1, 3))
    model = build_model(market.panel, ModelConfig.from_mapping(BROWSER_CONFIG))
    store: Store = connect(url, schema=schema)
    try:
        store.ingest_panel(market.panel)
        run = store.create_run({"source": "tests/browser", "assets": assets, "days": days})
        store.start_run(run.id)
        store.save_model(run.id, model, timings={})
        dates = store.model_dates(run.id)
    finally:
        store.close()
    return StoredModel(url, schema, run.id, model, market.panel, dates)


def library_correlation(stored: StoredModel, day: datetime.date) -> np.ndarray:
    """The model's factor covariance forecast at ``day`` as correlations (NaN where a variance is missing)."""
    covariance = stored.model.factor_covariance
    if covariance is None:
        raise AssertionError("the test model has no covariance forecast")
    matrix = covariance.at(day)
    sd = np.sqrt(np.diag(matrix))
    return matrix / np.outer(sd, sd)
