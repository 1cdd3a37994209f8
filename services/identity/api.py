# mypy: disable-error-code="import-untyped"
# ruff: noqa: N802 (servicer method names are the RPC names from the contract)
"""gRPC servicers: proto ⇄ handler calls. No business rules live here.

Mutating RPCs with a `request_id` run through `run_idempotent`, which owns the transaction: the
handler's writes, its outbox events and the stored response commit together.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC
from typing import Any, TypeAlias, TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from suuupra.identity.v1 import (
    api_key_pb2,
    audit_event_pb2,
    role_pb2,
    session_pb2,
    tenant_pb2,
    user_pb2,
)
from suuupra.identity.v1 import (
    identity_service_pb2 as pb,
)
from suuupra.identity.v1 import (
    identity_service_pb2_grpc as rpc,
)

from services.identity import domain, store
from services.identity.handlers import Actor, Identity, Tokens, UserView
from suuupra_runtime.auth import current_caller
from suuupra_runtime.db import UnitOfWork
from suuupra_runtime.errors import FieldViolation, InvalidArgument
from suuupra_runtime.idempotency import run_idempotent
from suuupra_runtime.timestamps import optional_timestamp_pb as ts
from suuupra_runtime.updates import etag_of

R = TypeVar("R", bound=Message)
Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]

PACKAGE = "suuupra.identity.v1"

_STATUS_TO_PROTO = {
    domain.UserStatus.ACTIVE: user_pb2.USER_STATUS_ACTIVE,
    domain.UserStatus.DEACTIVATED: user_pb2.USER_STATUS_DEACTIVATED,
    domain.UserStatus.DELETED: user_pb2.USER_STATUS_DELETED,
}
_STATUS_FROM_PROTO = {v: k for k, v in _STATUS_TO_PROTO.items()}


# ---------------------------------------------------------------------------------------------
# Request context


def _metadata(context: Ctx, name: str) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return value if isinstance(value, str) else value.decode()
    return ""


def source_address(context: Ctx) -> str:
    """The client address: the last `x-forwarded-for` hop (appended by our own Envoy, which
    binds in front of the app), else the TCP peer. Earlier hops are client-controlled."""
    forwarded = _metadata(context, "x-forwarded-for")
    if forwarded:
        candidate = forwarded.split(",")[-1].strip()
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            pass
    peer = context.peer() or ""
    if peer.startswith("ipv4:"):
        return peer[5:].rsplit(":", 1)[0]
    if peer.startswith("ipv6:"):
        return peer[5:].rsplit(":", 1)[0].strip("[]")
    return peer or "unknown"


def actor_from(context: Ctx, user_agent: str = "") -> Actor:
    caller = current_caller()
    return Actor(
        user_id=caller.subject,
        tenant_id=caller.tenant_id,
        permissions=caller.permissions,
        session_id=caller.session_id,
        is_service=caller.is_service,
        source_address=source_address(context),
        user_agent=user_agent or _metadata(context, "user-agent"),
    )


def caller_actor() -> Actor:
    """The caller alone, without where the request came from: for reads that neither audit nor
    throttle (`actor_from` scans the request metadata twice for that)."""
    caller = current_caller()
    return Actor(
        user_id=caller.subject,
        tenant_id=caller.tenant_id,
        permissions=caller.permissions,
        session_id=caller.session_id,
        is_service=caller.is_service,
    )


def _method(service: str, name: str) -> str:
    return f"/{PACKAGE}.{service}/{name}"


# ---------------------------------------------------------------------------------------------
# Mapping helpers


def user_pb(view: UserView) -> user_pb2.User:
    u = view.user
    return user_pb2.User(
        user_id=u.user_id,
        tenant_id=u.tenant_id,
        email=u.email,
        display_name=u.display_name,
        status=_STATUS_TO_PROTO[u.status],
        email_verified=u.email_verified,
        mfa_enabled=u.mfa_enabled,
        roles=list(view.roles),
        create_time=ts(u.created_at),
        update_time=ts(u.updated_at),
        etag=etag_of(u.version),
    )


def settings_pb(s: domain.TenantSettings) -> tenant_pb2.TenantSettings:
    duration = Duration()
    duration.FromTimedelta(s.session_lifetime)
    return tenant_pb2.TenantSettings(
        password_policy=tenant_pb2.PasswordPolicy(
            min_length=s.password_policy.min_length,
            max_length=s.password_policy.max_length,
            block_common_passwords=s.password_policy.block_common_passwords,
        ),
        self_signup_enabled=s.self_signup_enabled,
        allowed_email_domains=list(s.allowed_email_domains),
        session_lifetime=duration,
        mfa_required_roles=list(s.mfa_required_roles),
    )


def settings_from_pb(
    msg: tenant_pb2.TenantSettings, has: bool, base: domain.TenantSettings
) -> domain.TenantSettings:
    if not has:
        return base
    policy = base.password_policy
    if msg.HasField("password_policy"):
        p = msg.password_policy
        policy = domain.PasswordPolicy(
            min_length=p.min_length or 12,
            max_length=p.max_length or 128,
            block_common_passwords=p.block_common_passwords,
        )
    return domain.TenantSettings(
        password_policy=policy,
        self_signup_enabled=msg.self_signup_enabled,
        allowed_email_domains=tuple(d.strip().lower() for d in msg.allowed_email_domains),
        session_lifetime=msg.session_lifetime.ToTimedelta()
        if msg.HasField("session_lifetime")
        else base.session_lifetime,
        mfa_required_roles=tuple(msg.mfa_required_roles),
    )


def tenant_pb(t: store.TenantRow) -> tenant_pb2.Tenant:
    return tenant_pb2.Tenant(
        tenant_id=t.tenant_id,
        slug=t.slug,
        display_name=t.display_name,
        settings=settings_pb(t.settings),
        create_time=ts(t.created_at),
        update_time=ts(t.updated_at),
        etag=etag_of(t.version),
    )


def tokens_pb(t: Tokens) -> session_pb2.TokenPair:
    return session_pb2.TokenPair(
        access_token=t.access_token,
        access_token_expire_time=ts(t.access_expires_at),
        refresh_token=t.refresh_token,
        refresh_token_expire_time=ts(t.refresh_expires_at),
        session_id=t.session_id,
    )


def api_key_pb(row: Any) -> api_key_pb2.ApiKey:
    import json

    return api_key_pb2.ApiKey(
        api_key_id=str(row.api_key_id),
        tenant_id=str(row.tenant_id),
        display_name=row.display_name,
        prefix=domain.api_key_prefix(str(row.api_key_id)),
        permissions=json.loads(row.permissions),
        created_by=str(row.created_by) if row.created_by else "",
        create_time=ts(row.created_at),
        last_used_time=ts(row.last_used_at),
        revoke_time=ts(row.revoked_at),
        expire_time=ts(row.expires_at),
    )


def _mask_paths(mask_paths: Iterable[str], allowed: set[str], prefix: str) -> list[str]:
    paths = list(mask_paths)
    bad = [p for p in paths if p not in allowed]
    if bad or not paths:
        raise InvalidArgument(
            [
                FieldViolation("update_mask", f"unsupported path '{p}'" if p else "empty")
                for p in (bad or [""])
            ]
        )
    return [p.removeprefix(prefix) for p in paths]


# ---------------------------------------------------------------------------------------------
# Servicers


class _Base:
    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    async def _idempotent(
        self,
        *,
        service: str,
        method: str,
        request: Message,
        response_type: type[R],
        tenant_id: str | None,
        work: Callable[[UnitOfWork], Awaitable[R]],
    ) -> R:
        return await run_idempotent(
            self.identity.db,
            tenant_id=tenant_id,
            method=_method(service, method),
            request=request,
            response_type=response_type,
            work=work,
        )


class TenantServicer(_Base, rpc.TenantServiceServicer):
    async def CreateTenant(
        self, request: pb.CreateTenantRequest, context: Ctx
    ) -> pb.CreateTenantResponse:
        actor = actor_from(context)
        admin_email = domain.normalise_email(request.admin_email) or request.admin_email
        password_hash = await self.identity.prepare_tenant_admin_password(
            request.admin_password, admin_email
        )
        settings = settings_from_pb(
            request.settings, request.HasField("settings"), domain.TenantSettings()
        )

        async def work(uow: UnitOfWork) -> pb.CreateTenantResponse:
            tenant, admin = await self.identity.create_tenant(
                uow,
                actor,
                slug=request.slug,
                display_name=request.display_name,
                settings=settings,
                admin_email=request.admin_email,
                admin_display_name=request.admin_display_name,
                admin_password_hash=password_hash,
            )
            return pb.CreateTenantResponse(tenant=tenant_pb(tenant), admin=user_pb(admin))

        return await self._idempotent(
            service="TenantService",
            method="CreateTenant",
            request=request,
            response_type=pb.CreateTenantResponse,
            tenant_id=actor.tenant_id,
            work=work,
        )

    async def GetTenant(self, request: pb.GetTenantRequest, context: Ctx) -> pb.GetTenantResponse:
        tenant = await self.identity.get_tenant(actor_from(context), request.tenant_id)
        return pb.GetTenantResponse(tenant=tenant_pb(tenant))

    async def UpdateTenant(
        self, request: pb.UpdateTenantRequest, context: Ctx
    ) -> pb.UpdateTenantResponse:
        actor = actor_from(context)
        allowed = {
            "display_name",
            "settings.password_policy",
            "settings.self_signup_enabled",
            "settings.allowed_email_domains",
            "settings.session_lifetime",
            "settings.mfa_required_roles",
        }
        paths = _mask_paths(request.update_mask.paths, allowed, "")
        incoming = settings_from_pb(request.tenant.settings, True, domain.TenantSettings())

        def patch(current: domain.TenantSettings) -> domain.TenantSettings:
            out = current
            from dataclasses import replace

            for path in paths:
                if path == "settings.password_policy":
                    out = replace(out, password_policy=incoming.password_policy)
                elif path == "settings.self_signup_enabled":
                    out = replace(out, self_signup_enabled=incoming.self_signup_enabled)
                elif path == "settings.allowed_email_domains":
                    out = replace(out, allowed_email_domains=incoming.allowed_email_domains)
                elif path == "settings.session_lifetime":
                    out = replace(out, session_lifetime=incoming.session_lifetime)
                elif path == "settings.mfa_required_roles":
                    out = replace(out, mfa_required_roles=incoming.mfa_required_roles)
            return out

        async def work(uow: UnitOfWork) -> pb.UpdateTenantResponse:
            tenant = await self.identity.update_tenant(
                uow,
                actor,
                tenant_id=request.tenant.tenant_id,
                etag=request.tenant.etag,
                display_name=request.tenant.display_name if "display_name" in paths else None,
                settings_patch=patch,
            )
            return pb.UpdateTenantResponse(tenant=tenant_pb(tenant))

        return await self._idempotent(
            service="TenantService",
            method="UpdateTenant",
            request=request,
            response_type=pb.UpdateTenantResponse,
            tenant_id=actor.tenant_id,
            work=work,
        )


class _RenderedViews:
    """`GetCurrentUserResponse` per view object, reused while the user cache keeps serving that
    same (immutable) object: rebuilding the message was a tenth of the read's server time. Keyed
    by identity and holding the view, so a recycled id never matches another view."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._by_id: dict[int, tuple[UserView, pb.GetCurrentUserResponse]] = {}
        self._max_entries = max_entries

    def response(self, view: UserView) -> pb.GetCurrentUserResponse:
        hit = self._by_id.get(id(view))
        if hit is not None and hit[0] is view:
            return hit[1]
        response = pb.GetCurrentUserResponse(user=user_pb(view))
        if len(self._by_id) >= self._max_entries:
            self._by_id.clear()  # views no longer cached are dropped with the rest
        self._by_id[id(view)] = (view, response)
        return response


