# mypy: disable-error-code="import-untyped"
"""MFA (TOTP once, recovery codes once) and the reset/verification flows (single use, expiry,
token only ever leaves sealed in the outbox event)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pyotp
import pytest
import sqlalchemy as sa
from suuupra.identity.v1 import identity_events_pb2 as ev
from suuupra.identity.v1 import identity_service_pb2 as pb

from services.identity import store
from services.identity.events import open_sealed_token
from services.identity.keys import Sealer
from services.identity.tests.harness import (
    PASSWORD,
    IdentityHarness,
    bearer,
    error_reason,
    start_harness,
    stop_harness,
)
from suuupra_runtime.db import outbox_table

DELIVERY = Sealer("test", b"d" * 32)


@pytest.fixture(scope="module")
async def h(postgres_server_url: str, nats_url: str) -> AsyncIterator[IdentityHarness]:
    harness = await start_harness(postgres_server_url, nats_url)
    try:
        await harness.bootstrap()
        tenant = await harness.create_tenant("college")
        for name in ("mfa", "reset", "verify", "expire"):
            await harness.create_user(tenant, f"{name}@college.test")
        yield harness
    finally:
        await stop_harness(harness)


async def _latest_event(
    h: IdentityHarness,
    kind: type[ev.PasswordResetRequested] | type[ev.EmailVerificationRequested],
    user_id: str,
) -> tuple[ev.PasswordResetRequested | ev.EmailVerificationRequested, bytes]:
    async with h.wiring.database.engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(outbox_table.c.payload)
                .where(outbox_table.c.event_type == kind.DESCRIPTOR.full_name)
                .order_by(outbox_table.c.seq.desc())
            )
        ).all()
    for (payload,) in rows:
        event = kind.FromString(payload)
        if event.user_id == user_id:
            return event, payload
    raise AssertionError(f"no {kind.DESCRIPTOR.name} event for {user_id}")


async def _user_id(h: IdentityHarness, email: str) -> str:
    tenant = h.tenants["college"]
    async with h.wiring.database.engine.connect() as conn:
        user = await store.user_by_email(conn, tenant.tenant_id, email)
    assert user is not None
    return user.user_id


async def test_totp_code_works_once_and_recovery_codes_once(h: IdentityHarness) -> None:
    token = await h.token("college", "mfa@college.test")
    enrolled = await h.auth.EnrollTotp(pb.EnrollTotpRequest(), metadata=bearer(token))
    totp = pyotp.TOTP(enrolled.secret)
    assert enrolled.provisioning_uri.startswith("otpauth://totp/")
    now = datetime.now(UTC)
    confirmed = await h.auth.ConfirmTotp(
        pb.ConfirmTotpRequest(code=totp.at(now - timedelta(seconds=30))), metadata=bearer(token)
    )
    assert len(confirmed.recovery_codes) == 10

    # Login now needs the second factor.
    first = await h.login("college", "mfa@college.test")
    assert not first.HasField("tokens") and first.mfa_challenge
    code = totp.at(datetime.now(UTC))
    done = await h.auth.CompleteMfaLogin(
        pb.CompleteMfaLoginRequest(mfa_challenge=first.mfa_challenge, totp_code=code)
    )
    assert done.tokens.access_token
    # The same code again, even on a fresh challenge, is refused.
    second = await h.login("college", "mfa@college.test")
    with pytest.raises(grpc.aio.AioRpcError) as replay:
        await h.auth.CompleteMfaLogin(
            pb.CompleteMfaLoginRequest(mfa_challenge=second.mfa_challenge, totp_code=code)
        )
    assert replay.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # The challenge itself is single use too.
    with pytest.raises(grpc.aio.AioRpcError):
        await h.auth.CompleteMfaLogin(
            pb.CompleteMfaLoginRequest(
                mfa_challenge=first.mfa_challenge, totp_code=totp.at(datetime.now(UTC))
            )
        )

    # A recovery code works once.
    recovery = confirmed.recovery_codes[0]
    ok = await h.auth.CompleteMfaLogin(
        pb.CompleteMfaLoginRequest(mfa_challenge=second.mfa_challenge, recovery_code=recovery)
    )
    assert ok.tokens.access_token
    third = await h.login("college", "mfa@college.test")
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await h.auth.CompleteMfaLogin(
            pb.CompleteMfaLoginRequest(mfa_challenge=third.mfa_challenge, recovery_code=recovery)
        )
    assert again.value.code() == grpc.StatusCode.UNAUTHENTICATED
    ok2 = await h.auth.CompleteMfaLogin(
        pb.CompleteMfaLoginRequest(
            mfa_challenge=third.mfa_challenge, recovery_code=confirmed.recovery_codes[1].upper()
        )
    )
    assert ok2.tokens.access_token
    # Codes are stored hashed only.
    async with h.wiring.database.engine.connect() as conn:
        stored = (await conn.execute(sa.select(store.recovery_codes.c.code_hash))).scalars().all()
    assert recovery not in stored and len(stored) == 10


async def test_password_reset_token_once_and_sessions_end(h: IdentityHarness) -> None:
    email = "reset@college.test"
    user_id = await _user_id(h, email)
    old = (await h.login("college", email)).tokens
    await h.users.RequestPasswordReset(
        pb.RequestPasswordResetRequest(tenant_slug="college", email=email)
    )
    # Unknown emails get the same (empty) answer and no event.
    await h.users.RequestPasswordReset(
        pb.RequestPasswordResetRequest(tenant_slug="college", email="ghost@college.test")
    )
    event, payload = await _latest_event(h, ev.PasswordResetRequested, user_id)
    token = open_sealed_token(DELIVERY, event.token, user_id)
    assert token is not None and token.encode() not in payload  # sealed, not plain
    assert open_sealed_token(DELIVERY, event.token, str(uuid.uuid4())) is None  # bound to user
    async with h.wiring.database.engine.connect() as conn:
        stored = (await conn.execute(sa.select(store.one_time_tokens.c.token_hash))).scalars().all()
    assert token not in stored

    new_password = "a-brand-new-passphrase-7"
    await h.users.ResetPassword(pb.ResetPasswordRequest(token=token, new_password=new_password))
    with pytest.raises(grpc.aio.AioRpcError) as twice:
        await h.users.ResetPassword(
            pb.ResetPasswordRequest(token=token, new_password="yet-another-passphrase-8")
        )
    assert twice.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(twice.value) == "INVALID_TOKEN"
    # Reset ended every session; the new password works, the old does not.
    with pytest.raises(grpc.aio.AioRpcError):
        await h.auth.RefreshToken(pb.RefreshTokenRequest(refresh_token=old.refresh_token))
    assert (await h.login("college", email, new_password)).tokens.access_token
    with pytest.raises(grpc.aio.AioRpcError):
        await h.login("college", email, PASSWORD)


async def test_reset_token_expires(h: IdentityHarness) -> None:
    email = "expire@college.test"
    user_id = await _user_id(h, email)
    await h.users.RequestPasswordReset(
        pb.RequestPasswordResetRequest(tenant_slug="college", email=email)
    )
    event, _ = await _latest_event(h, ev.PasswordResetRequested, user_id)
    token = open_sealed_token(DELIVERY, event.token, user_id)
    assert token is not None
    async with h.wiring.database.engine.begin() as conn:
        await conn.execute(
            store.one_time_tokens.update()
            .where(store.one_time_tokens.c.user_id == user_id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    with pytest.raises(grpc.aio.AioRpcError) as expired:
        await h.users.ResetPassword(
            pb.ResetPasswordRequest(token=token, new_password="another-long-passphrase-9")
        )
    assert expired.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (await h.login("college", email)).tokens.access_token  # password unchanged


async def test_email_verification_once_and_expiry(h: IdentityHarness) -> None:
    email = "verify@college.test"
    user_id = await _user_id(h, email)
    token = await h.token("college", email)
    await h.users.RequestEmailVerification(
        pb.RequestEmailVerificationRequest(), metadata=bearer(token)
    )
    event, _ = await _latest_event(h, ev.EmailVerificationRequested, user_id)
    raw = open_sealed_token(DELIVERY, event.token, user_id)
    assert raw is not None
    await h.users.VerifyEmail(pb.VerifyEmailRequest(token=raw))
    me = await h.users.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=bearer(token))
    assert me.user.email_verified
    with pytest.raises(grpc.aio.AioRpcError) as twice:
        await h.users.VerifyEmail(pb.VerifyEmailRequest(token=raw))
    assert twice.value.code() == grpc.StatusCode.UNAUTHENTICATED

    # An expired verification token is refused.
    async with h.wiring.database.engine.begin() as conn:
        await conn.execute(
            store.users.update()
            .where(store.users.c.user_id == user_id)
            .values(email_verified=False)
        )
    await h.users.RequestEmailVerification(
        pb.RequestEmailVerificationRequest(), metadata=bearer(token)
    )
    event2, _ = await _latest_event(h, ev.EmailVerificationRequested, user_id)
    raw2 = open_sealed_token(DELIVERY, event2.token, user_id)
    assert raw2 is not None and raw2 != raw
    async with h.wiring.database.engine.begin() as conn:
        await conn.execute(
            store.one_time_tokens.update()
            .where(store.one_time_tokens.c.user_id == user_id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    with pytest.raises(grpc.aio.AioRpcError) as expired:
        await h.users.VerifyEmail(pb.VerifyEmailRequest(token=raw2))
    assert expired.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_sign_up_sends_the_verification_token(h: IdentityHarness) -> None:
    from suuupra.identity.v1 import tenant_pb2

    await h.create_tenant("signup", settings=tenant_pb2.TenantSettings(self_signup_enabled=True))
    email = "learner@signup.test"
    signup = pb.SignUpRequest(
        request_id=str(uuid.uuid4()),
        tenant_slug="signup",
        email=email,
        display_name="Learner",
        password=PASSWORD,
    )
    user = (await h.users.SignUp(signup)).user
    assert not user.email_verified
    # The account and its verification token commit together: the event is already queued.
    event, _ = await _latest_event(h, ev.EmailVerificationRequested, user.user_id)
    assert event.email == email
    raw = open_sealed_token(DELIVERY, event.token, user.user_id)
    assert raw is not None
    await h.users.SignUp(signup)  # a retried sign-up issues no second token
    again, _ = await _latest_event(h, ev.EmailVerificationRequested, user.user_id)
    assert again.token == event.token
    await h.users.VerifyEmail(pb.VerifyEmailRequest(token=raw))
    token = await h.token("signup", email)
    me = await h.users.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=bearer(token))
    assert me.user.email_verified


async def test_mfa_required_role_gets_self_service_until_enrolled(h: IdentityHarness) -> None:
    import jwt
    from suuupra.identity.v1 import tenant_pb2

    tenant = await h.create_tenant(
        "strict", settings=tenant_pb2.TenantSettings(mfa_required_roles=["instructor"])
    )
    await h.create_user(tenant, "prof@strict.test", roles=["instructor"])
    token = await h.token("strict", "prof@strict.test")
    perms = set(jwt.decode(token, options={"verify_signature": False})["perms"])
    assert perms == {"identity.self.read", "identity.self.manage"}
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await h.users.ListUsers(pb.ListUsersRequest(), metadata=bearer(token))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Self-service still works, so the user can enrol.
    enrolled = await h.auth.EnrollTotp(pb.EnrollTotpRequest(), metadata=bearer(token))
    totp = pyotp.TOTP(enrolled.secret)
    await h.auth.ConfirmTotp(
        pb.ConfirmTotpRequest(code=totp.at(datetime.now(UTC) - timedelta(seconds=30))),
        metadata=bearer(token),
    )
    challenge = (await h.login("strict", "prof@strict.test")).mfa_challenge
    done = await h.auth.CompleteMfaLogin(
        pb.CompleteMfaLoginRequest(mfa_challenge=challenge, totp_code=totp.at(datetime.now(UTC)))
    )
    full = bearer(done.tokens.access_token)
    listed = await h.users.ListUsers(pb.ListUsersRequest(), metadata=full)
    assert listed.users
