# mypy: disable-error-code="import-untyped"
"""Authenticated profile read throughput: `ProfileService/GetProfile` (JWT verification, access
check, one raw-asyncpg query for the profile and the caller's follow edge, per-field privacy)
vs a bare grpc.aio echo; the runtime's own EchoService with the same token shows how much of
the gap is the shared runtime. Servers pinned to CPU 0, the load generator to CPU 1.

    PYTHONPATH=.:gen .venv/bin/python bench/profiles_read.py [--rounds 3] [--seconds 3]

Identity runs too: it mints the token, serves the JWKS and its UserCreated event (through NATS)
creates the profile that is read. Alternating rounds, median quoted; results in
bench/results/profiles_read.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import jwt

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

from suuupra.profiles.v1 import profiles_service_pb2 as pb  # noqa: E402
from suuupra.profiles.v1 import profiles_service_pb2_grpc as rpc  # noqa: E402

from bench.identity_common import (  # noqa: E402
    CLIENT_CPU,
    CONCURRENCY,
    RESULTS,
    Infra,
    echo_process,
    echo_rate,
    identity_process,
    infrastructure,
    pin_self,
    pinned_process,
    platform_token,
    rate,
    repo_pythonpath,
    runtime_echo_process,
    wait_serving,
)
from suuupra_runtime.infra import free_port  # noqa: E402


@contextlib.contextmanager
def profiles_process(infra: Infra, jwks_url: str) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": repo_pythonpath(),
        "DATABASE_URL": infra.database_url,
        "NATS_URL": infra.nats_url,
        "SUUUPRA_GRPC_ADDR": f"127.0.0.1:{port}",
        "SUUUPRA_HTTP_ADDR": f"127.0.0.1:{free_port()}",
        "SUUUPRA_JWKS_URL": jwks_url,
        "SUUUPRA_LOG_LEVEL": "WARNING",
        "SUUUPRA_GRACE_SECONDS": "1",
        "SUUUPRA_DRAIN_DELAY_SECONDS": "0",
    }
    with pinned_process([sys.executable, "-m", "services.profiles"], env):
        asyncio.run(wait_serving(f"127.0.0.1:{port}"))
        yield f"127.0.0.1:{port}"


async def _wait_for_profile(target: str, token: str, user_id: str) -> None:
    """Identity's UserCreated reaches profiles through NATS shortly after both started."""
    deadline = time.monotonic() + 30
    async with grpc.aio.insecure_channel(target) as channel:
        stub = rpc.ProfileServiceStub(channel)
        while True:
            try:
                await stub.GetProfile(
                    pb.GetProfileRequest(user_id=user_id),
                    metadata=(("authorization", f"Bearer {token}"),),
                )
                return
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.2)


async def _profile_rate(target: str, token: str, user_id: str, seconds: float) -> float:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = rpc.ProfileServiceStub(channel)
        metadata = (("authorization", f"Bearer {token}"),)
        request = pb.GetProfileRequest(user_id=user_id)

        async def call() -> None:
            await stub.GetProfile(request, metadata=metadata)

        return await rate(call, seconds)


def _median_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    pin_self(CLIENT_CPU)
    profile_rps: list[float] = []
    echo_rps: list[float] = []
    runtime_rps: list[float] = []
    with infrastructure() as infra, identity_process(infra) as ident, echo_process() as echo:
        token = asyncio.run(platform_token(ident.target))
        user_id = jwt.decode(token, options={"verify_signature": False})["sub"]
        jwks = f"http://{ident.env['SUUUPRA_HTTP_ADDR']}/.well-known/jwks.json"
        with runtime_echo_process(jwks) as runtime_echo, profiles_process(infra, jwks) as target:
            asyncio.run(_wait_for_profile(target, token, user_id))
            for _ in range(args.rounds):
                profile_rps.append(asyncio.run(_profile_rate(target, token, user_id, args.seconds)))
                echo_rps.append(asyncio.run(echo_rate(echo, args.seconds)))
                runtime_rps.append(asyncio.run(echo_rate(runtime_echo, args.seconds, token)))
    ratios = [p / e for p, e in zip(profile_rps, echo_rps, strict=True)]
    result = {
        "benchmark": "profiles_read",
        "rpc": "ProfileService/GetProfile (authenticated, one raw asyncpg query, privacy filter)",
        "baseline": "bare grpc.aio Echo (uvloop), same CPU pinning",
        "concurrency": CONCURRENCY,
        "rounds": args.rounds,
        "seconds_per_round": args.seconds,
        "profiles_rps": profile_rps,
        "echo_rps": echo_rps,
        "runtime_echo_with_token_rps": runtime_rps,
        "ratio_per_round": ratios,
        "ratio_median": statistics.median(ratios),
        "runtime_echo_ratio_median": _median_ratio(runtime_rps, echo_rps),
        "profiles_vs_runtime_echo_median": _median_ratio(profile_rps, runtime_rps),
        "target_ratio": 0.8,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "profiles_read.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