class UserServicer(_Base, rpc.UserServiceServicer):
    def __init__(self, identity: Identity) -> None:
        super().__init__(identity)
        self._current_user_responses = _RenderedViews()

    async def CreateUser(
        self, request: pb.CreateUserRequest, context: Ctx
    ) -> pb.CreateUserResponse:
        actor = actor_from(context)
        tenant_id = actor.require_tenant()
        password_hash = await self.identity.prepare_password(
            tenant_id,
            request.password,
            email=request.email,
            display_name=request.display_name,
            field_name="password",
        )

        async def work(uow: UnitOfWork) -> pb.CreateUserResponse:
            view = await self.identity.create_user(
                uow,
                actor,
                email=request.email,
                display_name=request.display_name,
                password_hash=password_hash,
                roles=list(request.roles),
            )
            return pb.CreateUserResponse(user=user_pb(view))

        return await self._idempotent(
            service="UserService",
            method="CreateUser",
            request=request,
            response_type=pb.CreateUserResponse,
            tenant_id=tenant_id,
            work=work,
        )

    async def BatchCreateUsers(
        self, request: pb.BatchCreateUsersRequest, context: Ctx
    ) -> pb.BatchCreateUsersResponse:
        actor = actor_from(context)
        tenant_id = actor.require_tenant()
        items: list[tuple[str, str, str | None, list[str]]] = []
        hash_errors: dict[int, str] = {}

        async def prepare(i: int, item: pb.BatchCreateUsersItem) -> str | None:
            try:
                return await self.identity.prepare_password(
                    tenant_id,
                    item.password,
                    email=item.email,
                    display_name=item.display_name,
                    field_name=f"users[{i}].password",
                )
            except InvalidArgument as exc:
                hash_errors[i] = exc.message
                return None

        # Hashed concurrently: the hashing pool's semaphore bounds the parallelism.
        hashes = await asyncio.gather(*(prepare(i, it) for i, it in enumerate(request.users)))
        for item, password_hash in zip(request.users, hashes, strict=True):
            items.append((item.email, item.display_name, password_hash, list(item.roles)))

        async def work(uow: UnitOfWork) -> pb.BatchCreateUsersResponse:
            todo = [(i, it) for i, it in enumerate(items) if i not in hash_errors]
            results = await self.identity.batch_create_users(uow, actor, [it for _, it in todo])
            by_index = {i: r for (i, _), r in zip(todo, results, strict=True)}
            out = pb.BatchCreateUsersResponse()
            for i in range(len(items)):
                if i in hash_errors:
                    out.results.add(index=i, error=hash_errors[i])
                    continue
                view, error = by_index[i]
                result = out.results.add(index=i, error=error)
                if view is not None:
                    result.user.CopyFrom(user_pb(view))
            return out

        return await self._idempotent(
            service="UserService",
            method="BatchCreateUsers",
            request=request,
            response_type=pb.BatchCreateUsersResponse,
            tenant_id=tenant_id,
            work=work,
        )

    async def ImportUsers(
        self, request: pb.ImportUsersRequest, context: Ctx
    ) -> AsyncIterator[pb.ImportUsersResponse]:
        actor = actor_from(context)
        async for progress in self.identity.import_users(
            actor,
            request.request_id,
            request.csv,
            dry_run=request.dry_run,
            default_role=request.default_role,
        ):
            yield pb.ImportUsersResponse(
                rows_total=progress.rows_total,
                rows_processed=progress.rows_processed,
                created=progress.created,
                already_imported=progress.already_imported,
                failed=progress.failed,
                errors=[
                    pb.ImportRowError(line=e.line, field=e.field, message=e.message)
                    for e in progress.errors
                ],
                done=progress.done,
                dry_run=progress.dry_run,
            )

    async def SignUp(self, request: pb.SignUpRequest, context: Ctx) -> pb.SignUpResponse:
        actor = actor_from(context)
        password_hash = await self.identity.prepare_signup_password(
            request.tenant_slug, request.password, request.email, request.display_name
        )

        async def work(uow: UnitOfWork) -> pb.SignUpResponse:
            view = await self.identity.sign_up(
                uow,
                actor,
                tenant_slug=request.tenant_slug,
                email=request.email,
                display_name=request.display_name,
                password_hash=password_hash,
            )
            return pb.SignUpResponse(user=user_pb(view))

        # Anonymous callers share the '' tenant namespace of request ids; ids are UUIDs.
        return await self._idempotent(
            service="UserService",
            method="SignUp",
            request=request,
            response_type=pb.SignUpResponse,
            tenant_id=None,
            work=work,
        )

    async def GetUser(self, request: pb.GetUserRequest, context: Ctx) -> pb.GetUserResponse:
        view = await self.identity.get_user(actor_from(context), request.user_id)
        return pb.GetUserResponse(user=user_pb(view))

    async def GetCurrentUser(
        self, request: pb.GetCurrentUserRequest, context: Ctx
    ) -> pb.GetCurrentUserResponse:
        view = await self.identity.get_current_user(caller_actor())
        return self._current_user_responses.response(view)

    async def ListUsers(self, request: pb.ListUsersRequest, context: Ctx) -> pb.ListUsersResponse:
        status = _STATUS_FROM_PROTO.get(request.status)
        if status is domain.UserStatus.DELETED:
            raise InvalidArgument([FieldViolation("status", "deleted users are not listed")])
        views, token = await self.identity.list_users(
            actor_from(context),
            page_size=request.page_size,
            page_token=request.page_token,
            role=request.role,
            status=status,
            query=request.query.strip(),
        )
        return pb.ListUsersResponse(users=[user_pb(v) for v in views], next_page_token=token)

    async def UpdateUser(
        self, request: pb.UpdateUserRequest, context: Ctx
    ) -> pb.UpdateUserResponse:
        actor = actor_from(context)
        paths = _mask_paths(request.update_mask.paths, {"display_name", "email"}, "")

        async def work(uow: UnitOfWork) -> pb.UpdateUserResponse:
            view = await self.identity.update_user(
                uow,
                actor,
                user_id=request.user.user_id,
                etag=request.user.etag,
                display_name=request.user.display_name if "display_name" in paths else None,
                email=request.user.email if "email" in paths else None,
            )
            return pb.UpdateUserResponse(user=user_pb(view))

        if not request.user.user_id:
            raise InvalidArgument([FieldViolation("user.user_id", "required")])
        return await self._idempotent(
            service="UserService",
            method="UpdateUser",
            request=request,
            response_type=pb.UpdateUserResponse,
            tenant_id=actor.tenant_id,
            work=work,
        )

    async def _status(
        self,
        *,
        method: str,
        request: Any,
        context: Ctx,
        target: domain.UserStatus,
        response_type: type[R],
        build: Callable[[UserView], R],
        etag: str = "",
    ) -> R:
        actor = actor_from(context)

        async def work(uow: UnitOfWork) -> R:
            view = await self.identity.change_status(uow, actor, request.user_id, target, etag)
            return build(view)

        return await self._idempotent(
            service="UserService",
            method=method,
            request=request,
            response_type=response_type,
            tenant_id=actor.tenant_id,
            work=work,
        )

    async def DeactivateUser(
        self, request: pb.DeactivateUserRequest, context: Ctx
    ) -> pb.DeactivateUserResponse:
        return await self._status(
            method="DeactivateUser",
            request=request,
            context=context,
            target=domain.UserStatus.DEACTIVATED,
            response_type=pb.DeactivateUserResponse,
            build=lambda v: pb.DeactivateUserResponse(user=user_pb(v)),
        )

    async def ActivateUser(
        self, request: pb.ActivateUserRequest, context: Ctx
    ) -> pb.ActivateUserResponse:
        return await self._status(
            method="ActivateUser",
            request=request,
            context=context,
            target=domain.UserStatus.ACTIVE,
            response_type=pb.ActivateUserResponse,
            build=lambda v: pb.ActivateUserResponse(user=user_pb(v)),
        )

    async def DeleteUser(
        self, request: pb.DeleteUserRequest, context: Ctx
    ) -> pb.DeleteUserResponse:
        return await self._status(
            method="DeleteUser",
            request=request,
            context=context,
            target=domain.UserStatus.DELETED,
            response_type=pb.DeleteUserResponse,
            build=lambda v: pb.DeleteUserResponse(),
            etag=request.etag,
        )

    async def ChangePassword(
        self, request: pb.ChangePasswordRequest, context: Ctx
    ) -> pb.ChangePasswordResponse:
        actor = actor_from(context)

        async def work(uow: UnitOfWork) -> pb.ChangePasswordResponse:
            await self.identity.change_password(
                uow, actor, request.current_password, request.new_password
            )
            return pb.ChangePasswordResponse()

        return await self._idempotent(
            service="UserService",
            method="ChangePassword",
            request=request,
            response_type=pb.ChangePasswordResponse,
            tenant_id=actor.tenant_id,
            work=work,
        )

    async def RequestPasswordReset(
        self, request: pb.RequestPasswordResetRequest, context: Ctx
    ) -> pb.RequestPasswordResetResponse:
        await self.identity.request_password_reset(
            actor_from(context), request.tenant_slug, request.email
        )
        return pb.RequestPasswordResetResponse()

    async def ResetPassword(
        self, request: pb.ResetPasswordRequest, context: Ctx
    ) -> pb.ResetPasswordResponse:
        await self.identity.reset_password(actor_from(context), request.token, request.new_password)
        return pb.ResetPasswordResponse()

    async def RequestEmailVerification(
        self, request: pb.RequestEmailVerificationRequest, context: Ctx
    ) -> pb.RequestEmailVerificationResponse:
        await self.identity.request_email_verification(actor_from(context))
        return pb.RequestEmailVerificationResponse()

    async def VerifyEmail(
        self, request: pb.VerifyEmailRequest, context: Ctx
    ) -> pb.VerifyEmailResponse:
        await self.identity.verify_email(actor_from(context), request.token)
        return pb.VerifyEmailResponse()


