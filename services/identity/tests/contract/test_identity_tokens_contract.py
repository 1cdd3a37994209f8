# mypy: disable-error-code="import-untyped"
"""Access tokens as a service sees them: good ones work; alg none, wrong aud, expired, unknown
kid and bad signatures are refused. JWKS/OIDC discovery are served over HTTP and gRPC, and key
rotation keeps the previous key published."""

from __future__ import annotations

import base64
import json
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from suuupra.identity.v1 import identity_service_pb2 as pb

from services.identity.tests.harness import IdentityHarness, bearer, start_harness, stop_harness


@pytest.fixture(scope="module")
async def h(postgres_server_url: str, nats_url: str) -> AsyncIterator[IdentityHarness]:
    harness = await start_harness(postgres_server_url, nats_url)
    try:
        await harness.bootstrap()
        tenant = await harness.create_tenant("tokens")
        await harness.create_user(tenant, "carol@tokens.test")
        yield harness
    finally:
        await stop_harness(harness)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _claims_of(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


async def _call_me(h: IdentityHarness, token: str) -> grpc.StatusCode:
    try:
        await h.users.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=bearer(token))
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def test_good_token_has_the_agreed_claims(h: IdentityHarness) -> None:
    token = await h.token("tokens", "carol@tokens.test")
    header = jwt.get_unverified_header(token)
    claims = _claims_of(token)
    assert header["alg"] == "EdDSA" and header["kid"]
    assert {"iss", "aud", "sub", "tenant", "roles", "perms", "sid", "jti", "iat", "exp"} <= set(
        claims
    )
    assert claims["roles"] == ["student"]
    assert claims["exp"] - claims["iat"] <= 600
    assert await _call_me(h, token) == grpc.StatusCode.OK


async def test_bad_tokens_are_refused(h: IdentityHarness) -> None:
    good = await h.token("tokens", "carol@tokens.test")
    header = jwt.get_unverified_header(good)
    claims = _claims_of(good)
    now = int(time.time())
    stranger = Ed25519PrivateKey.generate()

    alg_none = (
        _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": header["kid"]}).encode())
        + "."
        + _b64(json.dumps(claims).encode())
        + "."
    )
    # Correctly signed but otherwise bad tokens need our key: sign with the current key.
    ours = h.wiring.identity.keys.current
    wrong_aud = jwt.encode(
        {**claims, "aud": "someone-else"}, ours.private_key, "EdDSA", headers={"kid": ours.kid}
    )
    expired = jwt.encode(
        {**claims, "iat": now - 3600, "exp": now - 1800},
        ours.private_key,
        "EdDSA",
        headers={"kid": ours.kid},
    )
    unknown_kid = jwt.encode(claims, stranger, "EdDSA", headers={"kid": "not-a-key-of-ours"})
    bad_signature = jwt.encode(claims, stranger, "EdDSA", headers={"kid": ours.kid})
    tampered = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    for name, token in {
        "alg none": alg_none,
        "wrong aud": wrong_aud,
        "expired": expired,
        "unknown kid": unknown_kid,
        "bad signature": bad_signature,
        "tampered": tampered,
    }.items():
        assert await _call_me(h, token) == grpc.StatusCode.UNAUTHENTICATED, name
    assert await _call_me(h, good) == grpc.StatusCode.OK


def _http_get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return resp.status, json.loads(resp.read())


