# mypy: disable-error-code="import-untyped"
"""Signing keys, sealing, JWT issuing, event mapping and the Argon2id wrapper (no I/O)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from suuupra.identity.v1 import identity_events_pb2 as ev

from services.identity import domain
from services.identity.credentials import Argon2Params, PasswordHashing
from services.identity.events import OutboxEvents, open_sealed_token
from services.identity.keys import (
    AccessClaims,
    Sealer,
    issue_access_token,
    jwks_document,
    new_stored_key,
    oidc_discovery,
    published_keys,
    unseal_key,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
KEK = Sealer("kek", b"k" * 32)


def test_sealer_binds_associated_data_and_key() -> None:
    sealed = KEK.seal(b"secret", b"user-1")
    assert b"secret" not in sealed
    assert KEK.open(sealed, b"user-1") == b"secret"
    assert KEK.open(sealed, b"user-2") is None
    assert Sealer("other", b"o" * 32).open(sealed, b"user-1") is None
    with pytest.raises(ValueError):
        Sealer("short", b"x" * 16)


def test_private_key_is_sealed_and_token_verifies_with_published_jwk() -> None:
    stored = new_stored_key(KEK, NOW)
    key = unseal_key(stored, KEK)
    with pytest.raises(RuntimeError):
        unseal_key(stored, Sealer("wrong", b"w" * 32))
    token, expires = issue_access_token(
        key,
        AccessClaims("u1", "t1", ["student"], ["identity.self.read"], "s1"),
        issuer="iss",
        audience="aud",
        now=datetime.now(UTC),
        ttl=timedelta(minutes=10),
    )
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "EdDSA", "kid": stored.kid, "typ": "JWT"}
    public = jwt.PyJWK(json.loads(stored.public_jwk))
    claims = jwt.decode(token, public.key, algorithms=["EdDSA"], audience="aud", issuer="iss")
    assert claims["sub"] == "u1" and claims["tenant"] == "t1" and claims["sid"] == "s1"
    assert claims["roles"] == ["student"] and claims["perms"] == ["identity.self.read"]
    assert claims["exp"] - claims["iat"] == 600 and claims["jti"]
    assert expires > datetime.now(UTC)


def test_rotation_overlap_publishes_recently_retired_keys_only() -> None:
    current = new_stored_key(KEK, NOW)
    from dataclasses import replace

    recent = replace(new_stored_key(KEK, NOW), retired_at=NOW - timedelta(minutes=5))
    old = replace(new_stored_key(KEK, NOW), retired_at=NOW - timedelta(hours=2))
    published = published_keys([current, recent, old], NOW, timedelta(minutes=20))
    assert [k.kid for k in published] == [current.kid, recent.kid]
    doc = jwks_document(published)
    assert {k["kid"] for k in doc["keys"]} == {current.kid, recent.kid}
    assert all("d" not in k for k in doc["keys"])  # never the private part
    assert oidc_discovery("iss", "http://x/.well-known/jwks.json")["issuer"] == "iss"


def test_token_events_carry_only_sealed_tokens() -> None:
    delivery = Sealer("d1", b"d" * 32)
    events = OutboxEvents(delivery)
    issued = domain.TokenIssued(
        "t1",
        "u1",
        "a@b.org",
        "A",
        domain.PURPOSE_PASSWORD_RESET,
        "raw-token-value",
        NOW + timedelta(minutes=30),
        NOW,
    )
    message = events.to_proto(issued)
    assert isinstance(message, ev.PasswordResetRequested)
    assert b"raw-token-value" not in message.SerializeToString()
    assert message.token.key_id == "d1"
    assert open_sealed_token(delivery, message.token, "u1") == "raw-token-value"
    assert "raw-token-value" not in repr(issued)
    verification = events.to_proto(
        domain.TokenIssued(
            "t1",
            "u1",
            "a@b.org",
            "A",
            domain.PURPOSE_EMAIL_VERIFICATION,
            "v",
            NOW + timedelta(hours=24),
            NOW,
        )
    )
    assert isinstance(verification, ev.EmailVerificationRequested)


def test_status_and_role_events_map_to_their_messages() -> None:
    events = OutboxEvents(Sealer("d1", b"d" * 32))
    kinds = {
        domain.UserStatus.DEACTIVATED: ev.UserDeactivated,
        domain.UserStatus.ACTIVE: ev.UserActivated,
        domain.UserStatus.DELETED: ev.UserDeleted,
    }
    for status, kind in kinds.items():
        assert isinstance(events.to_proto(domain.UserStatusChanged("t", "u", status, NOW)), kind)
    assigned = events.to_proto(domain.RoleChanged("t", "u", "instructor", "courses/1", True, NOW))
    assert isinstance(assigned, ev.RoleAssigned) and assigned.scope == "courses/1"
    revoked = events.to_proto(domain.RoleChanged("t", "u", "instructor", "", False, NOW))
    assert isinstance(revoked, ev.RoleRevoked)


def test_argon2_parameters_cannot_go_below_the_minimum() -> None:
    with pytest.raises(ValueError):
        Argon2Params(memory_kib=8192)
    with pytest.raises(ValueError):
        Argon2Params(time_cost=1)
    with pytest.raises(ValueError):
        Argon2Params(parallelism=2)


async def test_hashing_roundtrip_and_dummy_never_matches() -> None:
    hashing = PasswordHashing(max_concurrent=1)
    try:
        stored = await hashing.hash("correct horse battery staple")
        assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
        assert await hashing.verify(stored, "correct horse battery staple")
        assert not await hashing.verify(stored, "wrong horse battery staple")
        assert not await hashing.verify(None, "dummy-password-for-timing-equalisation")
        assert not await hashing.verify("not-a-hash", "x")
    finally:
        hashing.close()
