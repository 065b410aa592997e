"""Kill the service during a background build and restart it: no partial model, the job failed, a retry works.

Steps (PostgreSQL, an isolated schema dropped at the end):

1. ingest a synthetic panel (``--assets`` × ``--days``) with ``factor-engine ingest``;
2. start ``factor-engine serve``; ``POST /risk-model/create`` with ``"background": true`` → 202 and a job;
3. once the job is running (a build stage reported), ``kill -9`` the server;
4. check the database directly: the run is not succeeded and no model row of it exists in any model table;
5. restart the server: ``GET /jobs/{id}`` says failed within one lease (FACTOR_ENGINE_RUN_LEASE_SECONDS = 5
   here) of the kill, its worker having stopped renewing it; ``GET /models`` lists no model;
6. ``POST /jobs/{id}/retry`` → a new job, polled to succeeded; its factor returns are read over HTTP;
7. stop the server (SIGTERM) and start it again: the model is still listed and its factor returns are
   identical.

Prints each step with its timing and exits 1 at the first failed check.

Usage::

    python bench/bench_service_restart.py                  # 3000 assets x 1260 days
    python bench/bench_service_restart.py --assets 500 --days 400
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

from factor_engine.storage import connect
from factor_engine.synthetic import generate_market
from service_harness import BIN, PG_URL, Server, drop_schema, service_env

SCHEMA = "bench_service_restart"
LEASE_SECONDS = 5.0
MODEL_TABLES = (
    "model_symbols",
    "model_factor_returns",
    "model_covariances",
    "model_exposures",
    "model_specific_risk",
    "model_residuals",
)


def check(condition: bool, message: str) -> None:
    print(("  ok    " if condition else "  FAIL  ") + message, flush=True)
    if not condition:
        raise SystemExit(1)


def wait_job(server: Server, job_id: str, until: tuple[str, ...], timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, job = server.call("GET", f"/jobs/{job_id}")
        if status == 200 and job["status"] in until:
            return dict(job)
        time.sleep(0.2)
    raise RuntimeError(f"job {job_id} did not reach {until}")


def model_rows(url: str, run_id: str) -> dict[str, int]:
    store = connect(url, schema=SCHEMA, migrate=False)
    try:
        with store.engine.connect() as connection:
            return {
                table: int(
                    connection.execute(
                        text(f'SELECT count(*) FROM "{SCHEMA}".{table} WHERE model_id = :id'), {"id": run_id}
                    ).scalar_one()
                )
                for table in MODEL_TABLES
            }
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=int, default=3000)
    parser.add_argument("--days", type=int, default=1260)
    args = parser.parse_args()
    env = {**service_env(PG_URL, SCHEMA), "FACTOR_ENGINE_RUN_LEASE_SECONDS": str(LEASE_SECONDS)}
    drop_schema(PG_URL, SCHEMA)  # start from an empty schema
    connect(PG_URL, schema=SCHEMA).close()
    try:
        panel_path = Path(tempfile.mkdtemp(prefix="fe_restart_")) / "panel.parquet"
        panel = generate_market(args.assets, args.days, seed=0).panel
        panel.write_parquet(panel_path)
        tic = time.perf_counter()
        subprocess.run([str(BIN / "factor-engine"), "ingest", str(panel_path)], env=env, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        print(f"1. ingested {panel.height:,} rows ({args.assets} x {args.days}) in {time.perf_counter() - tic:.1f} s")

        server = Server(env)
        request = {
            "start_date": str(panel["date"].min()),
            "end_date": str(panel["date"].max()),
            "universe_size": args.assets,
            "background": True,
        }
        status, answer = server.call("POST", "/risk-model/create", request)
        check(status == 202, f"2. POST /risk-model/create answered {status} with job {answer}")
        job_id = answer["job_id"]
        job = wait_job(server, job_id, ("running", "succeeded", "failed"))
        while job["status"] == "running" and not job.get("stage"):
            job = wait_job(server, job_id, ("running", "succeeded", "failed"))
        check(job["status"] == "running", f"3. job running at stage {job.get('stage')!r}: killing the server (-9)")
        server.kill()
        killed = time.monotonic()

        store = connect(PG_URL, schema=SCHEMA, migrate=False)
        run = store.get_run(job_id)
        store.close()
        rows = model_rows(PG_URL, job_id)
        check(run.status != "succeeded", f"4. run status in the database after the kill: {run.status!r}")
        check(sum(rows.values()) == 0, f"4. model rows of the killed build: {rows}")

        server = Server(env)
        job = wait_job(server, job_id, ("failed", "succeeded"), timeout=4 * LEASE_SECONDS)
        after = time.monotonic() - killed
        check(
            job["status"] == "failed" and after <= LEASE_SECONDS + LEASE_SECONDS / 3 + 1,
            f"5. after restart the job is {job['status']!r} {after:.1f} s after the kill (lease {LEASE_SECONDS} s): "
            f"{job.get('error')!r}",
        )
        status, models = server.call("GET", "/models")
        check(status == 200 and len(models) == 0, f"5. models listed after restart: {len(models)}")

        tic = time.perf_counter()
        status, retry = server.call("POST", f"/jobs/{job_id}/retry")
        check(status in (200, 202), f"6. retry answered {status}: {retry}")
        new_id = retry["job_id"]
        job = wait_job(server, new_id, ("succeeded", "failed"))
        check(
            job["status"] == "succeeded",
            f"6. retried job {new_id} {job['status']} in {time.perf_counter() - tic:.1f} s",
        )
        status, first_read = server.call("GET", f"/models/{new_id}/factor-returns")
        check(status == 200, f"6. factor returns of the new model read over HTTP ({status})")

        server.stop()
        server = Server(env)
        status, models = server.call("GET", "/models")
        check(
            status == 200 and [m["id"] for m in models] == [new_id], f"7. after a second restart: {len(models)} model"
        )
        tic = time.perf_counter()
        status, second_read = server.call("GET", f"/models/{new_id}/factor-returns")
        seconds = time.perf_counter() - tic
        check(
            status == 200 and second_read == first_read,
            f"7. factor returns identical after restart ({seconds * 1000:.0f} ms)",
        )
        server.stop()
        print("all checks passed")
    finally:
        drop_schema(PG_URL, SCHEMA)


if __name__ == "__main__":
    main()
