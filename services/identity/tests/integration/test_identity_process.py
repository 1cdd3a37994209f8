# mypy: disable-error-code="import-untyped"
"""`python -m services.identity` as operators run it: bootstrap CLI (once only), the server
process becoming SERVING, JWKS over HTTP, and events reaching NATS through the outbox relay."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import nats
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from suuupra.identity.v1 import identity_events_pb2 as ev
from suuupra.identity.v1 import identity_service_pb2 as pb
from suuupra.identity.v1 import identity_service_pb2_grpc as rpc

from services.identity.tests.harness import PASSWORD, bearer
from suuupra_runtime.infra import free_port
from suuupra_runtime.testing.postgres import execute_autocommit

ROOT = Path(__file__).resolve().parents[4]


@pytest.fixture
def process_env(postgres_server_url: str, nats_url: str) -> Iterator[dict[str, str]]:
    name = f"identity_proc_{uuid.uuid4().hex[:10]}"
    extra = os.environ.get("PYTHONPATH", "")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), str(ROOT / "gen"), extra) if p),
        "DATABASE_URL": postgres_server_url,
        "NATS_URL": nats_url,
        "SUUUPRA_IDENTITY_DATABASE_NAME": name,
        "SUUUPRA_GRPC_ADDR": f"127.0.0.1:{free_port()}",
        "SUUUPRA_HTTP_ADDR": f"127.0.0.1:{free_port()}",
        "SUUUPRA_BOOTSTRAP_PASSWORD": PASSWORD,
        "SUUUPRA_GRACE_SECONDS": "2",
        "SUUUPRA_DRAIN_DELAY_SECONDS": "0",
    }
    yield env
    asyncio.run(
        execute_autocommit(
            postgres_server_url,
            f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
            f'DROP ROLE IF EXISTS "{name}"',
        )
    )


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.identity", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _start_server(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.identity"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture
async def running(process_env: dict[str, str]) -> AsyncIterator[subprocess.Popen[bytes]]:
    boot = _cli(process_env, "bootstrap", "--email", "root@platform.test")
    assert boot.returncode == 0, boot.stderr
    again = _cli(process_env, "bootstrap", "--email", "other@platform.test")
    assert again.returncode == 1 and "already" in again.stderr
    proc = _start_server(process_env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _wait_serving(channel: grpc.aio.Channel, proc: subprocess.Popen[bytes]) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "identity exited early"
        try:
            status = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            if status.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError("identity never became SERVING")


async def test_process_serves_and_publishes_events(
    running: subprocess.Popen[bytes], process_env: dict[str, str], nats_url: str
) -> None:
    async with grpc.aio.insecure_channel(process_env["SUUUPRA_GRPC_ADDR"]) as channel:
        await _wait_serving(channel, running)
        http = process_env["SUUUPRA_HTTP_ADDR"]
        body = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://{http}/.well-known/jwks.json", timeout=5).read()
        )
        assert json.loads(body)["keys"][0]["alg"] == "EdDSA"

        auth = rpc.AuthServiceStub(channel)
        login = await auth.Login(
            pb.LoginRequest(tenant_slug="platform", email="root@platform.test", password=PASSWORD)
        )
        slug = f"t{uuid.uuid4().hex[:8]}"
        created = await rpc.TenantServiceStub(channel).CreateTenant(
            pb.CreateTenantRequest(
                request_id=str(uuid.uuid4()),
                slug=slug,
                display_name="T",
                admin_email=f"admin@{slug}.test",
                admin_display_name="Admin",
                admin_password=PASSWORD,
            ),
            metadata=bearer(login.tokens.access_token),
        )

    # The tenant admin's UserCreated went through the outbox relay onto the IDENTITY stream.
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        sub = await js.subscribe("suuupra.identity.v1.UserCreated", ordered_consumer=True)
        deadline = time.monotonic() + 20
        seen: list[ev.UserCreated] = []
        while time.monotonic() < deadline:
            try:
                msg = await sub.next_msg(timeout=1)
            except nats.errors.TimeoutError:
                continue
            event = ev.UserCreated.FromString(msg.data)
            seen.append(event)
            if event.user_id == created.admin.user_id:
                assert msg.headers and msg.headers.get("Suuupra-Tenant") == created.tenant.tenant_id
                break
        else:
            raise AssertionError(f"UserCreated not published; saw {len(seen)} events")
        await sub.unsubscribe()
    finally:
        await nc.close()

    running.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(running.wait, 30) == 0