class AuthServicer(_Base, rpc.AuthServiceServicer):
    async def Login(self, request: pb.LoginRequest, context: Ctx) -> pb.LoginResponse:
        result = await self.identity.login(
            actor_from(context, request.user_agent),
            request.tenant_slug,
            request.email,
            request.password,
        )
        if result.tokens is None:
            return pb.LoginResponse(mfa_challenge=result.mfa_challenge or "")
        return pb.LoginResponse(tokens=tokens_pb(result.tokens))

    async def CompleteMfaLogin(
        self, request: pb.CompleteMfaLoginRequest, context: Ctx
    ) -> pb.CompleteMfaLoginResponse:
        tokens = await self.identity.complete_mfa_login(
            actor_from(context), request.mfa_challenge, request.totp_code, request.recovery_code
        )
        return pb.CompleteMfaLoginResponse(tokens=tokens_pb(tokens))

    async def RefreshToken(
        self, request: pb.RefreshTokenRequest, context: Ctx
    ) -> pb.RefreshTokenResponse:
        tokens = await self.identity.refresh(actor_from(context), request.refresh_token)
        return pb.RefreshTokenResponse(tokens=tokens_pb(tokens))

    async def Logout(self, request: pb.LogoutRequest, context: Ctx) -> pb.LogoutResponse:
        await self.identity.logout(actor_from(context))
        return pb.LogoutResponse()

    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: Ctx
    ) -> pb.ListSessionsResponse:
        rows = await self.identity.list_sessions(actor_from(context))
        out = pb.ListSessionsResponse()
        for row, current in rows:
            r: Any = row
            out.sessions.append(
                session_pb2.Session(
                    session_id=str(r.session_id),
                    user_id=str(r.user_id),
                    create_time=ts(r.created_at),
                    last_refresh_time=ts(r.last_refresh_at),
                    expire_time=ts(r.expires_at),
                    source_address=r.source_address,
                    user_agent=r.user_agent,
                    current=current,
                )
            )
        return out

    async def RevokeSession(
        self, request: pb.RevokeSessionRequest, context: Ctx
    ) -> pb.RevokeSessionResponse:
        actor = actor_from(context)

        async def work(uow: UnitOfWork) -> pb.RevokeSessionResponse:
            await self.identity.revoke_session(uow, actor, request.session_id)
            return pb.RevokeSessionResponse()

        return await self._idempotent(
            service="AuthService",
            method="RevokeSession",
            request=request,
            response_type=pb.RevokeSessionResponse,
            tenant_id=actor.tenant_id,
            work=work,
        )

    async def RevokeAllSessions(
        self, request: pb.RevokeAllSessionsRequest, context: Ctx
    ) -> pb.RevokeAllSessionsResponse:
        actor = actor_from(context)

        async def work(uow: UnitOfWork) -> pb.RevokeAllSessionsResponse:
            count = await self.identity.revoke_all_sessions(uow, actor, request.keep_current)
            return pb.RevokeAllSessionsResponse(revoked=count)

        return await self._idempotent(
            service="AuthService",
            method="RevokeAllSessions",
            request=request,
            response_type=pb.RevokeAllSessionsResponse,
            tenant_id=actor.tenant_id,
            work=work,
        )

    async def EnrollTotp(
        self, request: pb.EnrollTotpRequest, context: Ctx
    ) -> pb.EnrollTotpResponse:
        secret, uri = await self.identity.enroll_totp(actor_from(context))
        return pb.EnrollTotpResponse(secret=secret, provisioning_uri=uri)

    async def ConfirmTotp(
        self, request: pb.ConfirmTotpRequest, context: Ctx
    ) -> pb.ConfirmTotpResponse:
        codes = await self.identity.confirm_totp(actor_from(context), request.code)
        return pb.ConfirmTotpResponse(recovery_codes=codes)

    async def DisableTotp(
        self, request: pb.DisableTotpRequest, context: Ctx
    ) -> pb.DisableTotpResponse:
        await self.identity.disable_totp(actor_from(context), request.password, request.code)
        return pb.DisableTotpResponse()

    async def GetJwks(self, request: pb.GetJwksRequest, context: Ctx) -> pb.GetJwksResponse:
        return pb.GetJwksResponse(jwks_json=self.identity.keys.jwks_json.decode())

    async def RotateSigningKey(
        self, request: pb.RotateSigningKeyRequest, context: Ctx
    ) -> pb.RotateSigningKeyResponse:
        actor = actor_from(context)

        async def work(uow: UnitOfWork) -> pb.RotateSigningKeyResponse:
            return pb.RotateSigningKeyResponse(kid=await self.identity.keys.rotate_in(uow))

        response = await self._idempotent(
            service="AuthService",
            method="RotateSigningKey",
            request=request,
            response_type=pb.RotateSigningKeyResponse,
            tenant_id=actor.tenant_id,
            work=work,
        )
        await self.identity.keys.reload()  # after the commit: start signing with the new key
        return response


