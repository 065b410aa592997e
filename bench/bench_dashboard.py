"""Time the browser dashboard on a large model: first view and portfolio view in headless Chromium.

Builds a risk model of a synthetic market (``--assets`` × ``--days``, seed 0) straight into the store (an
isolated PostgreSQL schema by default), starts ``factor-engine serve`` on it in a subprocess and opens
``/dashboard`` in headless Debian Chromium (/usr/bin/chromium through /usr/bin/chromedriver). Prints:

- the seconds from ``driver.get`` until every chart of the first view (the Factors view of the newest model)
  has ``data-rendered="true"``, cold (``--cold`` fresh browsers, already started, that never loaded the page:
  plotly.min.js neither cached nor compiled) and warm (``--repeats`` reloads in the last one);
- the seconds from clicking "Analyze" with a pasted portfolio of every asset of the last date until the
  exposures and risk charts are drawn (best of ``--repeats``), and checks the drawn exposures against
  ``POST /portfolio/exposures``.

Target: first view ≤ 2 s for 3,000 × 2,520.

Usage::

    python bench/bench_dashboard.py                                   # PostgreSQL, 3000 assets x 2520 days
    python bench/bench_dashboard.py --database sqlite --assets 300 --days 600
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from factor_engine.report.data import FACTOR_CHARTS, PORTFOLIO_CHARTS
from service_harness import Server, drop_schema, empty_store, prepare_store, service_env

SCHEMA = "bench_dashboard"
FIRST_VIEW = FACTOR_CHARTS
PORTFOLIO_VIEW = PORTFOLIO_CHARTS
RENDERED = """return arguments[0].every((name) => {
    const div = document.querySelector(`.fe-chart[data-chart="${name}"]`);
    return div && div.dataset.rendered === "true";
});"""


def chrome() -> WebDriver:
    """Headless Debian Chromium keeping the browser console."""
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--window-size=1400,1000", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def wait_charts(driver: WebDriver, names: tuple[str, ...], timeout: float = 60.0) -> float:
    """Seconds until every chart ``names`` is rendered (polling every 10 ms)."""
    tic = time.perf_counter()
    WebDriverWait(driver, timeout, poll_frequency=0.01).until(lambda d: d.execute_script(RENDERED, list(names)))
    return time.perf_counter() - tic


def first_view(driver: WebDriver, base: str) -> float:
    """Seconds from ``driver.get(/dashboard)`` until every chart of the first view is rendered."""
    tic = time.perf_counter()
    driver.get(f"{base}/dashboard")
    wait_charts(driver, FIRST_VIEW)
    return time.perf_counter() - tic


def portfolio_view(driver: WebDriver, csv: str) -> tuple[float, list[dict[str, Any]]]:
    """Seconds from "Analyze" with the pasted ``csv`` until both portfolio charts are drawn, and the drawn
    exposure traces."""
    driver.execute_script(
        "for (const div of document.querySelectorAll('#view-portfolio .fe-chart')) div.dataset.rendered = 'false';"
        "document.getElementById('portfolio-text').value = arguments[0];",
        csv,
    )
    driver.find_element(By.CSS_SELECTOR, '.tab[data-view="portfolio"]').click()
    tic = time.perf_counter()
    driver.find_element(By.ID, "portfolio-submit").click()
    wait_charts(driver, PORTFOLIO_VIEW)
    seconds = time.perf_counter() - tic
    traces: list[dict[str, Any]] = driver.execute_script(
        "return JSON.parse(JSON.stringify(document.querySelector('[data-chart=\"portfolio-exposures\"]').data));"
    )
    return seconds, traces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=int, default=3000)
    parser.add_argument("--days", type=int, default=2520)
    parser.add_argument("--repeats", type=int, default=5, help="warm page loads and portfolio runs timed")
    parser.add_argument("--cold", type=int, default=3, help="cold page loads timed, each in a fresh browser")
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="fe_dashboard_"))
    url, schema = empty_store(args.database, SCHEMA, workdir)
    model_id, day, symbols = prepare_store(url, schema, args.assets, args.days, "bench_dashboard")

    server = Server(service_env(url, schema))
    driver = None
    try:
        status, _ = server.call("GET", f"/models/{model_id}/factor-returns")  # warm the service's first read
        if status != 200:
            raise RuntimeError(f"factor-returns answered {status}")
        cold = []
        for _ in range(args.cold):  # a fresh browser (empty cache) each time, already up and navigated once
            if driver is not None:
                driver.quit()
            driver = chrome()
            driver.get("about:blank")
            cold.append(first_view(driver, server.base))
        warm = [first_view(driver, server.base) for _ in range(args.repeats)]
        n_points = driver.execute_script(
            "return [...document.querySelectorAll('#view-factors .fe-chart')].map((d) => Number(d.dataset.points));"
        )
        in_page = driver.find_element(By.ID, "status").text
        print(
            f"first view ({len(FIRST_VIEW)} charts, {sum(n_points):,} values plotted; page says '{in_page}'): "
            f"cold (fresh browser) median {np.median(cold):.2f} s, worst {max(cold):.2f} s of {len(cold)}; "
            f"warm best {min(warm):.2f} s, median {np.median(warm):.2f} s "
            f"(target <= 2 s: {'ok' if np.median(cold) <= 2 else 'OVER TARGET'} cold, "
            f"{'ok' if np.median(warm) <= 2 else 'OVER TARGET'} warm)"
        )

        rng = np.random.default_rng(1)
        weights = rng.dirichlet(np.ones(len(symbols)))
        csv = "symbol,weight\n" + "\n".join(f"{s},{w!r}" for s, w in zip(symbols, weights.tolist(), strict=True))
        runs = [portfolio_view(driver, csv) for _ in range(args.repeats)]
        seconds = [run[0] for run in runs]
        status, answer = server.call(
            "POST",
            "/portfolio/exposures",
            {"model_id": model_id, "date": day, "weights": dict(zip(symbols, weights.tolist(), strict=True))},
        )
        drawn = {trace["name"]: trace["y"] for trace in runs[-1][1]}
        served = [row["portfolio"] for row in answer["exposures"]]
        if status != 200 or not np.allclose(drawn["portfolio"], served, rtol=1e-12, atol=0):
            raise RuntimeError(f"the drawn exposures differ from POST /portfolio/exposures: {drawn} vs {answer}")
        print(
            f"portfolio view ({len(symbols):,}-asset pasted CSV → exposures + risk drawn): best "
            f"{min(seconds):.2f} s, median {np.median(seconds):.2f} s; drawn exposures equal the API"
        )
        severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        print(f"console errors: {len(severe)}" + (f" {json.dumps(severe[:3])}" if severe else ""))
    finally:
        if driver is not None:
            driver.quit()
        server.stop()
        if schema:
            drop_schema(url, schema)


if __name__ == "__main__":
    main()
