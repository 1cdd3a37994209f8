# mypy: disable-error-code="import-untyped"
"""Authenticated read throughput: `GetCurrentUser` (token check, access check, the user cache
that falls back to two indexed queries) vs a bare grpc.aio echo, both servers pinned to CPU 0,
the load generator on CPU 1. Also measured in the same rounds: the runtime's EchoService with
the same token, and the bare echo given the runtime's SCHED_BATCH poller thread (references,
not the baseline).

    PYTHONPATH=.:gen .venv/bin/python bench/identity_read.py [--rounds 3] [--seconds 3]

Alternating rounds, median quoted; results in bench/results/identity_read.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
from pathlib import Path

import grpc

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

from suuupra.identity.v1 import identity_service_pb2 as pb  # noqa: E402
from suuupra.identity.v1 import identity_service_pb2_grpc as rpc  # noqa: E402

from bench.identity_common import (  # noqa: E402
    CLIENT_CPU,
    CONCURRENCY,
    RESULTS,
    echo_process,
    echo_rate,
    identity_process,
    infrastructure,
    pin_self,
    platform_token,
    rate,
    runtime_echo_process,
)


async def _identity_rate(target: str, token: str, seconds: float) -> float:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = rpc.UserServiceStub(channel)
        metadata = (("authorization", f"Bearer {token}"),)
        request = pb.GetCurrentUserRequest()

        async def call() -> None:
            await stub.GetCurrentUser(request, metadata=metadata)

        return await rate(call, seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    pin_self(CLIENT_CPU)
    identity_rps: list[float] = []
    echo_rps: list[float] = []
    runtime_rps: list[float] = []
    batched_rps: list[float] = []
    with (
        infrastructure() as infra,
        identity_process(infra) as ident,
        echo_process() as echo,
        echo_process(batched_poller=True) as batched_echo,
    ):
        token = asyncio.run(platform_token(ident.target))
        jwks = f"http://{ident.env['SUUUPRA_HTTP_ADDR']}/.well-known/jwks.json"
        with runtime_echo_process(jwks) as runtime_echo:
            for _ in range(args.rounds):
                identity_rps.append(asyncio.run(_identity_rate(ident.target, token, args.seconds)))
                echo_rps.append(asyncio.run(echo_rate(echo, args.seconds)))
                runtime_rps.append(asyncio.run(echo_rate(runtime_echo, args.seconds, token)))
                batched_rps.append(asyncio.run(echo_rate(batched_echo, args.seconds)))
    ratios = [i / e for i, e in zip(identity_rps, echo_rps, strict=True)]
    result = {
        "benchmark": "identity_read",
        "rpc": "UserService/GetCurrentUser (authenticated, DB-backed)",
        "baseline": "bare grpc.aio Echo (uvloop), same CPU pinning",
        "concurrency": CONCURRENCY,
        "rounds": args.rounds,
        "seconds_per_round": args.seconds,
        "identity_rps": identity_rps,
        "echo_rps": echo_rps,
        "runtime_echo_with_token_rps": runtime_rps,
        "ratio_per_round": ratios,
        "ratio_median": statistics.median(ratios),
        # Where the time goes: the shared runtime alone (interceptors + JWT verification, no
        # handler, no database) against the bare echo, and identity against that runtime echo.
        "runtime_echo_ratio_median": statistics.median(
            r / e for r, e in zip(runtime_rps, echo_rps, strict=True)
        ),
        "identity_vs_runtime_echo_median": statistics.median(
            i / r for i, r in zip(identity_rps, runtime_rps, strict=True)
        ),
        # Not the baseline: the bare echo given the runtime's SCHED_BATCH poller thread
        # (suuupra_runtime/grpc_poller.py), to show what that change is worth on its own.
        "echo_with_batched_poller_rps": batched_rps,
        "ratio_vs_echo_with_batched_poller_median": statistics.median(
            i / b for i, b in zip(identity_rps, batched_rps, strict=True)
        ),
        "target_ratio": 0.8,
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "identity_read.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