class RoleServicer(_Base, rpc.RoleServiceServicer):
    async def ListRoles(self, request: pb.ListRolesRequest, context: Ctx) -> pb.ListRolesResponse:
        actor = actor_from(context)
        out = pb.ListRolesResponse()
        for (
            name,
            description,
            perms,
            system,
            role_id,
            created,
            version,
        ) in await self.identity.list_roles(actor):
            out.roles.append(
                role_pb2.Role(
                    role_id=role_id,
                    tenant_id="" if system else actor.tenant_id or "",
                    name=name,
                    description=description,
                    permissions=sorted(perms),
                    system=system,
                    create_time=ts(created),
                    etag=etag_of(version),
                )
            )
        return out

    async def CreateRole(
        self, request: pb.CreateRoleRequest, context: Ctx
    ) -> pb.CreateRoleResponse:
        actor = actor_from(context)

        async def work(uow: UnitOfWork) -> pb.CreateRoleResponse:
            role_id, created = await self.identity.create_role(
                uow, actor, request.name, request.description, list(request.permissions)
            )
            return pb.CreateRoleResponse(
                role=role_pb2.Role(
                    role_id=role_id,
                    tenant_id=actor.tenant_id or "",
                    name=request.name,
                    description=request.description,
                    permissions=sorted(set(request.permissions)),
                    create_time=ts(created),
                    etag=etag_of(1),
                )
            )

        return await self._idempotent(
            service="RoleService",
            method="CreateRole",
            request=request,
            response_type=pb.CreateRoleResponse,
            tenant_id=actor.tenant_id,
            work=work,
        )

    async def AssignRole(
        self, request: pb.AssignRoleRequest, context: Ctx
    ) -> pb.AssignRoleResponse:
        actor = actor_from(context)

        async def work(uow: UnitOfWork) -> pb.AssignRoleResponse:
            assignment_id, created = await self.identity.assign_role(
                uow, actor, request.user_id, request.role_name, request.scope
            )
            return pb.AssignRoleResponse(
                assignment=role_pb2.RoleAssignment(
                    assignment_id=assignment_id,
                    tenant_id=actor.tenant_id or "",
                    user_id=request.user_id,
                    role_name=request.role_name,
                    scope=request.scope,
                    create_time=ts(created),
                )
            )

        return await self._idempotent(
            service="RoleService",
            method="AssignRole",
            request=request,
            response_type=pb.AssignRoleResponse,
            tenant_id=actor.tenant_id,
            work=work,
        )

    async def RevokeRole(
        self, request: pb.RevokeRoleRequest, context: Ctx
    ) -> pb.RevokeRoleResponse:
        actor = actor_from(context)

        async def work(uow: UnitOfWork) -> pb.RevokeRoleResponse:
            await self.identity.revoke_role(
                uow, actor, request.user_id, request.role_name, request.scope
            )
            return pb.RevokeRoleResponse()

        return await self._idempotent(
            service="RoleService",
            method="RevokeRole",
            request=request,
            response_type=pb.RevokeRoleResponse,
            tenant_id=actor.tenant_id,
            work=work,
        )

    async def ListRoleAssignments(
        self, request: pb.ListRoleAssignmentsRequest, context: Ctx
    ) -> pb.ListRoleAssignmentsResponse:
        rows = await self.identity.list_assignments(actor_from(context), request.user_id)
        out = pb.ListRoleAssignmentsResponse()
        for row in rows:
            r: Any = row
            out.assignments.append(
                role_pb2.RoleAssignment(
                    assignment_id=str(r.assignment_id),
                    tenant_id=str(r.tenant_id),
                    user_id=str(r.user_id),
                    role_name=r.role_name,
                    scope=r.scope,
                    create_time=ts(r.created_at),
                )
            )
        return out

    async def CheckPermission(
        self, request: pb.CheckPermissionRequest, context: Ctx
    ) -> pb.CheckPermissionResponse:
        allowed = await self.identity.check_permission(
            actor_from(context), request.user_id, request.permission, request.scope
        )
        return pb.CheckPermissionResponse(allowed=allowed)


