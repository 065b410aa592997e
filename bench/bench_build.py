"""Benchmark of ``factor-engine build`` and of one portfolio risk decomposition on the built model.

Generates the synthetic market (``factor_engine.synthetic.generate_market``, seed 0), writes it to a
temporary parquet file, runs a small warm-up build (which compiles the numba kernels if their on-disk cache is
missing, as on the first build after an install), then runs ``factor-engine build --data P --out DIR`` in a
subprocess and reports its wall seconds and peak resident memory (``/usr/bin/time -v`` "Maximum resident set
size" when available, else the child's VmHWM polled from /proc), with its CPU seconds (user and system) and
minor page faults: on two cores the wall time is about their sum over 1.6, so a slow run with the same CPU
seconds was waiting for a busy host, and system seconds that vary from run to run are the host backing fresh
memory. Then loads the model, takes the snapshot at its last forecast date and times
:func:`factor_engine.portfolio.decompose_risk` of the equal-weight portfolio of all its assets (best of
``--repeat`` calls, milliseconds; weights passed as a frame ``symbol, weight``).

Targets at 3,000 assets × 2,520 days: build ≤ 15 s and ≤ 4 GB peak resident memory (read strictly: 4e9 bytes,
3,815 MiB), risk decomposition ≤ 10 ms.

Usage::

    python bench/bench_build.py                          # 3000 assets x 2520 days
    python bench/bench_build.py --assets 300 --days 400  # a quick run
    python bench/bench_build.py --builds 5               # five builds: each, the median and the range
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from factor_engine.config import ModelConfig
from factor_engine.model import load_model
from factor_engine.portfolio import decompose_risk
from factor_engine.portfolio.snapshot import snapshot_at
from factor_engine.service.budget import estimate_build_bytes
from factor_engine.service.builds import frame_extent
from factor_engine.synthetic import generate_market

BUILD_TARGET_SECONDS = 15.0
# the build's peak resident memory, read strictly: 4 GB = 4e9 bytes (3,815 MiB)
MEMORY_TARGET_BYTES = 4e9
RISK_TARGET_MS = 10.0
GNU_TIME = Path("/usr/bin/time")
# the warm-up build's assets and days
WARM_UP = (100, 400)


def _cli() -> list[str]:
    """The ``factor-engine`` console script next to this interpreter, else ``python -m factor_engine.cli``."""
    script = Path(sys.executable).with_name("factor-engine")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "factor_engine.cli"]


def _memory_verdict(peak_mib: float) -> str:
    """``<GB> GB, target <= 4 GB: ok`` (or OVER TARGET) of a peak in MiB."""
    verdict = "ok" if peak_mib * 2**20 <= MEMORY_TARGET_BYTES else "OVER TARGET"
    return f"{peak_mib * 2**20 / 1e9:.2f} GB, target <= {MEMORY_TARGET_BYTES / 1e9:.0f} GB: {verdict}"


def _vm_hwm_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass(frozen=True)
class Run:
    """One build: wall seconds, peak RSS (MiB, None if unknown) and how it was measured, CPU seconds, minor
    page faults."""

    seconds: float
    peak_mib: float | None
    how: str
    user: float
    system: float
    faults: int


def time_build(panel_path: Path, out: Path) -> Run:
    """Run the build command once (its CPU seconds and page faults from the children's resource usage)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds, peak, how = _timed_build(panel_path, out)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Run(
        seconds,
        peak,
        how,
        after.ru_utime - before.ru_utime,
        after.ru_stime - before.ru_stime,
        after.ru_minflt - before.ru_minflt,
    )


