# mypy: disable-error-code="import-untyped"
"""Whole-platform cold start: `./dev up` from an empty state directory until every process is
healthy (and until demo data is loaded), median of several runs, plus the RSS of each process.

    PYTHONPATH=.:gen .venv/bin/python -m bench.platform_cold_start [--runs 3]

Writes bench/results/platform_cold_start.json. Cold means nothing cached: a new state directory
per run, so PostgreSQL's initdb, the dev CA and all certificates are part of the time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from tests.e2e.platform_process import RunningPlatform, start_platform

RESULTS = Path(__file__).resolve().parent / "results" / "platform_cold_start.json"
HEALTHY_LINE = "[5/5]"  # printed right after the last health check passed
CERTS_LINE = "[2/5]"  # printed once PostgreSQL and NATS are ready


def _rss_mb(pid: int, *, with_children: bool) -> float:
    try:
        proc = psutil.Process(pid)
        procs = [proc, *(proc.children(recursive=True) if with_children else [])]
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return round(total / 2**20, 1)
    except psutil.NoSuchProcess:
        return 0.0


def _health_times(platform: RunningPlatform) -> dict[str, float]:
    """Seconds after health waiting began at which each check passed (from the runner's lines)."""
    section = platform.text().split("[4/5]", 1)[-1].split(HEALTHY_LINE, 1)[0]
    times = {}
    for line in section.splitlines():
        if line.startswith("  ok   ") and line.rstrip().endswith("s"):
            label, _, seconds = line[7:].rstrip().rpartition(" ")
            times[label.strip()] = float(seconds.rstrip("s"))
    return times


def _measure(platform: RunningPlatform) -> dict[str, Any]:
    time.sleep(2)  # let start-up transients (JIT-less imports, first connections) settle
    rss = {
        # PostgreSQL is a postmaster plus its backends and workers: count the whole tree.
        name: _rss_mb(pid, with_children=name == "postgres")
        for name, pid in platform.child_pids().items()
    }
    rss["runner"] = _rss_mb(platform.process.pid, with_children=False)
    return {
        # Same-run reference: embedded PostgreSQL (initdb included) + NATS up, nothing else.
        "infrastructure_seconds": round(platform.seconds_until(CERTS_LINE), 3),
        "healthy_seconds": round(platform.seconds_until(HEALTHY_LINE), 3),
        "health_check_seconds": _health_times(platform),
        "ready_with_demo_data_seconds": round(platform.seconds_until("Suuupra is ready"), 3),
        "rss_mb": rss,
        "rss_total_mb": round(sum(rss.values()), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = []
    load_at_start = round(os.getloadavg()[0], 2)
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="suuupra-cold-") as state:
            running = start_platform(Path(state) / "state")
            try:
                result = _measure(running)
            finally:
                stop_started = time.monotonic()
                code = running.stop()
                result["stop_seconds"] = round(time.monotonic() - stop_started, 3)
            if code != 0:
                raise SystemExit(f"./dev up ended with {code}:\n{running.text()}")
        runs.append(result)
        print(
            f"run {i + 1}: healthy in {result['healthy_seconds']:.2f}s, ready with demo data in "
            f"{result['ready_with_demo_data_seconds']:.2f}s, stopped in "
            f"{result['stop_seconds']:.2f}s, RSS {result['rss_total_mb']} MB"
        )
    summary = {
        "benchmark": "platform_cold_start",
        "what": "./dev up from an empty state dir until every process is healthy",
        "machine": {
            "cpus": psutil.cpu_count(),
            "python": host.python_version(),
            "load_average_1m_at_start": load_at_start,
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),  # the box is shared
        },
        "runs": runs,
        "median_infrastructure_seconds": statistics.median(
            r["infrastructure_seconds"] for r in runs
        ),
        "median_healthy_seconds": statistics.median(r["healthy_seconds"] for r in runs),
        "median_healthy_over_infrastructure": statistics.median(
            r["healthy_seconds"] / r["infrastructure_seconds"] for r in runs
        ),
        "median_ready_with_demo_data_seconds": statistics.median(
            r["ready_with_demo_data_seconds"] for r in runs
        ),
        "median_stop_seconds": statistics.median(r["stop_seconds"] for r in runs),
        "rss_mb_last_run": runs[-1]["rss_mb"],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
