"""Fuzz the service with schemathesis from its own OpenAPI schema: no request may get a 5xx answer.

Prepares a store with data a fuzzer can reach (a small synthetic panel and one built model, whose id is
given to every ``{model_id}`` and ``{job_id}`` path parameter through a schemathesis config file), starts
``factor-engine serve`` on it in a subprocess, and runs ``schemathesis run http://.../openapi.json --checks
not_a_server_error`` over every operation (positive and negative data, ``--max-examples`` per operation).
Prints schemathesis's summary and exits with its code (0 = no server error found).

Usage::

    python bench/bench_schemathesis.py                       # SQLite store, 50 examples per operation
    python bench/bench_schemathesis.py --database postgresql --max-examples 200
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from factor_engine.config import ModelConfig
from factor_engine.model import build_model
from factor_engine.storage import connect
from factor_engine.synthetic import generate_market
from service_harness import BIN, Server, drop_schema, empty_store, service_env

SCHEMA = "bench_schemathesis"
STYLES = {"styles": {"momentum": {"trailing_days": 60, "half_life": 20, "lag": 5}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--max-examples", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="fe_fuzz_"))
    url, schema = empty_store(args.database, SCHEMA, workdir)
    store = connect(url, schema=schema)
    market = generate_market(80, 260, seed=2)
    store.ingest_panel(market.panel)
    run = store.create_run({"source": "bench_schemathesis"})
    store.start_run(run.id)
    store.save_model(run.id, build_model(market.panel, ModelConfig.from_mapping(STYLES)), timings={})
    store.close()
    print(f"store {url} ({schema or 'default schema'}): panel 80 x 260 and model {run.id}")

    server = Server(service_env(url, schema), log=(workdir / "server.log").open("wb"))
    code = 1
    try:
        base = server.base
        tic = time.perf_counter()
        # the stored model's id (also its job's id) for every {model_id} and {job_id}, so those reads get past 404
        config = workdir / "schemathesis.toml"
        config.write_text(f'[parameters]\n"path.model_id" = "{run.id}"\n"path.job_id" = "{run.id}"\n')
        command = [
            str(BIN / "schemathesis"),
            "--config-file",
            str(config),
            "run",
            f"{base}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            str(args.max_examples),
            "--seed",
            str(args.seed),
            "--workers",
            "2",
            "--phases",
            "examples,coverage,fuzzing",
            "--suppress-health-check",
            "all",
        ]
        print("$", " ".join(command), flush=True)
        code = subprocess.run(command, check=False).returncode
        print(f"schemathesis exit code {code} after {time.perf_counter() - tic:.0f} s (0 = no 5xx found)")
        print(f"server log: {workdir / 'server.log'}")
    finally:
        server.stop()
        if schema:
            drop_schema(url, schema)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