def _timed_build(panel_path: Path, out: Path) -> tuple[float, float | None, str]:
    """Run the build command; return (wall seconds, peak RSS in MiB or None, how the peak was measured)."""
    command = [*_cli(), "build", "--data", str(panel_path), "--out", str(out)]
    if GNU_TIME.is_file():
        start = time.perf_counter()
        done = subprocess.run([str(GNU_TIME), "-v", *command], capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"build failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
        return seconds, int(match.group(1)) / 1024 if match else None, "/usr/bin/time -v"
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak: float | None = None
    while child.poll() is None:
        peak = max(peak or 0.0, _vm_hwm_mib(child.pid) or 0.0)
        time.sleep(0.02)
    seconds = time.perf_counter() - start
    if child.returncode != 0:
        raise SystemExit(f"build failed ({child.returncode}): {child.stderr.read() if child.stderr else ''}")
    return seconds, peak, "VmHWM polled every 20 ms (a lower bound)"


def time_risk(model_dir: Path, repeat: int) -> tuple[float, float, int]:
    """Best-of-``repeat`` milliseconds of decompose_risk (equal weights over the snapshot's assets), the
    milliseconds of snapshot_at(load_model(...)), and the number of assets."""
    model = load_model(model_dir)
    start = time.perf_counter()
    snapshot = snapshot_at(model)
    snapshot_ms = 1e3 * (time.perf_counter() - start)
    n = snapshot.n_assets
    weights = pl.DataFrame({"symbol": list(snapshot.symbols), "weight": np.full(n, 1.0 / n)})
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        decompose_risk(snapshot, weights)
        best = min(best, time.perf_counter() - start)
    return 1e3 * best, snapshot_ms, n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=int, default=3000, help="assets of the synthetic market")
    parser.add_argument("--days", type=int, default=2520, help="business days of the synthetic market")
    parser.add_argument("--repeat", type=int, default=200, help="decompose_risk calls (the best is reported)")
    parser.add_argument(
        "--builds",
        type=int,
        default=1,
        help="builds to run one after another (each is printed, then the median and the range: on a shared "
        "machine single runs vary by a fifth)",
    )
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench_build_"))
    try:
        start = time.perf_counter()
        panel = generate_market(args.assets, args.days, seed=0).panel
        panel_path = work / "panel.parquet"
        panel.write_parquet(panel_path)
        print(
            f"panel: {panel.height:,} rows, {args.assets} assets x {args.days} days, seed 0 "
            f"(generated and written in {time.perf_counter() - start:.1f} s)"
        )
        # what the service's memory budget check would estimate for this build (default configuration, the
        # styles the panel supports)
        config = ModelConfig()
        n_styles = len(config.styles.resolve(panel.columns)[0])
        estimate = estimate_build_bytes(frame_extent(panel), config, n_styles=n_styles)
        del panel

        # the compiled kernels (numba) are compiled by the first build after an install or a change and loaded
        # from numba's on-disk cache by every later one: a small build first, so the builds timed are the
        # steady state a user sees
        warm_path = work / "warm.parquet"
        generate_market(WARM_UP[0], WARM_UP[1], seed=1).panel.write_parquet(warm_path)
        warm = time_build(warm_path, work / "warm")
        print(
            f"warm-up build ({WARM_UP[0]} assets x {WARM_UP[1]} days; compiles the kernels when their cache is "
            f"missing or stale): {warm.seconds:.2f} s wall, CPU {warm.user:.1f} s user"
        )
        runs = [time_build(panel_path, work / "model") for _ in range(max(1, args.builds))]
        for run in runs:
            peak = "n/a" if run.peak_mib is None else f"{run.peak_mib:,.0f} MiB ({_memory_verdict(run.peak_mib)})"
            verdict = "ok" if run.seconds <= BUILD_TARGET_SECONDS else "OVER TARGET"
            print(
                f"factor-engine build: {run.seconds:.2f} s wall (target <= {BUILD_TARGET_SECONDS:.0f} s: {verdict}), "
                f"peak RSS {peak} ({run.how}); CPU {run.user:.1f} s user + {run.system:.1f} s system, "
                f"{run.faults / 1e6:.2f} M page faults"
            )
        if len(runs) > 1:
            times = sorted(run.seconds for run in runs)
            peaks = [run.peak_mib for run in runs if run.peak_mib is not None]
            verdict = "ok" if statistics.median(times) <= BUILD_TARGET_SECONDS else "OVER TARGET"
            print(
                f"{len(runs)} builds: median {statistics.median(times):.2f} s (target <= {BUILD_TARGET_SECONDS:.0f} s: "
                f"{verdict}), range {times[0]:.2f}-{times[-1]:.2f} s"
                + (f", peak RSS up to {max(peaks):,.0f} MiB ({_memory_verdict(max(peaks))})" if peaks else "")
            )
        peak_mib = max((run.peak_mib for run in runs if run.peak_mib is not None), default=None)
        above = "n/a" if peak_mib is None else f"{estimate / 2**20 / peak_mib:.2f}x the peak"
        print(
            f"service memory estimate of this build (service.budget, {n_styles} styles): "
            f"{estimate / 2**20:,.0f} MiB, {above}"
        )

        risk_ms, snapshot_ms, n = time_risk(work / "model", args.repeat)
        verdict = "ok" if risk_ms <= RISK_TARGET_MS else "OVER TARGET"
        print(f"snapshot_at (last date): {snapshot_ms:.1f} ms, {n:,} assets")
        print(
            f"decompose_risk, {n:,}-asset equal-weight portfolio: {risk_ms:.2f} ms best of {args.repeat} "
            f"(target <= {RISK_TARGET_MS:.0f} ms: {verdict})"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