class ApiKeyServicer(_Base, rpc.ApiKeyServiceServicer):
    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: Ctx
    ) -> pb.CreateApiKeyResponse:
        expires = (
            request.expire_time.ToDatetime(tzinfo=UTC) if request.HasField("expire_time") else None
        )
        row, secret = await self.identity.create_api_key(
            actor_from(context), request.display_name, list(request.permissions), expires
        )
        return pb.CreateApiKeyResponse(api_key=api_key_pb(row), secret=secret)

    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: Ctx
    ) -> pb.ListApiKeysResponse:
        rows, token = await self.identity.list_api_keys(
            actor_from(context), request.page_size, request.page_token
        )
        return pb.ListApiKeysResponse(api_keys=[api_key_pb(r) for r in rows], next_page_token=token)

    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: Ctx
    ) -> pb.RevokeApiKeyResponse:
        actor = actor_from(context)

        async def work(uow: UnitOfWork) -> pb.RevokeApiKeyResponse:
            row = await self.identity.revoke_api_key(uow, actor, request.api_key_id)
            return pb.RevokeApiKeyResponse(api_key=api_key_pb(row))

        return await self._idempotent(
            service="ApiKeyService",
            method="RevokeApiKey",
            request=request,
            response_type=pb.RevokeApiKeyResponse,
            tenant_id=actor.tenant_id,
            work=work,
        )

    async def VerifyApiKey(
        self, request: pb.VerifyApiKeyRequest, context: Ctx
    ) -> pb.VerifyApiKeyResponse:
        row = await self.identity.verify_api_key(request.key)
        return pb.VerifyApiKeyResponse(api_key=api_key_pb(row))


