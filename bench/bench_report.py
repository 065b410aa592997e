"""Benchmark of the HTML report on the 3,000 × 2,520 synthetic model: file size, time to write, time to render.

Generates the synthetic market (``generate_market(3000, 2520, seed=0)``) and builds its model in process
(``build_model``). Times :func:`factor_engine.report.bias_statistics` (factor portfolios, random portfolios,
single assets) and :func:`factor_engine.report.write_report` with the equal-weight portfolio of the last
forecast date's assets and those bias statistics, and prints the file size. Then opens the file in headless
Chromium (selenium, /usr/bin/chromium and /usr/bin/chromedriver) and prints the seconds from the start of
``driver.get`` until every ``.fe-chart`` div has ``data-rendered="true"`` (best and median of ``--loads``
page loads in one browser, polling every 10 ms; the first load is cold, later ones reuse the browser's compiled
plotly.js), the page's own performance marks (plotly.js evaluated, charts drawn), the charts' ``data-points``
and any console errors.

Targets: report ≤ 10 MB, every chart drawn ≤ 2 s on the first load. Exits 1 when a chart fails or a target is
missed.

Usage::

    python bench/bench_report.py                           # 3000 assets x 2520 days
    python bench/bench_report.py --assets 300 --days 600   # a quick run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from factor_engine.model import build_model
from factor_engine.panel import validate_panel
from factor_engine.portfolio.snapshot import snapshot_at
from factor_engine.report import bias_statistics, write_report
from factor_engine.synthetic import generate_market

SIZE_TARGET_MB = 10.0
RENDER_TARGET_SECONDS = 2.0
STATE = (
    "return Array.from(document.querySelectorAll('.fe-chart')).map(div => [div.dataset.chart, "
    "div.dataset.rendered || null, div.dataset.points || null, div.dataset.error || null])"
)


def _driver() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--window-size=1400,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


MARKS = (
    "return ['fe-plotly-ready', 'fe-charts-drawn'].map(name => "
    "(performance.getEntriesByName(name)[0] || {startTime: NaN}).startTime / 1000)"
)


def time_render(
    driver: webdriver.Chrome, path: Path, timeout: float = 60.0
) -> tuple[float, list[list[str | None]], list[float]]:
    """Seconds from ``driver.get`` until every chart is drawn or failed; each chart's final state; and the page's
    own marks (seconds since navigation start): plotly.js evaluated, every chart drawn."""
    started = time.perf_counter()
    driver.get(path.as_uri())
    while True:
        state = driver.execute_script(STATE)
        if state and all(rendered == "true" or error for _, rendered, _, error in state):
            return time.perf_counter() - started, state, driver.execute_script(MARKS)
        if time.perf_counter() - started > timeout:
            return float("inf"), state, driver.execute_script(MARKS)
        time.sleep(0.01)


def main() -> int:
    """Build, write, render; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", type=int, default=3000)
    parser.add_argument("--days", type=int, default=2520)
    parser.add_argument("--loads", type=int, default=5, help="page loads timed in the browser")
    parser.add_argument("--keep", type=Path, default=None, help="write the report here instead of a temp folder")
    args = parser.parse_args()

    started = time.perf_counter()
    panel = validate_panel(generate_market(args.assets, args.days, seed=0).panel)
    print(f"market {args.assets} x {args.days}: {panel.height:,} rows in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    model = build_model(panel)
    print(f"build_model: {time.perf_counter() - started:.1f} s, {model.factor_returns.height:,} dates solved")

    started = time.perf_counter()
    bias = bias_statistics(model, panel)
    print(f"bias statistics (factor, 100 random portfolios, assets): {time.perf_counter() - started:.2f} s")
    symbols = snapshot_at(model).symbols
    portfolio = {symbol: 1.0 / len(symbols) for symbol in symbols}

    with tempfile.TemporaryDirectory() as temporary:
        out = (args.keep or Path(temporary)) / "report.html"
        started = time.perf_counter()
        write_report(model, out, portfolio=portfolio, bias=bias, title="Synthetic 3,000 x 2,520 model")
        write_seconds = time.perf_counter() - started
        size_mb = out.stat().st_size / 1e6
        print(f"write_report: {write_seconds:.2f} s, {size_mb:.2f} MB ({len(symbols):,}-asset equal-weight portfolio)")

        driver = _driver()
        try:
            driver.get("about:blank")  # the browser's first navigation is not the report's cost
            timings, state = [], []
            for load in range(args.loads):
                seconds, state, (plotly_ready, charts_drawn) = time_render(driver, out)
                timings.append(seconds)
                print(
                    f"load {load + 1}: {seconds:.2f} s (in the page: plotly.js evaluated at {plotly_ready:.2f} s, "
                    f"charts drawn at {charts_drawn:.2f} s after navigation start)"
                )
            errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        finally:
            driver.quit()
    print(
        f"all charts rendered: first load (cold browser) {timings[0]:.2f} s; best {min(timings):.2f} s, "
        f"median {statistics.median(timings):.2f} s over {args.loads} loads"
    )
    for name, rendered, points, error in state:
        print(f"  {name:28s} rendered={rendered} points={points}" + (f" error={error}" if error else ""))
    print(f"console errors: {errors if errors else 'none'}")
    failed = [name for name, rendered, _, error in state if rendered != "true" or error]
    cold_ok, warm_ok = timings[0] <= RENDER_TARGET_SECONDS, statistics.median(timings) <= RENDER_TARGET_SECONDS
    ok = not failed and not errors and size_mb <= SIZE_TARGET_MB and cold_ok
    print(
        f"targets: size ≤ {SIZE_TARGET_MB:.0f} MB {'met' if size_mb <= SIZE_TARGET_MB else 'MISSED'}; "
        f"render ≤ {RENDER_TARGET_SECONDS:.0f} s: first load {'met' if cold_ok else 'MISSED'}, "
        f"median {'met' if warm_ok else 'MISSED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
