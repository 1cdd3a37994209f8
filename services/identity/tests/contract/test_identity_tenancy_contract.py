# mypy: disable-error-code="import-untyped"
"""Users, roles and tenants through gRPC: CRUD with etags and pagination, RBAC, audit, and a
tenant admin of tenant A who can neither read nor change anything of tenant B."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from suuupra.identity.v1 import identity_service_pb2 as pb
from suuupra.identity.v1 import tenant_pb2, user_pb2

from services.identity.tests.harness import (
    IdentityHarness,
    bearer,
    error_reason,
    field_violations,
    rid,
    start_harness,
    stop_harness,
)


@pytest.fixture(scope="module")
async def h(postgres_server_url: str, nats_url: str) -> AsyncIterator[IdentityHarness]:
    harness = await start_harness(postgres_server_url, nats_url)
    try:
        await harness.bootstrap()
        await harness.create_tenant("alpha")
        await harness.create_tenant("beta")
        yield harness
    finally:
        await stop_harness(harness)


async def _code(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def test_tenant_a_admin_cannot_touch_tenant_b(h: IdentityHarness) -> None:
    alpha, beta = h.tenants["alpha"], h.tenants["beta"]
    b_user = await h.create_user(beta, "bee@beta.test")
    a = bearer(alpha.admin_token)
    users, roles = h.users, h.roles
    assert await _code(users.GetUser(pb.GetUserRequest(user_id=b_user), metadata=a)) == (
        grpc.StatusCode.NOT_FOUND
    )
    update = pb.UpdateUserRequest(
        request_id=rid(),
        user=user_pb2.User(user_id=b_user, display_name="pwned"),
        update_mask=FieldMask(paths=["display_name"]),
    )
    assert await _code(users.UpdateUser(update, metadata=a)) == grpc.StatusCode.NOT_FOUND
    for call in (
        users.DeactivateUser(
            pb.DeactivateUserRequest(request_id=rid(), user_id=b_user), metadata=a
        ),
        users.DeleteUser(pb.DeleteUserRequest(request_id=rid(), user_id=b_user), metadata=a),
        roles.AssignRole(
            pb.AssignRoleRequest(request_id=rid(), user_id=b_user, role_name="tenant_admin"),
            metadata=a,
        ),
        roles.ListRoleAssignments(pb.ListRoleAssignmentsRequest(user_id=b_user), metadata=a),
        roles.CheckPermission(
            pb.CheckPermissionRequest(user_id=b_user, permission="identity.users.read"),
            metadata=a,
        ),
    ):
        assert await _code(call) == grpc.StatusCode.NOT_FOUND
    assert (
        await _code(
            h.tenants_api.GetTenant(pb.GetTenantRequest(tenant_id=beta.tenant_id), metadata=a)
        )
        == grpc.StatusCode.PERMISSION_DENIED
    )
    update_tenant = pb.UpdateTenantRequest(
        request_id=rid(),
        tenant=tenant_pb2.Tenant(tenant_id=beta.tenant_id, display_name="mine now"),
        update_mask=FieldMask(paths=["display_name"]),
    )
    assert await _code(h.tenants_api.UpdateTenant(update_tenant, metadata=a)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    listed = await users.ListUsers(pb.ListUsersRequest(page_size=500), metadata=a)
    assert b_user not in {u.user_id for u in listed.users}
    assert {u.tenant_id for u in listed.users} == {alpha.tenant_id}
    # Creating tenants is a platform-admin power.
    create = pb.CreateTenantRequest(
        request_id=rid(),
        slug="gamma",
        display_name="G",
        admin_email="g@g.test",
        admin_display_name="G",
        admin_password="violet-harbour-lantern-42",
    )
    assert await _code(h.tenants_api.CreateTenant(create, metadata=a)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    # Nothing changed in B.
    b = bearer(beta.admin_token)
    still = await users.GetUser(pb.GetUserRequest(user_id=b_user), metadata=b)
    assert still.user.display_name == "bee" and still.user.status == user_pb2.USER_STATUS_ACTIVE
    assert list(still.user.roles) == ["student"]
    tenant_b = await h.tenants_api.GetTenant(pb.GetTenantRequest(), metadata=b)
    assert tenant_b.tenant.display_name == "Beta"


async def test_user_lifecycle_etag_pagination_and_audit(h: IdentityHarness) -> None:
    alpha = h.tenants["alpha"]
    a = bearer(alpha.admin_token)
    ids = [await h.create_user(alpha, f"s{i}@alpha.test") for i in range(5)]
    staff = await h.create_user(alpha, "staff1@alpha.test", roles=["staff"])

    # Duplicate email (normalised) is ALREADY_EXISTS; bad input is INVALID_ARGUMENT.
    dup = pb.CreateUserRequest(request_id=rid(), email="S0@Alpha.TEST", display_name="x")
    with pytest.raises(grpc.aio.AioRpcError) as exists:
        await h.users.CreateUser(dup, metadata=a)
    assert exists.value.code() == grpc.StatusCode.ALREADY_EXISTS
    malformed = pb.CreateUserRequest(request_id=rid(), email="not an email", display_name="x")
    with pytest.raises(grpc.aio.AioRpcError) as bad_email:
        await h.users.CreateUser(malformed, metadata=a)
    assert bad_email.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "email" in field_violations(bad_email.value)
    weak = pb.CreateUserRequest(
        request_id=rid(), email="weak@alpha.test", display_name="w", password="password1234"
    )
    with pytest.raises(grpc.aio.AioRpcError) as weak_err:
        await h.users.CreateUser(weak, metadata=a)
    assert weak_err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "password" in field_violations(weak_err.value)

    # Pagination walks every user exactly once; filters apply.
    seen: list[str] = []
    token = ""
    while True:
        page = await h.users.ListUsers(
            pb.ListUsersRequest(page_size=2, page_token=token), metadata=a
        )
        seen.extend(u.user_id for u in page.users)
        token = page.next_page_token
        if not token:
            break
    assert set(ids) | {staff} <= set(seen) and len(seen) == len(set(seen))
    only_staff = await h.users.ListUsers(pb.ListUsersRequest(role="staff"), metadata=a)
    assert [u.user_id for u in only_staff.users] == [staff]
    found = await h.users.ListUsers(pb.ListUsersRequest(query="s3@"), metadata=a)
    assert [u.user_id for u in found.users] == [ids[3]]

    # Update with etag; a stale etag is ABORTED and changes nothing.
    got = (await h.users.GetUser(pb.GetUserRequest(user_id=ids[0]), metadata=a)).user
    req = pb.UpdateUserRequest(
        request_id=rid(),
        user=user_pb2.User(user_id=ids[0], display_name="Renamed", etag=got.etag),
        update_mask=FieldMask(paths=["display_name"]),
    )
    updated = (await h.users.UpdateUser(req, metadata=a)).user
    assert updated.display_name == "Renamed" and updated.etag != got.etag
    again = await h.users.UpdateUser(req, metadata=a)  # same request id: first response
    assert again.user == updated
    stale = pb.UpdateUserRequest(
        request_id=rid(),
        user=user_pb2.User(user_id=ids[0], display_name="Other", etag=got.etag),
        update_mask=FieldMask(paths=["display_name"]),
    )
    with pytest.raises(grpc.aio.AioRpcError) as aborted:
        await h.users.UpdateUser(stale, metadata=a)
    assert aborted.value.code() == grpc.StatusCode.ABORTED

    # Deactivation ends sessions and blocks login; activation restores; delete frees the email.
    session = (await h.login("alpha", "s1@alpha.test")).tokens
    await h.users.DeactivateUser(
        pb.DeactivateUserRequest(request_id=rid(), user_id=ids[1]), metadata=a
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await h.auth.RefreshToken(pb.RefreshTokenRequest(refresh_token=session.refresh_token))
    with pytest.raises(grpc.aio.AioRpcError) as inactive:
        await h.login("alpha", "s1@alpha.test")
    assert error_reason(inactive.value) == "INVALID_CREDENTIALS"
    await h.users.ActivateUser(pb.ActivateUserRequest(request_id=rid(), user_id=ids[1]), metadata=a)
    assert (await h.login("alpha", "s1@alpha.test")).tokens.access_token
    await h.users.DeleteUser(pb.DeleteUserRequest(request_id=rid(), user_id=ids[2]), metadata=a)
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await h.users.GetUser(pb.GetUserRequest(user_id=ids[2]), metadata=a)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    await h.create_user(alpha, "s2@alpha.test")  # email reusable after deletion

    # RBAC: scoped assignment, check, revoke; students cannot administer.
    assign = pb.AssignRoleRequest(
        request_id=rid(), user_id=ids[3], role_name="instructor", scope="courses/c-101"
    )
    await h.roles.AssignRole(assign, metadata=a)
    check = pb.CheckPermissionRequest(
        user_id=ids[3], permission="courses.courses.manage", scope="courses/c-101"
    )
    assert (await h.roles.CheckPermission(check, metadata=a)).allowed
    other = pb.CheckPermissionRequest(
        user_id=ids[3], permission="courses.courses.manage", scope="courses/c-999"
    )
    assert not (await h.roles.CheckPermission(other, metadata=a)).allowed
    await h.roles.RevokeRole(
        pb.RevokeRoleRequest(
            request_id=rid(), user_id=ids[3], role_name="instructor", scope="courses/c-101"
        ),
        metadata=a,
    )
    assert not (await h.roles.CheckPermission(check, metadata=a)).allowed
    student = bearer(await h.token("alpha", "s4@alpha.test"))
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await h.users.ListUsers(pb.ListUsersRequest(), metadata=student)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

    # Every one of those security actions is in the audit log with actor and source.
    audit = await h.audit.ListAuditEvents(pb.ListAuditEventsRequest(page_size=500), metadata=a)
    actions = {e.action for e in audit.audit_events}
    assert {
        "user.created",
        "user.updated",
        "user.deactivated",
        "user.activated",
        "user.deleted",
        "role.assigned",
        "role.revoked",
        "login.succeeded",
        "login.failed",
    } <= actions
    assigned = next(e for e in audit.audit_events if e.action == "role.assigned")
    assert assigned.actor_id == alpha.admin_id and assigned.target == f"users/{ids[3]}"
    assert assigned.source_address and assigned.details["role"] == "instructor"


async def test_api_keys_secret_once_scoped_and_revocable(h: IdentityHarness) -> None:
    alpha = h.tenants["alpha"]
    a = bearer(alpha.admin_token)
    created = await h.api_keys.CreateApiKey(
        pb.CreateApiKeyRequest(display_name="LMS sync", permissions=["identity.users.read"]),
        metadata=a,
    )
    assert created.secret.startswith(created.api_key.prefix + "_")
    listed = await h.api_keys.ListApiKeys(pb.ListApiKeysRequest(), metadata=a)
    assert created.secret not in str(listed)
    escalate = pb.CreateApiKeyRequest(display_name="x", permissions=["identity.tenants.create"])
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await h.api_keys.CreateApiKey(escalate, metadata=a)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    verified: Any = await h.wiring.identity.verify_api_key(created.secret)
    assert str(verified.tenant_id) == alpha.tenant_id
    await h.api_keys.RevokeApiKey(
        pb.RevokeApiKeyRequest(request_id=rid(), api_key_id=created.api_key.api_key_id), metadata=a
    )
    from suuupra_runtime.errors import Unauthenticated

    with pytest.raises(Unauthenticated):
        await h.wiring.identity.verify_api_key(created.secret)
    # VerifyApiKey is internal: an end-user token cannot call it.
    with pytest.raises(grpc.aio.AioRpcError) as internal:
        await h.api_keys.VerifyApiKey(pb.VerifyApiKeyRequest(key=created.secret), metadata=a)
    assert internal.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_self_signup_and_password_change(h: IdentityHarness) -> None:
    settings = tenant_pb2.TenantSettings(
        self_signup_enabled=True, allowed_email_domains=["open.edu", "open.test"]
    )
    await h.create_tenant("open", settings=settings)
    signup = pb.SignUpRequest(
        request_id=rid(),
        tenant_slug="open",
        email="new@open.edu",
        display_name="New",
        password="violet-harbour-lantern-42",
    )
    user = (await h.users.SignUp(signup)).user
    assert list(user.roles) == ["student"]
    assert (await h.users.SignUp(signup)).user == user  # retry: same answer, one user
    outsider = pb.SignUpRequest(
        request_id=rid(),
        tenant_slug="open",
        email="x@gmail.com",
        display_name="X",
        password="violet-harbour-lantern-42",
    )
    with pytest.raises(grpc.aio.AioRpcError) as domain_err:
        await h.users.SignUp(outsider)
    assert domain_err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    closed = pb.SignUpRequest(
        request_id=rid(),
        tenant_slug="alpha",
        email="x@alpha.test",
        display_name="X",
        password="violet-harbour-lantern-42",
    )
    with pytest.raises(grpc.aio.AioRpcError) as closed_err:
        await h.users.SignUp(closed)
    assert closed_err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    first = (await h.login("open", "new@open.edu")).tokens
    second = (await h.login("open", "new@open.edu")).tokens
    change = pb.ChangePasswordRequest(
        request_id=rid(),
        current_password="violet-harbour-lantern-42",
        new_password="quartz-meadow-falcon-88",
    )
    await h.users.ChangePassword(change, metadata=bearer(first.access_token))
    # Other sessions ended, the current one continues.
    with pytest.raises(grpc.aio.AioRpcError):
        await h.auth.RefreshToken(pb.RefreshTokenRequest(refresh_token=second.refresh_token))
    assert await h.auth.RefreshToken(pb.RefreshTokenRequest(refresh_token=first.refresh_token))
    assert (await h.login("open", "new@open.edu", "quartz-meadow-falcon-88")).tokens.access_token