class AuditServicer(_Base, rpc.AuditServiceServicer):
    async def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context: Ctx
    ) -> pb.ListAuditEventsResponse:
        records, token = await self.identity.list_audit(
            actor_from(context),
            request.page_size,
            request.page_token,
            store.AuditFilter(request.action, request.actor_id, request.target),
        )
        return pb.ListAuditEventsResponse(
            audit_events=[
                audit_event_pb2.AuditEvent(
                    audit_event_id=r.audit_event_id,
                    tenant_id=r.tenant_id,
                    action=r.action,
                    actor_id=r.actor_id or "",
                    target=r.target,
                    source_address=r.source_address,
                    success=r.success,
                    details=r.details,
                    create_time=ts(r.created_at),
                )
                for r in records
            ],
            next_page_token=token,
        )


def register_all(server: grpc.aio.Server, identity: Identity) -> None:
    rpc.add_TenantServiceServicer_to_server(TenantServicer(identity), server)
    rpc.add_UserServiceServicer_to_server(UserServicer(identity), server)
    rpc.add_AuthServiceServicer_to_server(AuthServicer(identity), server)
    rpc.add_RoleServiceServicer_to_server(RoleServicer(identity), server)
    rpc.add_ApiKeyServiceServicer_to_server(ApiKeyServicer(identity), server)
    rpc.add_AuditServiceServicer_to_server(AuditServicer(identity), server)


SERVICE_NAMES = [
    f"{PACKAGE}.{name}"
    for name in (
        "TenantService",
        "UserService",
        "AuthService",
        "RoleService",
        "ApiKeyService",
        "AuditService",
    )
]
