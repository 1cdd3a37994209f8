"""Use cases: load → decide (domain) → commit through the unit of work, with outbox events and
audit rows in the same transaction. No proto types here: api.py maps requests and results.

Mutating use cases come in the form `async def x(uow, actor, ...)` so api.py can run them inside
`run_idempotent` (which owns the transaction). Expensive work that must not hold a transaction
(Argon2id hashing) happens in a separate `prepare_*` step before.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError

from services.identity import domain, store
from services.identity.config import IdentityConfig
from services.identity.credentials import PasswordHashing
from services.identity.keyring import KeyRing
from services.identity.keys import (
    AccessClaims,
    Sealer,
    issue_access_token,
)
from services.identity.user_cache import UserCache
from suuupra_runtime.db import Database, UnitOfWork
from suuupra_runtime.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)
from suuupra_runtime.updates import etag_matches

log = logging.getLogger(__name__)

EventSink = Callable[[UnitOfWork, domain.DomainEvent], None]

INVALID_CREDENTIALS = "INVALID_CREDENTIALS"


@dataclass(frozen=True)
class Actor:
    """Who is acting, from the verified caller plus where the request came from."""

    user_id: str | None
    tenant_id: str | None
    permissions: frozenset[str] = frozenset()
    session_id: str | None = None
    is_service: bool = False
    source_address: str = ""
    user_agent: str = ""

    def require_tenant(self) -> str:
        if not self.tenant_id:
            raise PermissionDenied("this call needs a tenant user's token", reason="NO_TENANT")
        return self.tenant_id

    def require_user(self) -> tuple[str, str]:
        if not self.user_id or not self.tenant_id:
            raise Unauthenticated("this call needs a user's access token", reason="NO_USER")
        return self.tenant_id, self.user_id


@dataclass(frozen=True)
class UserView:
    user: store.UserRow
    roles: tuple[str, ...]


@dataclass(frozen=True)
class Tokens:
    access_token: str
    access_expires_at: datetime
    refresh_token: str = field(repr=False)
    refresh_expires_at: datetime
    session_id: str


@dataclass(frozen=True)
class LoginResult:
    tokens: Tokens | None
    mfa_challenge: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class NewUser:
    email: str
    display_name: str
    password_hash: str | None
    roles: tuple[str, ...]


@dataclass(frozen=True)
class ImportProgress:
    rows_total: int
    rows_processed: int
    created: int
    already_imported: int
    failed: int
    errors: list[domain.RowError]
    done: bool
    dry_run: bool


def _invalid(field_name: str, description: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation(field_name, description)])


def _new_id() -> str:
    return str(uuid.uuid4())


# ---------------------------------------------------------------------------------------------
# The use cases


class Identity:
    def __init__(
        self,
        db: Database,
        config: IdentityConfig,
        hashing: PasswordHashing,
        keys: KeyRing,
        emit: EventSink,
        *,
        reads: store.FastReads | None = None,
        user_cache: UserCache[UserView] | None = None,
    ) -> None:
        self.db = db
        self.reads = reads
        self.user_cache = user_cache
        self.config = config
        self.hashing = hashing
        self.keys = keys
        self._emit = emit
        self._sealer = Sealer("kek", config.key_encryption_key)
        self._login_slots = asyncio.Semaphore(max(2, config.hash_concurrency * 2))

    # ---- helpers --------------------------------------------------------------------------

    async def _audit(
        self,
        uow: UnitOfWork,
        tenant_id: str,
        action: str,
        actor: Actor,
        target: str,
        *,
        success: bool = True,
        details: dict[str, str] | None = None,
        actor_id: str | None = None,
    ) -> None:
        await store.insert_audit(
            uow.session,
            store.AuditRecord(
                audit_event_id=_new_id(),
                tenant_id=tenant_id,
                action=action,
                # actor_id="" marks an anonymous action (e.g. a failed login): stored as NULL.
                actor_id=(actor_id if actor_id is not None else actor.user_id) or None,
                target=target,
                source_address=actor.source_address,
                success=success,
                details=details or {},
                created_at=domain.utcnow(),
            ),
        )

    async def _tenant(self, s: store.Executor, tenant_id: str) -> store.TenantRow:
        tenant = await store.tenant_by_id(s, tenant_id)
        if tenant is None:
            raise NotFound("tenant not found", reason="TENANT_NOT_FOUND")
        return tenant

    async def _user(
        self, s: store.Executor, tenant_id: str, user_id: str, *, for_update: bool = False
    ) -> store.UserRow:
        user = await store.user_by_id(s, tenant_id, user_id, for_update=for_update)
        if user is None:
            raise NotFound(f"user {user_id} not found", reason="USER_NOT_FOUND")
        return user

    async def _view(self, s: store.Executor, user: store.UserRow) -> UserView:
        roles = await store.tenant_roles_of_users(s, user.tenant_id, [user.user_id])
        return UserView(user, tuple(roles[user.user_id]))

    async def _settings(self, tenant_id: str) -> domain.TenantSettings:
        async with self.db.engine.connect() as conn:
            return (await self._tenant(conn, tenant_id)).settings

    async def _check_and_hash(
        self,
        settings: domain.TenantSettings,
        password: str,
        *,
        email: str = "",
        display_name: str = "",
        field_name: str = "password",
    ) -> str:
        password = domain.normalise_password(password)
        problem = domain.check_password(
            settings.password_policy, password, email=email, display_name=display_name
        )
        if problem:
            raise _invalid(field_name, problem)
        return await self.hashing.hash(password)

    def _require_email(self, raw: str, settings: domain.TenantSettings, field_name: str) -> str:
        email = domain.normalise_email(raw)
        if email is None:
            raise _invalid(field_name, "not a valid email address")
        if not domain.email_domain_allowed(email, settings):
            raise _invalid(field_name, "email domain not allowed in this tenant")
        return email

    async def _validate_roles(
        self, s: store.Executor, tenant_id: str, roles: Sequence[str], actor: Actor
    ) -> tuple[str, ...]:
        custom = await store.custom_roles(s, tenant_id)
        out: list[str] = []
        for i, role in enumerate(roles):
            if role == domain.PLATFORM_ADMIN and "identity.platform.manage" not in (
                actor.permissions
            ):
                raise PermissionDenied(
                    "only platform admins grant platform_admin", reason="ROLE_NOT_GRANTABLE"
                )
            if role not in domain.SYSTEM_ROLES and role not in custom:
                raise _invalid(f"roles[{i}]", f"unknown role '{role}'")
            if role not in out:
                out.append(role)
        return tuple(out)

    @staticmethod
    def _new_user_row(
        tenant_id: str, email: str, display_name: str, password_hash: str | None, now: datetime
    ) -> store.UserRow:
        return store.UserRow(
            user_id=_new_id(),
            tenant_id=tenant_id,
            email=email,
            display_name=display_name,
            status=domain.UserStatus.ACTIVE,
            email_verified=False,
            password_hash=password_hash,
            mfa_enabled=False,
            totp_secret=None,
            totp_pending_secret=None,
            totp_last_step=None,
            version=1,
            created_at=now,
            updated_at=now,
        )

    async def _insert_user(
        self, uow: UnitOfWork, tenant_id: str, new: NewUser, now: datetime, *, verified: bool
    ) -> store.UserRow:
        if await store.user_by_email(uow.session, tenant_id, new.email) is not None:
            raise AlreadyExists("a user with this email exists", reason="EMAIL_TAKEN")
        user = replace(
            self._new_user_row(tenant_id, new.email, new.display_name, new.password_hash, now),
            email_verified=verified,
        )
        await store.insert_user(uow.session, user)
        for role in new.roles:
            await self._insert_assignment(
                uow,
                assignment_id=_new_id(),
                tenant_id=tenant_id,
                user_id=user.user_id,
                role_name=role,
                scope="",
                now=now,
            )
        self._emit(
            uow,
            domain.UserCreated(
                tenant_id, user.user_id, user.email, user.display_name, new.roles, now
            ),
        )
        return user

    # ---- bootstrap & tenants ----------------------------------------------------------------

    async def bootstrap_platform(
        self, slug: str, display_name: str, email: str, password: str
    ) -> UserView:
        """Create the platform tenant and its first platform admin; refused once one exists."""
        settings = domain.TenantSettings()
        normalised = self._require_email(email, settings, "email")
        password_hash = await self._check_and_hash(settings, password, email=normalised)
        if not domain.validate_slug(slug):
            raise _invalid("slug", "lower-case letters, digits and dashes")
        async with self.db.unit_of_work(tenant_id=None) as uow:
            await store.lock_signing_keys(uow.session)  # serialise concurrent bootstraps
            if await store.count_platform_admins(uow.session) > 0:
                raise FailedPrecondition(
                    "the platform already has an admin", reason="ALREADY_BOOTSTRAPPED"
                )
            now = domain.utcnow()
            tenant = store.TenantRow(_new_id(), slug, display_name, settings, 1, now, now)
            await store.insert_tenant(uow.session, tenant)
            user = await self._insert_user(
                uow,
                tenant.tenant_id,
                NewUser(normalised, "Platform admin", password_hash, (domain.PLATFORM_ADMIN,)),
                now,
                verified=True,
            )
            actor = Actor(user.user_id, tenant.tenant_id, source_address="bootstrap")
            await self._audit(
                uow, tenant.tenant_id, "platform.bootstrapped", actor, f"users/{user.user_id}"
            )
            return UserView(user, (domain.PLATFORM_ADMIN,))

    async def prepare_tenant_admin_password(self, password: str, email: str) -> str:
        return await self._check_and_hash(
            domain.TenantSettings(), password, email=email, field_name="admin_password"
        )

    async def create_tenant(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        slug: str,
        display_name: str,
        settings: domain.TenantSettings,
        admin_email: str,
        admin_display_name: str,
        admin_password_hash: str,
    ) -> tuple[store.TenantRow, UserView]:
        problems = domain.validate_settings(settings)
        if problems:
            raise InvalidArgument([FieldViolation(f, d) for f, d in problems])
        if not domain.validate_slug(slug):
            raise _invalid("slug", "lower-case letters, digits and dashes")
        email = self._require_email(admin_email, settings, "admin_email")
        if await store.slug_taken(uow.session, slug):
            raise AlreadyExists(f"tenant '{slug}' exists", reason="SLUG_TAKEN")
        now = domain.utcnow()
        tenant = store.TenantRow(_new_id(), slug, display_name, settings, 1, now, now)
        await store.insert_tenant(uow.session, tenant)
        admin = await self._insert_user(
            uow,
            tenant.tenant_id,
            NewUser(email, admin_display_name, admin_password_hash, (domain.TENANT_ADMIN,)),
            now,
            verified=False,
        )
        await self._audit(
            uow, tenant.tenant_id, "tenant.created", actor, f"tenants/{tenant.tenant_id}"
        )
        if actor.tenant_id:
            await self._audit(
                uow, actor.tenant_id, "tenant.created", actor, f"tenants/{tenant.tenant_id}"
            )
        return tenant, UserView(admin, (domain.TENANT_ADMIN,))

    def _tenant_access(self, actor: Actor, tenant_id: str) -> str:
        target = tenant_id or actor.require_tenant()
        if target != actor.tenant_id and "identity.platform.manage" not in actor.permissions:
            # A tenant's admin learns nothing about other tenants, not even whether they exist.
            raise PermissionDenied("not your tenant", reason="CROSS_TENANT")
        return target

    async def get_tenant(self, actor: Actor, tenant_id: str) -> store.TenantRow:
        target = self._tenant_access(actor, tenant_id)
        async with self.db.engine.connect() as conn:
            return await self._tenant(conn, target)

    async def update_tenant(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        tenant_id: str,
        etag: str,
        display_name: str | None,
        settings_patch: Callable[[domain.TenantSettings], domain.TenantSettings],
    ) -> store.TenantRow:
        target = self._tenant_access(actor, tenant_id)
        tenant = await self._tenant(uow.session, target)
        if not etag_matches(etag, tenant.version):
            raise Aborted("the tenant changed since you read it", reason="ETAG_MISMATCH")
        settings = settings_patch(tenant.settings)
        problems = domain.validate_settings(settings)
        if problems:
            raise InvalidArgument([FieldViolation(f"tenant.{f}", d) for f, d in problems])
        if display_name is not None and not display_name.strip():
            raise _invalid("tenant.display_name", "must not be empty")
        updated = replace(
            tenant,
            display_name=display_name if display_name is not None else tenant.display_name,
            settings=settings,
            version=tenant.version + 1,
            updated_at=domain.utcnow(),
        )
        if not await store.update_tenant(uow.session, updated, tenant.version):
            raise Aborted("the tenant changed since you read it", reason="ETAG_MISMATCH")
        await self._audit(uow, target, "tenant.updated", actor, f"tenants/{target}")
        return updated

    # ---- users -----------------------------------------------------------------------------

    async def prepare_password(
        self, tenant_id: str, password: str, *, email: str, display_name: str, field_name: str
    ) -> str | None:
        if not password:
            return None
        settings = await self._settings(tenant_id)
        normalised = domain.normalise_email(email) or email
        return await self._check_and_hash(
            settings, password, email=normalised, display_name=display_name, field_name=field_name
        )

    async def create_user(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        email: str,
        display_name: str,
        password_hash: str | None,
        roles: Sequence[str],
    ) -> UserView:
        tenant_id = actor.require_tenant()
        tenant = await self._tenant(uow.session, tenant_id)
        normalised = self._require_email(email, tenant.settings, "email")
        checked = await self._validate_roles(
            uow.session, tenant_id, roles or [domain.STUDENT], actor
        )
        now = domain.utcnow()
        user = await self._insert_user(
            uow,
            tenant_id,
            NewUser(normalised, display_name, password_hash, checked),
            now,
            verified=False,
        )
        await self._audit(uow, tenant_id, "user.created", actor, f"users/{user.user_id}")
        return UserView(user, checked)

    async def batch_create_users(
        self,
        uow: UnitOfWork,
        actor: Actor,
        items: Sequence[tuple[str, str, str | None, Sequence[str]]],
    ) -> list[tuple[UserView | None, str]]:
        """Each item (email, name, password hash, roles) succeeds or fails on its own; failures
        use savepoints so the good items still commit."""
        tenant_id = actor.require_tenant()
        tenant = await self._tenant(uow.session, tenant_id)
        results: list[tuple[UserView | None, str]] = []
        now = domain.utcnow()
        for email, name, password_hash, roles in items:
            try:
                normalised = self._require_email(email, tenant.settings, "email")
                if not name.strip():
                    raise _invalid("display_name", "must not be empty")
                checked = await self._validate_roles(
                    uow.session, tenant_id, roles or [domain.STUDENT], actor
                )
                async with uow.session.begin_nested():
                    user = await self._insert_user(
                        uow,
                        tenant_id,
                        NewUser(normalised, name.strip(), password_hash, checked),
                        now,
                        verified=False,
                    )
                await self._audit(uow, tenant_id, "user.created", actor, f"users/{user.user_id}")
                results.append((UserView(user, checked), ""))
            except (InvalidArgument, AlreadyExists, PermissionDenied) as exc:
                results.append((None, exc.message))
            except IntegrityError:
                results.append((None, "a user with this email exists"))
        return results

    async def sign_up(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        tenant_slug: str,
        email: str,
        display_name: str,
        password_hash: str,
    ) -> UserView:
        tenant = await store.tenant_by_slug(uow.session, tenant_slug)
        if tenant is None or not tenant.settings.self_signup_enabled:
            raise FailedPrecondition(
                "self sign-up is not available for this tenant", reason="SIGNUP_DISABLED"
            )
        normalised = self._require_email(email, tenant.settings, "email")
        now = domain.utcnow()
        user = await self._insert_user(
            uow,
            tenant.tenant_id,
            NewUser(normalised, display_name, password_hash, (domain.STUDENT,)),
            now,
            verified=False,
        )
        # A self-registered address is unproven: the verification mail goes out with the
        # account (same transaction), so sign-up alone starts the verify-email flow.
        await self._issue_one_time_token(
            uow, user, domain.PURPOSE_EMAIL_VERIFICATION, self.config.verification_token_ttl
        )
        await self._audit(
            uow,
            tenant.tenant_id,
            "user.signed_up",
            actor,
            f"users/{user.user_id}",
            actor_id=user.user_id,
        )
        return UserView(user, (domain.STUDENT,))

    async def prepare_signup_password(
        self, tenant_slug: str, password: str, email: str, display_name: str
    ) -> str:
        async with self.db.engine.connect() as conn:
            tenant = await store.tenant_by_slug(conn, tenant_slug)
        if tenant is None or not tenant.settings.self_signup_enabled:
            raise FailedPrecondition(
                "self sign-up is not available for this tenant", reason="SIGNUP_DISABLED"
            )
        normalised = domain.normalise_email(email) or email
        return await self._check_and_hash(
            tenant.settings, password, email=normalised, display_name=display_name
        )

    async def get_user(self, actor: Actor, user_id: str) -> UserView:
        return await self._fast_view(actor.require_tenant(), user_id)

    # --- writes that change a user's view: read your own writes at once -----------------------

    def _user_changed(self, uow: UnitOfWork, tenant_id: str, user_id: str) -> None:
        """Drop the user's cached view when `uow` commits, so the next read in this process sees
        the change; other replicas hear the triggers' notice (migration 0002) a moment later."""
        if self.user_cache is not None:
            uow.after_commit(
                functools.partial(self.user_cache.invalidate, f"{tenant_id}:{user_id}")
            )

    async def _save_user(self, uow: UnitOfWork, user: store.UserRow, expected_version: int) -> bool:
        self._user_changed(uow, user.tenant_id, user.user_id)
        return await store.save_user(uow.session, user, expected_version)

    async def _insert_assignment(
        self,
        uow: UnitOfWork,
        *,
        assignment_id: str,
        tenant_id: str,
        user_id: str,
        role_name: str,
        scope: str,
        now: datetime,
    ) -> bool:
        self._user_changed(uow, tenant_id, user_id)
        return await store.insert_assignment(
            uow.session,
            assignment_id=assignment_id,
            tenant_id=tenant_id,
            user_id=user_id,
            role_name=role_name,
            scope=scope,
            now=now,
        )

    async def _delete_assignment(
        self, uow: UnitOfWork, tenant_id: str, user_id: str, role_name: str, scope: str
    ) -> bool:
        self._user_changed(uow, tenant_id, user_id)
        return await store.delete_assignment(uow.session, tenant_id, user_id, role_name, scope)

    async def get_current_user(self, actor: Actor) -> UserView:
        tenant_id, user_id = actor.require_user()
        return await self._fast_view(tenant_id, user_id)

    async def _fast_view(self, tenant_id: str, user_id: str) -> UserView:
        cache = self.user_cache
        if cache is not None:
            cached = cache.peek(tenant_id, user_id)
            if cached is not None:
                return cached
        reads = self.reads
        if reads is None:
            async with self.db.engine.connect() as conn:
                return await self._view(conn, await self._user(conn, tenant_id, user_id))

        async def load() -> UserView | None:
            found = await reads.user_with_roles(tenant_id, user_id)
            return None if found is None else UserView(found[0], tuple(found[1]))

        view = await (load() if cache is None else cache.get(tenant_id, user_id, load))
        if view is None:
            raise NotFound(f"user {user_id} not found", reason="USER_NOT_FOUND")
        return view

    async def list_users(
        self,
        actor: Actor,
        *,
        page_size: int,
        page_token: str,
        role: str,
        status: domain.UserStatus | None,
        query: str,
    ) -> tuple[list[UserView], str]:
        tenant_id = actor.require_tenant()
        fp = domain.fingerprint("users", tenant_id, role, status, query)
        after = None
        if page_token:
            after = domain.decode_page_token(page_token, fp)
            if after is None:
                raise _invalid("page_token", "invalid or for different filters")
        limit = domain.effective_page_size(page_size)
        async with self.db.engine.connect() as conn:
            rows = await store.list_users(
                conn, tenant_id, store.UserFilter(role, status, query), after, limit + 1
            )
            page = rows[:limit]
            roles = await store.tenant_roles_of_users(conn, tenant_id, [u.user_id for u in page])
        next_token = ""
        if len(rows) > limit:
            last = page[-1]
            next_token = domain.encode_page_token(last.created_at, last.user_id, fp)
        return [UserView(u, tuple(roles[u.user_id])) for u in page], next_token

    async def update_user(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        user_id: str,
        etag: str,
        display_name: str | None,
        email: str | None,
    ) -> UserView:
        tenant_id = actor.require_tenant()
        user = await self._user(uow.session, tenant_id, user_id, for_update=True)
        if not etag_matches(etag, user.version):
            raise Aborted("the user changed since you read it", reason="ETAG_MISMATCH")
        changed: list[str] = []
        updated = user
        if display_name is not None and display_name != user.display_name:
            if not display_name.strip() or len(display_name) > 200:
                raise _invalid("user.display_name", "1-200 characters")
            updated = replace(updated, display_name=display_name.strip())
            changed.append("display_name")
        if email is not None:
            tenant = await self._tenant(uow.session, tenant_id)
            normalised = self._require_email(email, tenant.settings, "user.email")
            if normalised != user.email:
                if await store.user_by_email(uow.session, tenant_id, normalised) is not None:
                    raise AlreadyExists("a user with this email exists", reason="EMAIL_TAKEN")
                updated = replace(updated, email=normalised, email_verified=False)
                changed.append("email")
        if not changed:
            return await self._view(uow.session, user)
        now = domain.utcnow()
        updated = replace(updated, version=user.version + 1, updated_at=now)
        if not await self._save_user(uow, updated, user.version):
            raise Aborted("the user changed since you read it", reason="ETAG_MISMATCH")
        self._emit(
            uow,
            domain.UserUpdated(
                tenant_id, user_id, updated.email, updated.display_name, tuple(changed), now
            ),
        )
        await self._audit(
            uow,
            tenant_id,
            "user.updated",
            actor,
            f"users/{user_id}",
            details={"fields": ",".join(changed)},
        )
        return await self._view(uow.session, updated)

    async def change_status(
        self,
        uow: UnitOfWork,
        actor: Actor,
        user_id: str,
        target: domain.UserStatus,
        etag: str = "",
    ) -> UserView:
        tenant_id = actor.require_tenant()
        user = await self._user(uow.session, tenant_id, user_id, for_update=True)
        if not etag_matches(etag, user.version):
            raise Aborted("the user changed since you read it", reason="ETAG_MISMATCH")
        if user.status is target:
            return await self._view(uow.session, user)  # already there: nothing to do
        if not domain.can_transition(user.status, target):
            raise FailedPrecondition(
                f"cannot go from {user.status.value} to {target.value}", reason="BAD_TRANSITION"
            )
        if user_id == actor.user_id and target is not domain.UserStatus.ACTIVE:
            raise FailedPrecondition("you cannot deactivate yourself", reason="SELF_DEACTIVATION")
        now = domain.utcnow()
        updated = replace(user, status=target, version=user.version + 1, updated_at=now)
        if not await self._save_user(uow, updated, user.version):
            raise Aborted("the user changed since you read it", reason="ETAG_MISMATCH")
        if target is not domain.UserStatus.ACTIVE:
            await store.revoke_sessions(uow.session, tenant_id, user_id, now, target.value)
        self._emit(uow, domain.UserStatusChanged(tenant_id, user_id, target, now))
        action = {
            domain.UserStatus.ACTIVE: "user.activated",
            domain.UserStatus.DEACTIVATED: "user.deactivated",
            domain.UserStatus.DELETED: "user.deleted",
        }[target]
        await self._audit(uow, tenant_id, action, actor, f"users/{user_id}")
        return await self._view(uow.session, updated)

    # ---- passwords -------------------------------------------------------------------------

    async def change_password(
        self, uow: UnitOfWork, actor: Actor, current: str, new_password: str
    ) -> None:
        tenant_id, user_id = actor.require_user()
        user = await self._user(uow.session, tenant_id, user_id, for_update=True)
        if not await self.hashing.verify(user.password_hash, domain.normalise_password(current)):
            await self._audit(
                uow, tenant_id, "password.change_failed", actor, f"users/{user_id}", success=False
            )
            raise Unauthenticated("current password is wrong", reason=INVALID_CREDENTIALS)
        tenant = await self._tenant(uow.session, tenant_id)
        new_hash = await self._check_and_hash(
            tenant.settings,
            new_password,
            email=user.email,
            display_name=user.display_name,
            field_name="new_password",
        )
        now = domain.utcnow()
        updated = replace(user, password_hash=new_hash, version=user.version + 1, updated_at=now)
        if not await self._save_user(uow, updated, user.version):
            raise Aborted("the user changed concurrently", reason="ETAG_MISMATCH")
        await store.revoke_sessions(
            uow.session,
            tenant_id,
            user_id,
            now,
            "password_changed",
            keep_session_id=actor.session_id,
        )
        await self._audit(uow, tenant_id, "password.changed", actor, f"users/{user_id}")

    async def _issue_one_time_token(
        self, uow: UnitOfWork, user: store.UserRow, purpose: str, ttl: timedelta
    ) -> None:
        now = domain.utcnow()
        raw, token_hash = domain.new_opaque_token()
        await store.invalidate_one_time_tokens(
            uow.session, user.tenant_id, user.user_id, purpose, now
        )
        await store.insert_one_time_token(
            uow.session,
            token_hash=token_hash,
            tenant_id=user.tenant_id,
            user_id=user.user_id,
            purpose=purpose,
            now=now,
            expires_at=now + ttl,
        )
        self._emit(
            uow,
            domain.TokenIssued(
                user.tenant_id,
                user.user_id,
                user.email,
                user.display_name,
                purpose,
                raw,
                now + ttl,
                now,
            ),
        )

    async def request_password_reset(self, actor: Actor, tenant_slug: str, email: str) -> None:
        """Same outcome whether or not the account exists (nothing is revealed)."""
        normalised = domain.normalise_email(email)
        async with self.db.unit_of_work(tenant_id=None) as uow:
            tenant = await store.tenant_by_slug(uow.session, tenant_slug)
            if tenant is None or normalised is None:
                return
            user = await store.user_by_email(uow.session, tenant.tenant_id, normalised)
            if user is None or user.status is not domain.UserStatus.ACTIVE:
                return
            await self._issue_one_time_token(
                uow, user, domain.PURPOSE_PASSWORD_RESET, self.config.reset_token_ttl
            )
            await self._audit(
                uow,
                tenant.tenant_id,
                "password.reset_requested",
                actor,
                f"users/{user.user_id}",
                actor_id="",
            )

    async def reset_password(self, actor: Actor, token: str, new_password: str) -> None:
        async with self.db.unit_of_work(tenant_id=None) as uow:
            row = await store.one_time_token_for_update(uow.session, domain.sha256_hex(token))
            now = domain.utcnow()
            if row is None or not domain.one_time_token_usable(
                row.token, domain.PURPOSE_PASSWORD_RESET, now
            ):
                raise Unauthenticated("reset token invalid or expired", reason="INVALID_TOKEN")
            user = await self._user(uow.session, row.tenant_id, row.token.user_id, for_update=True)
            if user.status is not domain.UserStatus.ACTIVE:
                raise Unauthenticated("reset token invalid or expired", reason="INVALID_TOKEN")
            tenant = await self._tenant(uow.session, row.tenant_id)
            new_hash = await self._check_and_hash(
                tenant.settings,
                new_password,
                email=user.email,
                display_name=user.display_name,
                field_name="new_password",
            )
            await store.use_one_time_token(
                uow.session, row.tenant_id, domain.sha256_hex(token), now
            )
            # A reset also proves control of the mailbox.
            updated = replace(
                user,
                password_hash=new_hash,
                email_verified=True,
                version=user.version + 1,
                updated_at=now,
            )
            await self._save_user(uow, updated, user.version)
            await store.revoke_sessions(
                uow.session, user.tenant_id, user.user_id, now, "password_reset"
            )
            await store.save_throttle(
                uow.session,
                self._account_key(user.tenant_id, user.email),
                user.tenant_id,
                domain.ThrottleState(),
            )
            await self._audit(
                uow,
                user.tenant_id,
                "password.reset",
                actor,
                f"users/{user.user_id}",
                actor_id=user.user_id,
            )

    async def request_email_verification(self, actor: Actor) -> None:
        tenant_id, user_id = actor.require_user()
        async with self.db.unit_of_work(tenant_id=tenant_id) as uow:
            user = await self._user(uow.session, tenant_id, user_id)
            if user.email_verified:
                return
            await self._issue_one_time_token(
                uow, user, domain.PURPOSE_EMAIL_VERIFICATION, self.config.verification_token_ttl
            )
            await self._audit(
                uow, tenant_id, "email.verification_requested", actor, f"users/{user_id}"
            )

    async def verify_email(self, actor: Actor, token: str) -> None:
        async with self.db.unit_of_work(tenant_id=None) as uow:
            token_hash = domain.sha256_hex(token)
            row = await store.one_time_token_for_update(uow.session, token_hash)
            now = domain.utcnow()
            if row is None or not domain.one_time_token_usable(
                row.token, domain.PURPOSE_EMAIL_VERIFICATION, now
            ):
                raise Unauthenticated(
                    "verification token invalid or expired", reason="INVALID_TOKEN"
                )
            user = await self._user(uow.session, row.tenant_id, row.token.user_id, for_update=True)
            await store.use_one_time_token(uow.session, row.tenant_id, token_hash, now)
            updated = replace(user, email_verified=True, version=user.version + 1, updated_at=now)
            await self._save_user(uow, updated, user.version)
            await self._audit(
                uow,
                user.tenant_id,
                "email.verified",
                actor,
                f"users/{user.user_id}",
                actor_id=user.user_id,
            )

    # ---- login, tokens, sessions -------------------------------------------------------------

    @staticmethod
    def _account_key(tenant_ref: str, email: str) -> str:
        return f"account:{tenant_ref}:{email}"

    @staticmethod
    def _address_key(address: str) -> str:
        return f"address:{address}"

    async def _check_throttles(self, account_key: str, address_key: str) -> None:
        now = domain.utcnow()
        async with self.db.engine.connect() as conn:
            waits = [
                domain.throttle_wait(await store.throttle_state(conn, key), now)
                for key in (account_key, address_key)
            ]
        wait = max(waits)
        if wait > timedelta(0):
            raise ResourceExhausted(
                f"too many failed logins; retry in {int(wait.total_seconds()) + 1} s",
                reason="LOGIN_THROTTLED",
                metadata={"retry_after_seconds": str(int(wait.total_seconds()) + 1)},
            )

    async def _record_login_failure(
        self,
        actor: Actor,
        *,
        tenant_id: str | None,
        account_key: str,
        address_key: str,
        email: str,
        user_id: str | None,
    ) -> None:
        now = domain.utcnow()
        async with self.db.unit_of_work(tenant_id=tenant_id) as uow:
            for key, policy, owner in (
                (account_key, self.config.account_throttle, tenant_id),
                (address_key, self.config.address_throttle, None),
            ):
                state = await store.throttle_state(uow.session, key, for_update=True)
                await store.save_throttle(
                    uow.session, key, owner, domain.record_failure(state, policy, now)
                )
            if tenant_id is not None:
                await self._audit(
                    uow,
                    tenant_id,
                    "login.failed",
                    actor,
                    f"users/{user_id}" if user_id else f"email/{email}",
                    success=False,
                    actor_id="",
                )

    async def login(self, actor: Actor, tenant_slug: str, email: str, password: str) -> LoginResult:
        # Admission: a burst of logins waits here instead of interleaving all of its database
        # work on the event loop at once, which would delay every other RPC.
        async with self._login_slots:
            return await self._login(actor, tenant_slug, email, password)

    async def _login(
        self, actor: Actor, tenant_slug: str, email: str, password: str
    ) -> LoginResult:
        normalised = domain.normalise_email(email) or email.strip().lower()
        async with self.db.engine.connect() as conn:
            tenant = await store.tenant_by_slug(conn, tenant_slug)
            user = (
                await store.user_by_email(conn, tenant.tenant_id, normalised)
                if tenant is not None
                else None
            )
        account_key = self._account_key(tenant.tenant_id if tenant else tenant_slug, normalised)
        address_key = self._address_key(actor.source_address or "unknown")
        await self._check_throttles(account_key, address_key)
        usable = user is not None and user.status is domain.UserStatus.ACTIVE
        # Always one Argon2id verification, against a dummy hash when there is no usable account.
        ok = await self.hashing.verify(
            user.password_hash if usable and user is not None else None,
            domain.normalise_password(password),
        )
        if not ok or user is None or tenant is None:
            await self._record_login_failure(
                actor,
                tenant_id=tenant.tenant_id if tenant else None,
                account_key=account_key,
                address_key=address_key,
                email=normalised,
                user_id=user.user_id if user else None,
            )
            raise Unauthenticated("invalid email or password", reason=INVALID_CREDENTIALS)
        login_actor = replace(actor, user_id=user.user_id, tenant_id=tenant.tenant_id)
        async with self.db.unit_of_work(tenant_id=tenant.tenant_id) as uow:
            await store.save_throttle(
                uow.session, account_key, tenant.tenant_id, domain.ThrottleState()
            )
            if user.mfa_enabled:
                raw, token_hash = domain.new_opaque_token()
                now = domain.utcnow()
                await store.insert_one_time_token(
                    uow.session,
                    token_hash=token_hash,
                    tenant_id=tenant.tenant_id,
                    user_id=user.user_id,
                    purpose=domain.PURPOSE_MFA_CHALLENGE,
                    now=now,
                    expires_at=now + self.config.mfa_challenge_ttl,
                    context={"user_agent": actor.user_agent, "attempts": "0"},
                )
                await self._audit(
                    uow,
                    tenant.tenant_id,
                    "login.mfa_required",
                    login_actor,
                    f"users/{user.user_id}",
                )
                return LoginResult(tokens=None, mfa_challenge=raw)
            tokens = await self._start_session(uow, tenant, user, actor)
            await self._audit(
                uow,
                tenant.tenant_id,
                "login.succeeded",
                login_actor,
                f"users/{user.user_id}",
                details={"session_id": tokens.session_id},
            )
        if self.hashing.needs_rehash(user.password_hash or ""):
            await self._rehash(user, password)
        return LoginResult(tokens=tokens)

    async def _rehash(self, user: store.UserRow, password: str) -> None:
        new_hash = await self.hashing.hash(domain.normalise_password(password))
        async with self.db.unit_of_work(tenant_id=user.tenant_id) as uow:
            current = await self._user(uow.session, user.tenant_id, user.user_id, for_update=True)
            if current.password_hash == user.password_hash:
                await self._save_user(
                    uow,
                    replace(current, password_hash=new_hash, version=current.version + 1),
                    current.version,
                )

    async def _access_claims(
        self, s: store.Executor, user: store.UserRow, session_id: str
    ) -> AccessClaims:
        rows = await store.assignments_of(s, user.tenant_id, user.user_id)
        assignments = [domain.Assignment(r.role_name, r.scope) for r in rows]
        custom = await store.custom_roles(s, user.tenant_id)
        tenant = await self._tenant(s, user.tenant_id)
        return AccessClaims(
            subject=user.user_id,
            tenant_id=user.tenant_id,
            roles=sorted({a.role_name for a in assignments if not a.scope}),
            permissions=sorted(
                domain.token_permissions(
                    assignments,
                    custom,
                    mfa_required_roles=tenant.settings.mfa_required_roles,
                    mfa_enabled=user.mfa_enabled,
                )
            ),
            session_id=session_id,
        )

    async def _start_session(
        self, uow: UnitOfWork, tenant: store.TenantRow, user: store.UserRow, actor: Actor
    ) -> Tokens:
        now = domain.utcnow()
        session_id = _new_id()
        expires = now + tenant.settings.session_lifetime
        await store.insert_session(
            uow.session,
            session_id=session_id,
            tenant_id=tenant.tenant_id,
            user_id=user.user_id,
            now=now,
            expires_at=expires,
            source_address=actor.source_address,
            user_agent=actor.user_agent[:512],
        )
        return await self._issue_tokens(uow, user, session_id, expires, now)

    async def _issue_tokens(
        self,
        uow: UnitOfWork,
        user: store.UserRow,
        session_id: str,
        expires: datetime,
        now: datetime,
    ) -> Tokens:
        raw, token_hash = domain.new_opaque_token()
        await store.insert_refresh_token(
            uow.session,
            token_hash=token_hash,
            tenant_id=user.tenant_id,
            session_id=session_id,
            now=now,
            expires_at=expires,
        )
        claims = await self._access_claims(uow.session, user, session_id)
        access, access_exp = issue_access_token(
            self.keys.current,
            claims,
            issuer=self.config.issuer,
            audience=self.config.audience,
            now=now,
            ttl=self.config.access_token_ttl,
        )
        return Tokens(access, access_exp, raw, expires, session_id)

    async def complete_mfa_login(
        self, actor: Actor, challenge: str, totp_code: str, recovery_code: str
    ) -> Tokens:
        challenge_hash = domain.sha256_hex(challenge)
        failure: str | None = None
        tokens: Tokens | None = None
        async with self.db.unit_of_work(tenant_id=None) as uow:
            row = await store.one_time_token_for_update(uow.session, challenge_hash)
            now = domain.utcnow()
            if row is None or not domain.one_time_token_usable(
                row.token, domain.PURPOSE_MFA_CHALLENGE, now
            ):
                raise Unauthenticated("MFA challenge invalid or expired", reason="INVALID_TOKEN")
            tenant = await self._tenant(uow.session, row.tenant_id)
            user = await self._user(uow.session, row.tenant_id, row.token.user_id, for_update=True)
            login_actor = replace(actor, user_id=user.user_id, tenant_id=user.tenant_id)
            verified = False
            if totp_code and user.totp_secret is not None:
                secret = self._open_totp(user, user.totp_secret)
                step = domain.verify_totp(secret, totp_code, now, user.totp_last_step)
                if step is not None:
                    verified = True
                    await self._save_user(
                        uow,
                        replace(user, totp_last_step=step, version=user.version + 1),
                        user.version,
                    )
            elif recovery_code:
                code_hash = domain.sha256_hex(domain.normalise_recovery_code(recovery_code))
                verified = await store.use_recovery_code(
                    uow.session, user.tenant_id, user.user_id, code_hash, now
                )
            if verified:
                await store.use_one_time_token(uow.session, row.tenant_id, challenge_hash, now)
                tokens = await self._start_session(uow, tenant, user, actor)
                await self._audit(
                    uow,
                    user.tenant_id,
                    "login.succeeded",
                    login_actor,
                    f"users/{user.user_id}",
                    details={
                        "mfa": "totp" if totp_code else "recovery_code",
                        "session_id": tokens.session_id,
                    },
                )
            else:
                attempts = int(row.context.get("attempts", "0")) + 1
                if attempts >= 5:  # a challenge allows 5 wrong codes, then login starts over
                    await store.use_one_time_token(uow.session, row.tenant_id, challenge_hash, now)
                await self._audit(
                    uow,
                    user.tenant_id,
                    "login.mfa_failed",
                    login_actor,
                    f"users/{user.user_id}",
                    success=False,
                )
                failure = "MFA code invalid"
                from services.identity.store import one_time_tokens  # local: narrow helper

                await uow.session.execute(
                    one_time_tokens.update()
                    .where(one_time_tokens.c.token_hash == challenge_hash)
                    .values(context=json.dumps({**row.context, "attempts": str(attempts)}))
                )
        if failure is not None or tokens is None:
            raise Unauthenticated(failure or "MFA failed", reason="INVALID_MFA_CODE")
        return tokens

    async def refresh(self, actor: Actor, refresh_token: str) -> Tokens:
        token_hash = domain.sha256_hex(refresh_token)
        outcome = domain.RefreshOutcome.REJECT
        tokens: Tokens | None = None
        async with self.db.unit_of_work(tenant_id=None) as uow:
            found = await store.refresh_token_for_update(uow.session, token_hash)
            now = domain.utcnow()
            outcome = domain.decide_refresh(
                found.token if found else None, found.session if found else None, now
            )
            if found is not None and outcome is domain.RefreshOutcome.REUSE_DETECTED:
                await store.revoke_sessions(
                    uow.session,
                    found.tenant_id,
                    found.session.user_id,
                    now,
                    "refresh_reuse",
                    session_id=found.session.session_id,
                )
                await self._audit(
                    uow,
                    found.tenant_id,
                    "session.refresh_reuse_detected",
                    replace(actor, user_id=found.session.user_id),
                    f"sessions/{found.session.session_id}",
                    success=False,
                )
            elif found is not None and outcome is domain.RefreshOutcome.ROTATE:
                user = await store.user_by_id(uow.session, found.tenant_id, found.session.user_id)
                if user is None or user.status is not domain.UserStatus.ACTIVE:
                    outcome = domain.RefreshOutcome.REJECT
                else:
                    await store.mark_refresh_used(uow.session, found.tenant_id, token_hash, now)
                    await store.touch_session(
                        uow.session, found.tenant_id, found.session.session_id, now
                    )
                    tokens = await self._issue_tokens(
                        uow, user, found.session.session_id, found.session.expires_at, now
                    )
        if tokens is None:
            # Committed above: a detected reuse stays revoked even though this call fails.
            raise Unauthenticated("refresh token invalid", reason="INVALID_REFRESH_TOKEN")
        return tokens

    async def logout(self, actor: Actor) -> None:
        tenant_id, user_id = actor.require_user()
        if not actor.session_id:
            return
        async with self.db.unit_of_work(tenant_id=tenant_id) as uow:
            await store.revoke_sessions(
                uow.session,
                tenant_id,
                user_id,
                domain.utcnow(),
                "logout",
                session_id=actor.session_id,
            )
            await self._audit(uow, tenant_id, "logout", actor, f"sessions/{actor.session_id}")

    async def list_sessions(self, actor: Actor) -> list[tuple[object, bool]]:
        tenant_id, user_id = actor.require_user()
        async with self.db.engine.connect() as conn:
            rows = await store.active_sessions(conn, tenant_id, user_id, domain.utcnow())
        return [(r, str(r.session_id) == actor.session_id) for r in rows]

    async def revoke_session(self, uow: UnitOfWork, actor: Actor, session_id: str) -> None:
        tenant_id, user_id = actor.require_user()
        count = await store.revoke_sessions(
            uow.session, tenant_id, user_id, domain.utcnow(), "revoked", session_id=session_id
        )
        if count == 0 and not await store.session_active(
            uow.session, tenant_id, session_id, domain.utcnow()
        ):
            # Unknown, someone else's, or already ended: all look the same.
            raise NotFound("session not found", reason="SESSION_NOT_FOUND")
        await self._audit(uow, tenant_id, "session.revoked", actor, f"sessions/{session_id}")

    async def revoke_all_sessions(self, uow: UnitOfWork, actor: Actor, keep_current: bool) -> int:
        tenant_id, user_id = actor.require_user()
        count = await store.revoke_sessions(
            uow.session,
            tenant_id,
            user_id,
            domain.utcnow(),
            "revoked_all",
            keep_session_id=actor.session_id if keep_current else None,
        )
        await self._audit(uow, tenant_id, "session.revoked_all", actor, f"users/{user_id}")
        return count

    # ---- MFA ---------------------------------------------------------------------------------

    def _seal_totp(self, user_id: str, secret: str) -> bytes:
        return self._sealer.seal(secret.encode(), f"totp:{user_id}".encode())

    def _open_totp(self, user: store.UserRow, sealed: bytes) -> str:
        raw = self._sealer.open(sealed, f"totp:{user.user_id}".encode())
        if raw is None:
            raise FailedPrecondition("TOTP secret unreadable", reason="TOTP_UNREADABLE")
        return raw.decode()

    async def enroll_totp(self, actor: Actor) -> tuple[str, str]:
        tenant_id, user_id = actor.require_user()
        secret = domain.new_totp_secret()
        async with self.db.unit_of_work(tenant_id=tenant_id) as uow:
            user = await self._user(uow.session, tenant_id, user_id, for_update=True)
            if user.mfa_enabled:
                raise FailedPrecondition("MFA is already enabled", reason="MFA_ALREADY_ENABLED")
            await self._save_user(
                uow,
                replace(
                    user,
                    totp_pending_secret=self._seal_totp(user_id, secret),
                    version=user.version + 1,
                    updated_at=domain.utcnow(),
                ),
                user.version,
            )
            await self._audit(uow, tenant_id, "mfa.enrollment_started", actor, f"users/{user_id}")
        uri = domain.totp_provisioning_uri(secret, user.email, self.config.totp_issuer)
        return secret, uri

    async def confirm_totp(self, actor: Actor, code: str) -> list[str]:
        tenant_id, user_id = actor.require_user()
        async with self.db.unit_of_work(tenant_id=tenant_id) as uow:
            user = await self._user(uow.session, tenant_id, user_id, for_update=True)
            if user.totp_pending_secret is None:
                raise FailedPrecondition("start with EnrollTotp", reason="NO_PENDING_ENROLLMENT")
            secret = self._open_totp(user, user.totp_pending_secret)
            now = domain.utcnow()
            step = domain.verify_totp(secret, code, now, None)
            if step is None:
                raise _invalid("code", "code does not match")
            codes = domain.new_recovery_codes()
            await store.replace_recovery_codes(
                uow.session, tenant_id, user_id, [domain.sha256_hex(c) for c in codes], now
            )
            await self._save_user(
                uow,
                replace(
                    user,
                    totp_secret=user.totp_pending_secret,
                    totp_pending_secret=None,
                    totp_last_step=step,
                    mfa_enabled=True,
                    version=user.version + 1,
                    updated_at=now,
                ),
                user.version,
            )
            await self._audit(uow, tenant_id, "mfa.enabled", actor, f"users/{user_id}")
        return codes

    async def disable_totp(self, actor: Actor, password: str, code: str) -> None:
        tenant_id, user_id = actor.require_user()
        async with self.db.engine.connect() as conn:
            user = await self._user(conn, tenant_id, user_id)
        if not user.mfa_enabled or user.totp_secret is None:
            raise FailedPrecondition("MFA is not enabled", reason="MFA_NOT_ENABLED")
        password_ok = await self.hashing.verify(
            user.password_hash, domain.normalise_password(password)
        )
        async with self.db.unit_of_work(tenant_id=tenant_id) as uow:
            current = await self._user(uow.session, tenant_id, user_id, for_update=True)
            secret = self._open_totp(current, current.totp_secret or b"")
            now = domain.utcnow()
            step = domain.verify_totp(secret, code, now, current.totp_last_step)
            if not password_ok or step is None:
                failed = True
            else:
                failed = False
                await store.replace_recovery_codes(uow.session, tenant_id, user_id, [], now)
                await self._save_user(
                    uow,
                    replace(
                        current,
                        totp_secret=None,
                        totp_pending_secret=None,
                        totp_last_step=None,
                        mfa_enabled=False,
                        version=current.version + 1,
                        updated_at=now,
                    ),
                    current.version,
                )
            await self._audit(
                uow,
                tenant_id,
                "mfa.disabled" if not failed else "mfa.disable_failed",
                actor,
                f"users/{user_id}",
                success=not failed,
            )
        if failed:
            raise Unauthenticated("password or code wrong", reason=INVALID_CREDENTIALS)

    # ---- RBAC --------------------------------------------------------------------------------

    async def list_roles(
        self, actor: Actor
    ) -> list[tuple[str, str, frozenset[str], bool, str, datetime | None, int]]:
        tenant_id = actor.require_tenant()
        async with self.db.engine.connect() as conn:
            rows = await store.custom_role_rows(conn, tenant_id)
        system = [
            (name, "system role", perms, True, "", None, 1)
            for name, perms in sorted(domain.SYSTEM_ROLES.items())
            if name != domain.PLATFORM_ADMIN or "identity.platform.manage" in actor.permissions
        ]
        custom = [
            (
                r.name,
                r.description,
                frozenset(json.loads(r.permissions)),
                False,
                str(r.role_id),
                r.created_at,
                r.version,
            )
            for r in rows
        ]
        return system + custom

    async def create_role(
        self, uow: UnitOfWork, actor: Actor, name: str, description: str, permissions: Sequence[str]
    ) -> tuple[str, datetime]:
        tenant_id = actor.require_tenant()
        problems = domain.validate_custom_role(name, permissions)
        if problems:
            raise InvalidArgument([FieldViolation(f, d) for f, d in problems])
        missing = set(permissions) - actor.permissions
        if missing and "identity.platform.manage" not in actor.permissions:
            raise PermissionDenied(
                "you cannot grant permissions you do not hold", reason="PERMISSION_ESCALATION"
            )
        if name in await store.custom_roles(uow.session, tenant_id):
            raise AlreadyExists(f"role '{name}' exists", reason="ROLE_EXISTS")
        role_id, now = _new_id(), domain.utcnow()
        await store.insert_role(
            uow.session,
            role_id=role_id,
            tenant_id=tenant_id,
            name=name,
            description=description,
            permissions=permissions,
            now=now,
        )
        await self._audit(uow, tenant_id, "role.created", actor, f"roles/{name}")
        return role_id, now

    async def assign_role(
        self, uow: UnitOfWork, actor: Actor, user_id: str, role_name: str, scope: str
    ) -> tuple[str, datetime]:
        tenant_id = actor.require_tenant()
        await self._user(uow.session, tenant_id, user_id)
        if not domain.validate_scope(scope):
            raise _invalid("scope", "must be '<collection>/<id>' or empty")
        await self._validate_roles(uow.session, tenant_id, [role_name], actor)
        assignment_id, now = _new_id(), domain.utcnow()
        if not await self._insert_assignment(
            uow,
            assignment_id=assignment_id,
            tenant_id=tenant_id,
            user_id=user_id,
            role_name=role_name,
            scope=scope,
            now=now,
        ):
            raise AlreadyExists("the user already has this role", reason="ROLE_ALREADY_ASSIGNED")
        self._emit(uow, domain.RoleChanged(tenant_id, user_id, role_name, scope, True, now))
        await self._audit(
            uow,
            tenant_id,
            "role.assigned",
            actor,
            f"users/{user_id}",
            details={"role": role_name, "scope": scope},
        )
        return assignment_id, now

    async def revoke_role(
        self, uow: UnitOfWork, actor: Actor, user_id: str, role_name: str, scope: str
    ) -> None:
        tenant_id = actor.require_tenant()
        await self._user(uow.session, tenant_id, user_id)
        if (
            role_name == domain.PLATFORM_ADMIN
            and "identity.platform.manage" not in actor.permissions
        ):
            raise PermissionDenied(
                "only platform admins revoke platform_admin", reason="ROLE_NOT_GRANTABLE"
            )
        if not await self._delete_assignment(uow, tenant_id, user_id, role_name, scope):
            raise NotFound("no such role assignment", reason="ASSIGNMENT_NOT_FOUND")
        now = domain.utcnow()
        self._emit(uow, domain.RoleChanged(tenant_id, user_id, role_name, scope, False, now))
        await self._audit(
            uow,
            tenant_id,
            "role.revoked",
            actor,
            f"users/{user_id}",
            details={"role": role_name, "scope": scope},
        )

    async def list_assignments(self, actor: Actor, user_id: str) -> list[object]:
        tenant_id = actor.require_tenant()
        async with self.db.engine.connect() as conn:
            await self._user(conn, tenant_id, user_id)
            return list(await store.assignments_of(conn, tenant_id, user_id))

    async def check_permission(
        self, actor: Actor, user_id: str, permission: str, scope: str
    ) -> bool:
        tenant_id = actor.require_tenant()
        async with self.db.engine.connect() as conn:
            user = await self._user(conn, tenant_id, user_id)
            if user.status is not domain.UserStatus.ACTIVE:
                return False
            rows = await store.assignments_of(conn, tenant_id, user_id)
            custom = await store.custom_roles(conn, tenant_id)
        assignments = [domain.Assignment(r.role_name, r.scope) for r in rows]
        return domain.has_permission(assignments, custom, permission, scope)

    # ---- API keys ----------------------------------------------------------------------------

    async def create_api_key(
        self,
        actor: Actor,
        display_name: str,
        permissions: Sequence[str],
        expires_at: datetime | None,
    ) -> tuple[object, str]:
        tenant_id = actor.require_tenant()
        excess = set(permissions) - actor.permissions
        if excess:
            raise PermissionDenied(
                "a key cannot hold permissions its creator lacks", reason="PERMISSION_ESCALATION"
            )
        now = domain.utcnow()
        if expires_at is not None and expires_at <= now:
            raise _invalid("expire_time", "must be in the future")
        key_id = _new_id()
        full, secret_hash = domain.new_api_key(key_id)
        async with self.db.unit_of_work(tenant_id=tenant_id) as uow:
            await store.insert_api_key(
                uow.session,
                {
                    "api_key_id": key_id,
                    "tenant_id": tenant_id,
                    "display_name": display_name,
                    "secret_hash": secret_hash,
                    "permissions": json.dumps(sorted(set(permissions))),
                    "created_by": actor.user_id,
                    "created_at": now,
                    "expires_at": expires_at,
                },
            )
            await self._audit(uow, tenant_id, "apikey.created", actor, f"apikeys/{key_id}")
            row = await store.api_key_by_id(uow.session, tenant_id, key_id)
        return row, full

    async def list_api_keys(
        self, actor: Actor, page_size: int, page_token: str
    ) -> tuple[list[object], str]:
        tenant_id = actor.require_tenant()
        fp = domain.fingerprint("apikeys", tenant_id)
        after = None
        if page_token:
            after = domain.decode_page_token(page_token, fp)
            if after is None:
                raise _invalid("page_token", "invalid")
        limit = domain.effective_page_size(page_size)
        async with self.db.engine.connect() as conn:
            rows = await store.list_api_keys(conn, tenant_id, after, limit + 1)
        page = rows[:limit]
        token = ""
        if len(rows) > limit:
            token = domain.encode_page_token(page[-1].created_at, str(page[-1].api_key_id), fp)
        return list(page), token

    async def revoke_api_key(self, uow: UnitOfWork, actor: Actor, api_key_id: str) -> object:
        tenant_id = actor.require_tenant()
        row = await store.api_key_by_id(uow.session, tenant_id, api_key_id)
        if row is None:
            raise NotFound("API key not found", reason="API_KEY_NOT_FOUND")
        await store.revoke_api_key(uow.session, tenant_id, api_key_id, domain.utcnow())
        await self._audit(uow, tenant_id, "apikey.revoked", actor, f"apikeys/{api_key_id}")
        return await store.api_key_by_id(uow.session, tenant_id, api_key_id)

    async def verify_api_key(self, key: str) -> object:
        parsed = domain.parse_api_key(key)
        if parsed is None:
            raise Unauthenticated("API key invalid", reason="INVALID_API_KEY")
        key_id, secret = parsed
        now = domain.utcnow()
        async with self.db.unit_of_work(tenant_id=None) as uow:
            row = await store.api_key_by_id(uow.session, None, key_id)
            if (
                row is None
                or not domain.secret_matches(secret, row.secret_hash)
                or row.revoked_at is not None
                or (row.expires_at is not None and row.expires_at <= now)
            ):
                raise Unauthenticated("API key invalid", reason="INVALID_API_KEY")
            await store.touch_api_key(uow.session, str(row.tenant_id), key_id, now)
            return await store.api_key_by_id(uow.session, str(row.tenant_id), key_id)

    # ---- audit -------------------------------------------------------------------------------

    async def list_audit(
        self, actor: Actor, page_size: int, page_token: str, flt: store.AuditFilter
    ) -> tuple[list[store.AuditRecord], str]:
        tenant_id = actor.require_tenant()
        fp = domain.fingerprint("audit", tenant_id, flt)
        after = None
        if page_token:
            after = domain.decode_page_token(page_token, fp)
            if after is None:
                raise _invalid("page_token", "invalid or for different filters")
        limit = domain.effective_page_size(page_size)
        async with self.db.engine.connect() as conn:
            rows = await store.list_audit(conn, tenant_id, flt, after, limit + 1)
        page = rows[:limit]
        token = ""
        if len(rows) > limit:
            token = domain.encode_page_token(page[-1].created_at, page[-1].audit_event_id, fp)
        return page, token

    # ---- bulk import -------------------------------------------------------------------------

    IMPORT_CHUNK = 500

    async def import_users(
        self, actor: Actor, request_id: str, csv_bytes: bytes, *, dry_run: bool, default_role: str
    ) -> AsyncIterator[ImportProgress]:
        tenant_id = actor.require_tenant()
        default_role = default_role or domain.STUDENT
        if default_role not in domain.IMPORTABLE_ROLES:
            raise _invalid(
                "default_role", "must be student, staff, instructor or teaching_assistant"
            )
        settings = await self._settings(tenant_id)

        def password_check(password: str, email: str, name: str) -> str | None:
            return domain.check_password(
                settings.password_policy, password, email=email, display_name=name
            )

        parsed = domain.parse_import_csv(
            csv_bytes, default_role=default_role, settings=settings, password_check=password_check
        )
        errors_by_line = sorted(parsed.errors, key=lambda e: e.line)
        created = already = 0
        failed = len(parsed.errors)
        processed = 0
        # Report the parse errors first, then the rows in chunks.
        yield ImportProgress(
            parsed.total_rows,
            len(parsed.errors),
            0,
            0,
            failed,
            errors_by_line,
            done=False,
            dry_run=dry_run,
        )
        processed = len(parsed.errors)
        async with self.db.engine.connect() as conn:
            done_before = await store.imported_emails(conn, tenant_id, request_id)
        for start in range(0, len(parsed.rows), self.IMPORT_CHUNK):
            chunk = parsed.rows[start : start + self.IMPORT_CHUNK]
            chunk_errors: list[domain.RowError] = []
            todo = [r for r in chunk if r.email not in done_before]
            already += len(chunk) - len(todo)
            # Hashed concurrently: the hashing pool's semaphore bounds the parallelism.
            with_password = [r for r in todo if r.password and not dry_run]
            digests = await asyncio.gather(
                *(self.hashing.hash(domain.normalise_password(r.password)) for r in with_password)
            )
            hashes = {r.line: d for r, d in zip(with_password, digests, strict=True)}
            async with self.db.unit_of_work(tenant_id=tenant_id) as uow:
                taken = await store.existing_emails(uow.session, tenant_id, [r.email for r in todo])
                new_pairs: list[tuple[str, str]] = []
                new_rows: list[store.UserRow] = []
                new_roles: list[str] = []
                now = domain.utcnow()
                for r in todo:
                    if r.email in taken:
                        chunk_errors.append(
                            domain.RowError(r.line, "email", "a user with this email exists")
                        )
                        continue
                    if dry_run:
                        created += 1
                        continue
                    user = self._new_user_row(
                        tenant_id, r.email, r.display_name, hashes.get(r.line), now
                    )
                    new_rows.append(user)
                    new_roles.append(r.role)
                    new_pairs.append((r.email, user.user_id))
                await store.insert_users_bulk(
                    uow.session, new_rows, new_roles, [_new_id() for _ in new_rows]
                )
                for user, role in zip(new_rows, new_roles, strict=True):
                    self._emit(
                        uow,
                        domain.UserCreated(
                            tenant_id, user.user_id, user.email, user.display_name, (role,), now
                        ),
                    )
                if not dry_run:
                    await store.record_imported(uow.session, tenant_id, request_id, new_pairs)
                    created += len(new_pairs)
                    if new_pairs:
                        await self._audit(
                            uow,
                            tenant_id,
                            "users.imported",
                            actor,
                            f"imports/{request_id}",
                            details={"created": str(len(new_pairs))},
                        )
            failed += len(chunk_errors)
            processed += len(chunk)
            yield ImportProgress(
                parsed.total_rows,
                processed,
                created,
                already,
                failed,
                chunk_errors,
                done=False,
                dry_run=dry_run,
            )
        yield ImportProgress(
            parsed.total_rows,
            parsed.total_rows,
            created,
            already,
            failed,
            [],
            done=True,
            dry_run=dry_run,
        )
