"""Fixtures of the browser tests: a small model in a fresh SQLite store, the real service on it (uvicorn on a
background thread) and one headless Chromium for the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from browser_helpers import StoredModel, chrome, serve, severe_messages, store_model
from selenium.webdriver.remote.webdriver import WebDriver

from factor_engine.service import Settings


@pytest.fixture(scope="session")
def stored_model(tmp_path_factory: pytest.TempPathFactory) -> StoredModel:
    """120 assets × 500 days in a fresh SQLite store."""
    folder = tmp_path_factory.mktemp("browser_store")
    return store_model(f"sqlite:///{folder / 'store.db'}", None)


@pytest.fixture(scope="session")
def service_url(stored_model: StoredModel) -> Iterator[str]:
    """Base URL of the service on the stored model's store (no API key, no Redis)."""
    with serve(Settings(database_url=stored_model.url, database_schema=None, redis_url=None, api_key=None)) as base:
        yield base


@pytest.fixture(scope="session")
def browser() -> Iterator[WebDriver]:
    """One headless Chromium for the session."""
    driver = chrome()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def driver(browser: WebDriver) -> Iterator[WebDriver]:
    """The session's browser with a clean console log; the test fails if the page logged a SEVERE message."""
    browser.set_window_size(1400, 1000)
    severe_messages(browser)  # drop what earlier tests left
    yield browser
    severe = severe_messages(browser)
    if severe:
        pytest.fail(f"console errors (SEVERE) in the page: {severe}", pytrace=False)
