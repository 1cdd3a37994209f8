# mypy: disable-error-code="import-untyped"
"""Cost of the mesh: the same unary Echo called directly vs through two mTLS sidecars.

    PYTHONPATH=.:gen .venv/bin/python bench/mesh_overhead.py [--rounds 5] [--seconds 3]
        [--compare-nice 0]

The echo server runs on CPU 0, the load generator on CPU 1. Variants, measured in alternating
rounds (median quoted):
  direct        client → app
  mesh          client → client sidecar → (mTLS) → server sidecar → app, both Envoys on CPU 0
                (the pessimistic placement: the caller's sidecar competes with the callee)
  mesh_split    the same, but the client sidecar shares CPU 1 with the load generator (how it
                is deployed: a sidecar lives beside the app that calls through it)
Every Envoy runs with the platform's command line (`envoy_command`, niceness `PROXY_NICE`).
`--compare-nice N` adds `mesh@niceN` and `mesh_split@niceN`: the same paths through a second set
of Envoys started at niceness N (0 = the app's own priority), in the same rounds, so a change of
the sidecars' priority is measured against the same direct baseline.
Throughput uses many in-flight calls; latency is measured with one call at a time. CPU time per
call is recorded for every process on the path (app, each sidecar, the load generator) in both
phases: Envoy's CPU per call depends on how many calls it handles per wakeup, so the sequential
figure is its cost for a lone call.
Results: bench/results/mesh_overhead.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

from suuupra.testing.v1 import echo_service_pb2 as pb  # noqa: E402
from suuupra.testing.v1 import echo_service_pb2_grpc as pb_grpc  # noqa: E402

from suuupra_runtime.mesh.certs import ensure_dev_certificates  # noqa: E402
from suuupra_runtime.mesh.envoy import DevAddressing, render_sidecar, to_yaml  # noqa: E402
from suuupra_runtime.mesh.sidecars import PROXY_NICE, EnvoyProcess  # noqa: E402
from suuupra_runtime.mesh.topology import Topology, parse_topology  # noqa: E402

SERVER_CPU = 0
CLIENT_CPU = 1
CONCURRENCY = 32
_calls = [0]  # every call made by a run (warm-up included), for CPU accounting
RESULTS = ROOT / "bench" / "results" / "mesh_overhead.json"


# -- the server (a separate process pinned to SERVER_CPU) ---------------------------------------


class _Echo(pb_grpc.EchoServiceServicer):
    async def Echo(self, request: pb.EchoRequest, context: Any) -> pb.EchoResponse:  # noqa: N802
        return pb.EchoResponse(message=request.message)


async def _serve(ports: list[int]) -> None:
    server = grpc.aio.server()
    pb_grpc.add_EchoServiceServicer_to_server(_Echo(), server)  # type: ignore[abstract]
    for port in ports:
        server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


# -- the load generator ---------------------------------------------------------------------------


async def _throughput(target: str, seconds: float) -> float:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.EchoServiceStub(channel)
        request = pb.EchoRequest(message="x" * 64)
        for _ in range(50):  # warm up connections and code paths
            await stub.Echo(request)
            _calls[0] += 1
        done = 0
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                await stub.Echo(request)
                done += 1
                _calls[0] += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return done / (time.perf_counter() - start)


async def _latency_p50_ms(target: str, seconds: float) -> float:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.EchoServiceStub(channel)
        request = pb.EchoRequest(message="x" * 64)
        for _ in range(50):
            await stub.Echo(request)
            _calls[0] += 1
        samples: list[float] = []
        stop = time.perf_counter() + seconds
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            await stub.Echo(request)
            samples.append(time.perf_counter() - t0)
            _calls[0] += 1
        return statistics.median(samples) * 1000


def _topology(base: int) -> Topology:
    rule = [
        {"from": n, "rpcs": ["/suuupra.testing.v1.EchoService/Echo"]}
        for n in ("loadgen", "loadgen-split")
    ]
    return parse_topology(
        {
            "trust_domain": "suuupra.local",
            "namespace": "bench",
            "infrastructure": {
                "postgres_port": base + 90,
                "nats_port": base + 91,
                "nats_monitor_port": base + 92,
            },
            "edge": {
                "port_block": base + 80,
                "rate_limit": {"requests_per_second": 100, "burst": 100},
                "max_request_bytes": 65536,
                "debug_service": "echo",
            },
            "services": {
                "echo": {
                    "port_block": base,
                    "grpc_packages": ["suuupra.testing.v1"],
                    "callers": rule,
                },
                "loadgen": {
                    "port_block": base + 10,
                    "grpc_packages": ["suuupra.loadgen.v1"],
                    "upstreams": ["echo"],
                },
                "loadgen-split": {
                    "port_block": base + 20,
                    "grpc_packages": ["suuupra.loadgensplit.v1"],
                    "upstreams": ["echo"],
                },
            },
        }
    )


def _free_base(size: int = 100) -> int:
    import socket

    for base in range(23000, 31000, size):
        ok = True
        for port in range(base, base + size):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range")


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _rss_mb(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / 2**20


# Sidecars of one set: name in the topology, CPU it is pinned to, the variant that goes through it.
_SIDECARS = (
    ("echo", SERVER_CPU, None),
    ("loadgen", SERVER_CPU, "mesh"),
    ("loadgen-split", CLIENT_CPU, "mesh_split"),
)
_SET_SIZE = 100  # ports per topology (one set of Envoys)


def _proc_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


async def _bench(rounds: int, seconds: float, compare_nice: int | None) -> dict[str, Any]:
    os.sched_setaffinity(0, {CLIENT_CPU})
    load_before = os.getloadavg()[0]
    base = _free_base(2 * _SET_SIZE)
    sets: dict[str, tuple[Topology, int]] = {"": (_topology(base), PROXY_NICE)}
    if compare_nice is not None:
        sets[f"@nice{compare_nice}"] = (_topology(base + _SET_SIZE), compare_nice)
    app_ports = [t.service("echo").app_port for t, _ in sets.values()]
    with tempfile.TemporaryDirectory(prefix="suuupra-bench-") as tmp:
        root = Path(tmp)
        server = await asyncio.create_subprocess_exec(
            "taskset",
            "-c",
            str(SERVER_CPU),
            sys.executable,
            __file__,
            "--serve",
            ",".join(map(str, app_ports)),
            env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'gen'}"},
        )
        envoys: dict[str, EnvoyProcess] = {}
        targets = {"direct": f"127.0.0.1:{app_ports[0]}"}
        # Which sidecars each variant's calls pass through (for CPU per call).
        path: dict[str, tuple[str, str]] = {}
        try:
            for suffix, (topology, nice) in sets.items():
                certs = root / f"certs{suffix}"
                ensure_dev_certificates(topology, certs)
                for name, cpu, variant in _SIDECARS:
                    config = root / f"{name}{suffix}.yaml"
                    config.write_text(
                        to_yaml(render_sidecar(topology, name, DevAddressing(), str(certs)))
                    )
                    envoy = EnvoyProcess(
                        config,
                        log_path=root / f"{name}{suffix}.log",
                        cpus=frozenset({cpu}),
                        nice=nice,
                    )
                    envoy.start()
                    envoys[name + suffix] = envoy
                    if variant is not None:
                        targets[variant + suffix] = (
                            f"127.0.0.1:{topology.service(name).outbound_port}"
                        )
                        path[variant + suffix] = (name + suffix, "echo" + suffix)
            for envoy in envoys.values():
                await envoy.wait_ready_async()
            for port in app_ports:
                await _wait_for_server(f"127.0.0.1:{port}")
            await asyncio.sleep(1)
            rss = {
                "app_mb": round(_rss_mb(server.pid), 1),
                "sidecar_mb": round(_rss_mb(envoys["echo"].pid or 0), 1),
            }
            rps: dict[str, list[float]] = {k: [] for k in targets}
            p50: dict[str, list[float]] = {k: [] for k in targets}
            # CPU µs per call, per variant and process, for the throughput and latency phases.
            cpu_us: dict[str, dict[str, dict[str, list[float]]]] = {
                phase: {k: {} for k in targets} for phase in ("throughput", "sequential")
            }
            app = psutil.Process(server.pid)
            meters = {name: psutil.Process(e.pid) for name, e in envoys.items()}

            def snapshot(variant: str) -> dict[str, float]:
                out = {"app": _cpu_seconds(app), "loadgen": _proc_cpu_seconds()}
                if variant in path:
                    client, server_side = path[variant]
                    out["client_sidecar"] = _cpu_seconds(meters[client])
                    out["server_sidecar"] = _cpu_seconds(meters[server_side])
                return out

            async def measured(phase: str, variant: str, run: Any) -> float:
                before, calls_before = snapshot(variant), _calls[0]
                value = float(await run)
                calls = _calls[0] - calls_before
                after = snapshot(variant)
                for k in before:
                    per_call = (after[k] - before[k]) / calls * 1e6
                    cpu_us[phase][variant].setdefault(k, []).append(per_call)
                return value

            for i in range(rounds):
                order = list(targets) if i % 2 == 0 else list(reversed(targets))
                for name in order:
                    rps[name].append(
                        await measured("throughput", name, _throughput(targets[name], seconds))
                    )
                    p50[name].append(
                        await measured(
                            "sequential", name, _latency_p50_ms(targets[name], seconds / 2)
                        )
                    )
                print(
                    f"round {i + 1}: "
                    + ", ".join(f"{n} {rps[n][-1]:.0f} rps {p50[n][-1]:.3f} ms" for n in targets),
                    flush=True,
                )
        finally:
            for envoy in envoys.values():
                envoy.stop()
            server.terminate()
            await asyncio.wait_for(server.wait(), 10)

    median_rps = {k: statistics.median(v) for k, v in rps.items()}
    median_p50 = {k: statistics.median(v) for k, v in p50.items()}
    meshed = [k for k in targets if k != "direct"]
    return {
        "benchmark": "mesh_overhead",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        # Other work on the host shows up as noise; a 1-minute load average near 0 is a clean run.
        "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "grpcio": grpc.__version__,
        },
        "setup": {
            "rounds": rounds,
            "seconds_per_throughput_run": seconds,
            "concurrency": CONCURRENCY,
            "server_cpu": SERVER_CPU,
            "client_cpu": CLIENT_CPU,
            "envoy_concurrency": 1,
            "envoy_nice": {k or "default": n for k, (_, n) in sets.items()},
            "payload_bytes": 64,
        },
        "throughput_rps": {
            k: {"median": round(median_rps[k], 1), "rounds": [round(x, 1) for x in v]}
            for k, v in rps.items()
        },
        "latency_p50_ms": {
            k: {"median": round(median_p50[k], 3), "rounds": [round(x, 3) for x in v]}
            for k, v in p50.items()
        },
        "throughput_ratio": {
            **{f"{k}_vs_direct": round(median_rps[k] / median_rps["direct"], 3) for k in meshed},
            "target": 0.7,
        },
        "added_p50_ms": {
            **{k: round(median_p50[k] - median_p50["direct"], 3) for k in meshed},
            "target": 0.5,
        },
        # Median CPU µs per call of each process on the variant's path (loadgen = this process).
        "cpu_us_per_call": {
            phase: {
                variant: {k: round(statistics.median(v), 1) for k, v in per.items()}
                for variant, per in by_variant.items()
            }
            for phase, by_variant in cpu_us.items()
        },
        "idle_rss": rss,
    }


async def _wait_for_server(target: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            async with grpc.aio.insecure_channel(target) as channel:
                await pb_grpc.EchoServiceStub(channel).Echo(pb.EchoRequest(), timeout=1)
                return
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.1)
    raise RuntimeError("echo server did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument(
        "--compare-nice",
        type=int,
        default=None,
        help="also measure the mesh paths through Envoys at this niceness (0: the app's priority)",
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import uvloop

    if args.serve:
        uvloop.run(_serve([int(p) for p in args.serve.split(",")]))
        return
    result = uvloop.run(_bench(args.rounds, args.seconds, args.compare_nice))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {
                k: result[k]
                for k in ("throughput_ratio", "added_p50_ms", "cpu_us_per_call", "idle_rss")
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
