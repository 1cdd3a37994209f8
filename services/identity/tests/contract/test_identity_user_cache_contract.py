# mypy: disable-error-code="import-untyped"
""" "Get my user" from memory stays correct: a change committed anywhere (even by plain SQL, as
another replica or an operator would) reaches the cached view through the triggers' notices,
this process reads its own writes at once, and a lost LISTEN connection never serves stale data."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from suuupra.identity.v1 import identity_service_pb2 as pb

from services.identity.tests.harness import (
    IdentityHarness,
    TenantFixture,
    bearer,
    start_harness,
    stop_harness,
)
from suuupra_runtime.testing.polling import eventually
from suuupra_runtime.testing.postgres import execute_autocommit
from suuupra_runtime.testing.rpc_errors import rid


@pytest.fixture(scope="module")
async def h(postgres_server_url: str, nats_url: str) -> AsyncIterator[IdentityHarness]:
    harness = await start_harness(postgres_server_url, nats_url)
    try:
        await harness.bootstrap()
        await harness.create_tenant("cache")
        yield harness
    finally:
        await stop_harness(harness)


async def _me(h: IdentityHarness, token: str) -> pb.GetCurrentUserResponse:
    response: pb.GetCurrentUserResponse = await h.users.GetCurrentUser(
        pb.GetCurrentUserRequest(), metadata=bearer(token)
    )
    return response


async def _listening(h: IdentityHarness) -> None:
    async def up() -> bool:
        return h.wiring.user_changes.listening

    await eventually(up)


async def _cached_user(h: IdentityHarness, email: str) -> tuple[TenantFixture, str, str]:
    tenant = h.tenants["cache"]
    user_id = await h.create_user(tenant, email)
    token = await h.token("cache", email)
    await _listening(h)
    cache = h.wiring.identity.user_cache
    assert cache is not None

    async def cached() -> bool:
        # A read overlapping a notice (sign-up and login write the user) is not stored.
        await _me(h, token)
        return cache.holds(tenant.tenant_id, user_id)

    await eventually(cached)  # the view is now served from memory
    return tenant, user_id, token


async def test_a_change_made_outside_this_process_reaches_the_cached_view(
    h: IdentityHarness,
) -> None:
    _, user_id, token = await _cached_user(h, "sql@cache.test")
    # Plain SQL: no code of this process runs, only the trigger's notice can invalidate (the
    # cache's own expiry is 30 s, far beyond the wait below).
    await execute_autocommit(
        h.database_url, f"UPDATE users SET display_name = 'Renamed' WHERE user_id = '{user_id}'"
    )

    async def renamed() -> bool:
        return (await _me(h, token)).user.display_name == "Renamed"

    await eventually(renamed, within=5)
    await execute_autocommit(
        h.database_url,
        f"DELETE FROM role_assignments WHERE user_id = '{user_id}' AND role_name = 'student'",
    )

    async def role_gone() -> bool:
        return "student" not in (await _me(h, token)).user.roles

    await eventually(role_gone, within=5)


async def test_this_process_reads_its_own_writes_at_once(
    h: IdentityHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant, user_id, token = await _cached_user(h, "own@cache.test")
    # Deaf to the notices: only the local invalidation at commit can make the next read fresh.
    monkeypatch.setattr(h.wiring.user_changes, "_on_payload", lambda _payload: None)
    await h.roles.AssignRole(
        pb.AssignRoleRequest(request_id=rid(), user_id=user_id, role_name="teaching_assistant"),
        metadata=bearer(tenant.admin_token),
    )
    assert "teaching_assistant" in (await _me(h, token)).user.roles
    await h.roles.RevokeRole(
        pb.RevokeRoleRequest(request_id=rid(), user_id=user_id, role_name="teaching_assistant"),
        metadata=bearer(tenant.admin_token),
    )
    assert "teaching_assistant" not in (await _me(h, token)).user.roles


async def test_a_lost_listen_connection_never_serves_a_stale_view(h: IdentityHarness) -> None:
    _, user_id, token = await _cached_user(h, "lost@cache.test")
    listener = h.wiring.user_changes
    lost_pid = listener.server_pid
    assert lost_pid is not None
    await execute_autocommit(h.database_url, f"SELECT pg_terminate_backend({int(lost_pid)})")
    # Changed while nobody (or a fresh connection) listens: the notice may be lost.
    await execute_autocommit(
        h.database_url, f"UPDATE users SET display_name = 'Unheard' WHERE user_id = '{user_id}'"
    )

    async def relistening() -> bool:
        return listener.server_pid not in (None, lost_pid)

    await eventually(relistening)
    assert (await _me(h, token)).user.display_name == "Unheard"
