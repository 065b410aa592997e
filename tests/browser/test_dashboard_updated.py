"""The dashboard says when each model was last updated: "never updated" in the models list and the model's
line after a build, the update's time (UTC, to the minute) once POST /models/{id}/update has added dates."""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import polars as pl
from browser_helpers import BROWSER_CONFIG, call, serve, wait_rendered
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from factor_engine.config import ModelConfig
from factor_engine.model import build_model
from factor_engine.report.data import FACTOR_CHARTS
from factor_engine.service import Settings
from factor_engine.storage import connect
from factor_engine.synthetic import generate_market


def _shown(driver: WebDriver, base: str) -> tuple[str, str]:
    """(the selected model's label in the models list, the model's line) once the page has drawn the model."""
    driver.get(f"{base}/dashboard")
    wait_rendered(driver, FACTOR_CHARTS)
    label = Select(driver.find_element(By.ID, "model-select")).first_selected_option.text
    return label, driver.find_element(By.ID, "model-info").text


def _minute(iso: str) -> str:
    return datetime.datetime.fromisoformat(iso).astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def test_the_models_list_shows_when_each_model_was_last_updated(driver: WebDriver, tmp_path: Path) -> None:
    panel = generate_market(80, 240, seed=5, start=datetime.date(2022, 1, 3)).panel
    cut = panel.get_column("date").unique().sort()[-3]
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = connect(url)
    try:
        store.ingest_panel(panel.filter(pl.col("date") <= cut))
        run = store.create_run({"source": "tests/browser"}, running=True)
        model = build_model(panel.filter(pl.col("date") <= cut), ModelConfig.from_mapping(BROWSER_CONFIG))
        store.save_model(run.id, model, timings={})
        store.ingest_panel(panel.filter(pl.col("date") > cut))
    finally:
        store.close()
    with serve(Settings(database_url=url, database_schema=None, redis_url=None, api_key=None)) as base:
        label, info = _shown(driver, base)
        status, accepted = call(base, "POST", f"/models/{run.id}/update")
        assert status == 202, accepted
        deadline = time.monotonic() + 60
        while (job := call(base, "GET", f"/jobs/{accepted['job_id']}")[1])["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
        assert job["status"] == "succeeded", job
        summary = call(base, "GET", f"/models/{run.id}")[1]
        updated_label, updated_info = _shown(driver, base)
    built = _minute(summary["created_at"])
    assert label.endswith("assets · never updated") and label.startswith(f"{run.id[:8]} · ")
    assert info.endswith(f"Built {built}; last updated never.")
    updated = _minute(summary["updated_at"])
    assert updated_label.endswith(f" → {summary['last_date']} · 80 assets · updated {updated}")
    assert updated_info.endswith(f"Built {built}; last updated {updated}.")
