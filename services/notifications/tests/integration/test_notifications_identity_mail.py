# mypy: disable-error-code="import-untyped"
"""With the real identity service: sign-up → verification mail in the SMTP sink whose token
identity accepts; password reset likewise; redelivered events send no second mail."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import nats
import pytest
from suuupra.identity.v1 import identity_service_pb2 as ipb
from suuupra.identity.v1 import tenant_pb2

from services.identity.tests.harness import (
    PASSWORD,
    IdentityHarness,
    start_harness,
    stop_harness,
)
from services.notifications.tests.harness import Harness, notifications_harness
from suuupra_runtime.testing.rpc_errors import rid
from suuupra_runtime.testing.tokens import bearer

_TOKEN = re.compile(r"token=([A-Za-z0-9_\-]+)")


@pytest.fixture
async def identity(postgres_server_url: str, fresh_nats_url: str) -> AsyncIterator[IdentityHarness]:
    h = await start_harness(postgres_server_url, fresh_nats_url)
    try:
        await h.bootstrap()
        yield h
    finally:
        await stop_harness(h)


@pytest.fixture
async def notifier(postgres_server_url: str, fresh_nats_url: str) -> AsyncIterator[Harness]:
    async with notifications_harness(postgres_server_url, fresh_nats_url) as h:
        yield h


def _token(body: str) -> str:
    found = _TOKEN.search(body)
    assert found, body
    return found.group(1)


async def _delivery_rows(h: Harness) -> int:
    return await h.count("SELECT count(*) FROM deliveries")


async def test_sign_up_verification_and_reset_mails_carry_tokens_identity_accepts(
    identity: IdentityHarness, notifier: Harness
) -> None:
    await identity.create_tenant(
        "acme", settings=tenant_pb2.TenantSettings(self_signup_enabled=True)
    )
    email = "learner@acme.test"
    await identity.users.SignUp(
        ipb.SignUpRequest(
            request_id=rid(),
            tenant_slug="acme",
            email=email,
            display_name="Lea Learner",
            password=PASSWORD,
        )
    )
    # SignUp itself issues the verification token: the mail needs no second call.
    access = await identity.token("acme", email)
    bodies = await notifier.mails_to(email, 1)
    mail = notifier.sink.to(email)[0]
    assert mail["Subject"] == "Verify your email address"
    assert "Lea Learner" in bodies[0]
    assert "https://app.test/verify-email?token=" in bodies[0]
    # Security mail carries no unsubscribe link: it cannot be turned off.
    assert mail["List-Unsubscribe"] is None
    await identity.users.VerifyEmail(ipb.VerifyEmailRequest(token=_token(bodies[0])))
    me = await identity.users.GetCurrentUser(ipb.GetCurrentUserRequest(), metadata=bearer(access))
    assert me.user.email_verified

    await identity.users.RequestPasswordReset(
        ipb.RequestPasswordResetRequest(tenant_slug="acme", email=email)
    )
    bodies = await notifier.mails_to(email, 2)
    reset = notifier.sink.to(email)[1]
    assert reset["Subject"] == "Reset your password"
    assert "/reset-password?token=" in bodies[1]
    await identity.users.ResetPassword(
        ipb.ResetPasswordRequest(token=_token(bodies[1]), new_password="a-brand-new-passphrase-7")
    )
    assert await identity.token("acme", email, "a-brand-new-passphrase-7")

    # The token never rests in our database in the clear: only sealed.
    rows = await notifier.wiring.database.fetch("SELECT context::text AS c FROM deliveries")
    assert all(_token(bodies[1]) not in r["c"] and _token(bodies[0]) not in r["c"] for r in rows)

    # Redelivery: forget which events were handled and make JetStream deliver the whole
    # IDENTITY stream again. Every event is processed a second time; no second mail goes out.
    deliveries_before = await _delivery_rows(notifier)
    await notifier.wiring.database.fetch("DELETE FROM inbox RETURNING event_id")
    nc = await nats.connect(notifier.nats_url)
    try:
        await nc.jetstream().delete_consumer("IDENTITY", "notifications-identity")
    finally:
        await nc.close()

    async def reprocessed() -> bool:
        handled = await notifier.count(
            "SELECT count(*) FROM inbox WHERE consumer = 'notifications-identity'"
        )
        # UserCreated, two token events (and anything else identity emitted) handled again.
        return handled >= 3

    await notifier.until(reprocessed, what="the IDENTITY stream to be handled again", within=20)
    await notifier.wiring.worker.run_once()
    assert len(notifier.sink.to(email)) == 2
    assert await _delivery_rows(notifier) == deliveries_before
