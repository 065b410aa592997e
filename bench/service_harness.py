"""Shared by the service benchmarks: ``factor-engine serve`` in a subprocess, JSON calls, schema clean-up."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

from factor_engine.config import ModelConfig
from factor_engine.model import build_model
from factor_engine.storage import connect
from factor_engine.synthetic import generate_market

PREFIX = "/api/v1/factor-engine"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(url: str, schema: str | None) -> dict[str, str]:
    """The environment of a server on ``url`` (and ``schema``), without Redis or an API key."""
    env = {**os.environ, "FACTOR_ENGINE_DATABASE_URL": url}
    for name in ("REDIS_URL", "FACTOR_ENGINE_API_KEY", "FACTOR_ENGINE_DATABASE_SCHEMA"):
        env.pop(name, None)
    if schema:
        env["FACTOR_ENGINE_DATABASE_SCHEMA"] = schema
    return env


class Server:
    """``factor-engine serve`` on a free port, started and waited for until ``/health`` answers 200."""

    def __init__(self, env: dict[str, str], log: IO[bytes] | None = None, timeout: float = 60.0) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        output = log if log is not None else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [str(BIN / "factor-engine"), "serve", "--port", str(self.port)], env=env, stdout=output, stderr=output
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with code {self.process.returncode}")
            try:
                if self.call("GET", "/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.kill()
        raise RuntimeError("the server did not become healthy")

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """(status, decoded JSON body or None) of one request to ``PREFIX + path``."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.base}{PREFIX}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as error:
            raw = error.read()
            return error.code, json.loads(raw) if raw else None

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        """SIGTERM and wait (graceful shutdown)."""
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


def empty_store(database: str, schema: str, workdir: Path) -> tuple[str, str | None]:
    """``(url, schema)`` of an empty store for a benchmark: the PostgreSQL ``schema`` (dropped first if a
    previous run left it) when ``database`` is "postgresql", else a new SQLite file in ``workdir``."""
    if database != "postgresql":
        return f"sqlite:///{workdir / 'fe.db'}", None
    drop_schema(PG_URL, schema)
    return PG_URL, schema


def drop_schema(url: str, schema: str) -> None:
    """``DROP SCHEMA .. CASCADE`` of a PostgreSQL schema a benchmark used."""
    store = connect(url, schema=schema, migrate=False)
    try:
        with store.engine.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        store.close()


def prepare_store(url: str, schema: str | None, assets: int, days: int, source: str) -> tuple[str, str, list[str]]:
    """Ingest the synthetic panel (seed 0), build and save a model with the default configuration; returns
    (model id, its last date, the symbols of that date's snapshot)."""
    store = connect(url, schema=schema)
    try:
        market = generate_market(assets, days, seed=0)
        tic = time.perf_counter()
        store.ingest_panel(market.panel)
        run = store.create_run({"source": source, "assets": assets, "days": days})
        store.start_run(run.id)
        store.save_model(run.id, build_model(market.panel, ModelConfig()), timings={})
        snapshot = store.snapshot(run.id)
        day = store.model_dates(run.id)[-1]
        print(
            f"store: {store.describe()}; model {run.id} of {assets} x {days} built and saved in "
            f"{time.perf_counter() - tic:.1f} s; last date {day}: {snapshot.n_assets:,} assets"
        )
        return run.id, day.isoformat(), list(snapshot.symbols)
    finally:
        store.close()