async def test_jwks_discovery_and_rotation_with_overlap(h: IdentityHarness) -> None:
    import asyncio

    port = h.server.http_port
    status, jwks = await asyncio.to_thread(_http_get, port, "/.well-known/jwks.json")
    assert status == 200 and jwks["keys"][0]["kty"] == "OKP"
    _, discovery = await asyncio.to_thread(_http_get, port, "/.well-known/openid-configuration")
    assert discovery["issuer"] == h.wiring.identity.config.issuer
    assert discovery["jwks_uri"].endswith("/.well-known/jwks.json")
    grpc_jwks = await h.auth.GetJwks(pb.GetJwksRequest())
    assert json.loads(grpc_jwks.jwks_json) == jwks

    before = await h.token("tokens", "carol@tokens.test")
    old_kid = jwt.get_unverified_header(before)["kid"]
    rotation = pb.RotateSigningKeyRequest(request_id=str(uuid.uuid4()))
    rotated = await h.auth.RotateSigningKey(rotation, metadata=bearer(h.platform_token))
    assert rotated.kid != old_kid
    # A retry with the same request id answers the same and rotates nothing.
    replay = await h.auth.RotateSigningKey(rotation, metadata=bearer(h.platform_token))
    assert replay.kid == rotated.kid
    assert h.wiring.identity.keys.current.kid == rotated.kid
    after = await h.token("tokens", "carol@tokens.test")
    assert jwt.get_unverified_header(after)["kid"] == rotated.kid
    _, jwks2 = await asyncio.to_thread(_http_get, port, "/.well-known/jwks.json")
    assert {k["kid"] for k in jwks2["keys"]} >= {old_kid, rotated.kid}
    # Tokens signed with the previous key keep working until they expire.
    assert await _call_me(h, before) == grpc.StatusCode.OK
    assert await _call_me(h, after) == grpc.StatusCode.OK
    # Only platform admins rotate keys.
    tenant_admin = h.tenants["tokens"].admin_token
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await h.auth.RotateSigningKey(
            pb.RotateSigningKeyRequest(request_id=str(uuid.uuid4())),
            metadata=bearer(tenant_admin),
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_another_service_verifies_identity_tokens_via_jwks(h: IdentityHarness) -> None:
    """Authentication across the mesh: a different service (the runtime's EchoService) fetches
    identity's JWKS over HTTP and accepts good tokens and refuses bad ones."""
    from suuupra.testing.v1 import echo_service_pb2 as echo_pb
    from suuupra.testing.v1 import echo_service_pb2_grpc as echo_rpc

    from suuupra_runtime.auth import HttpJwksProvider, JwtVerifier
    from suuupra_runtime.config import ServerSettings
    from suuupra_runtime.server import RuntimeServer
    from suuupra_runtime.testing.echo_service import echo_definition

    config = h.wiring.identity.config
    definition = echo_definition()
    definition.jwt_verifier = JwtVerifier(
        HttpJwksProvider(f"http://127.0.0.1:{h.server.http_port}/.well-known/jwks.json"),
        config.issuer,
        config.audience,
    )
    echo = RuntimeServer(
        definition,
        ServerSettings(
            service_name="echo",
            grpc_addr="127.0.0.1:0",
            http_addr=None,
            drain_delay_seconds=0.0,
            grace_seconds=1.0,
        ),
    )
    await echo.start()
    try:
        good = await h.token("tokens", "carol@tokens.test")
        claims = _claims_of(good)
        stranger = Ed25519PrivateKey.generate()
        kid = jwt.get_unverified_header(good)["kid"]
        bad = {
            "bad signature": jwt.encode(claims, stranger, "EdDSA", headers={"kid": kid}),
            "unknown kid": jwt.encode(claims, stranger, "EdDSA", headers={"kid": "nope"}),
            "alg none": _b64(json.dumps({"alg": "none", "kid": kid}).encode())
            + "."
            + _b64(json.dumps(claims).encode())
            + ".",
        }
        async with grpc.aio.insecure_channel(f"127.0.0.1:{echo.grpc_port}") as channel:
            stub = echo_rpc.EchoServiceStub(channel)
            answer = await stub.Echo(echo_pb.EchoRequest(message="hi"), metadata=bearer(good))
            assert answer.caller == claims["sub"]
            for name, token in bad.items():
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.Echo(echo_pb.EchoRequest(message="hi"), metadata=bearer(token))
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, name
    finally:
        await echo.stop()


async def test_a_rotation_on_one_replica_is_accepted_by_another(
    h: IdentityHarness, nats_url: str
) -> None:
    from suuupra.identity.v1 import identity_service_pb2_grpc as rpc

    from services.identity.server import build_wiring
    from services.identity.tests.harness import make_config
    from suuupra_runtime.config import ServerSettings
    from suuupra_runtime.server import RuntimeServer

    config = make_config()
    wiring = await build_wiring(h.database_url, nats_url, config)
    replica = RuntimeServer(
        wiring.definition,
        ServerSettings(
            service_name="identity",
            grpc_addr="127.0.0.1:0",
            http_addr=None,
            drain_delay_seconds=0.0,
            grace_seconds=1.0,
            jwt_issuer=config.issuer,
            jwt_audience=config.audience,
        ),
    )
    await replica.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{replica.grpc_port}") as channel:
            users_b = rpc.UserServiceStub(channel)
            await h.auth.RotateSigningKey(
                pb.RotateSigningKeyRequest(request_id=str(uuid.uuid4())),
                metadata=bearer(h.platform_token),
            )
            fresh = await h.token("tokens", "carol@tokens.test")  # signed on replica A
            me = await users_b.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=bearer(fresh))
            assert me.user.email == "carol@tokens.test"
    finally:
        await replica.stop()
