"""Domain events → `identity_events.proto` messages, written to the outbox by the unit of work.

Reset and verification tokens leave identity only sealed (AES-256-GCM) with the delivery key the
notifications service shares; the associated data binds the ciphertext to the event's user.
"""

from __future__ import annotations

from google.protobuf.message import Message
from suuupra.identity.v1 import identity_events_pb2 as ev

from services.identity import domain
from services.identity.keys import Sealer
from suuupra_runtime.db import UnitOfWork
from suuupra_runtime.timestamps import timestamp_pb as _ts


def open_sealed_token(sealer: Sealer, sealed: ev.SealedToken, user_id: str) -> str | None:
    """What the notifications service does to recover the token (used by tests and docs)."""
    raw = sealer.open(sealed.ciphertext, user_id.encode())
    return raw.decode() if raw is not None else None


class OutboxEvents:
    def __init__(self, delivery: Sealer) -> None:
        self._delivery = delivery

    def to_proto(self, event: domain.DomainEvent) -> Message:
        match event:
            case domain.UserCreated():
                return ev.UserCreated(
                    tenant_id=event.tenant_id,
                    user_id=event.user_id,
                    email=event.email,
                    display_name=event.display_name,
                    roles=list(event.roles),
                    occurred_at=_ts(event.occurred_at),
                )
            case domain.UserUpdated():
                return ev.UserUpdated(
                    tenant_id=event.tenant_id,
                    user_id=event.user_id,
                    email=event.email,
                    display_name=event.display_name,
                    changed_fields=list(event.changed_fields),
                    occurred_at=_ts(event.occurred_at),
                )
            case domain.UserStatusChanged():
                kind = {
                    domain.UserStatus.ACTIVE: ev.UserActivated,
                    domain.UserStatus.DEACTIVATED: ev.UserDeactivated,
                    domain.UserStatus.DELETED: ev.UserDeleted,
                }[event.status]
                return kind(
                    tenant_id=event.tenant_id,
                    user_id=event.user_id,
                    occurred_at=_ts(event.occurred_at),
                )
            case domain.RoleChanged():
                role_kind = ev.RoleAssigned if event.assigned else ev.RoleRevoked
                return role_kind(
                    tenant_id=event.tenant_id,
                    user_id=event.user_id,
                    role_name=event.role_name,
                    scope=event.scope,
                    occurred_at=_ts(event.occurred_at),
                )
            case domain.TokenIssued():
                sealed = ev.SealedToken(
                    key_id=self._delivery.key_id,
                    ciphertext=self._delivery.seal(
                        event.raw_token.encode(), event.user_id.encode()
                    ),
                )
                token_kind = (
                    ev.PasswordResetRequested
                    if event.purpose == domain.PURPOSE_PASSWORD_RESET
                    else ev.EmailVerificationRequested
                )
                return token_kind(
                    tenant_id=event.tenant_id,
                    user_id=event.user_id,
                    email=event.email,
                    display_name=event.display_name,
                    token=sealed,
                    expire_time=_ts(event.expires_at),
                    occurred_at=_ts(event.occurred_at),
                )
        raise TypeError(f"unmapped event {type(event).__name__}")

    def emit(self, uow: UnitOfWork, event: domain.DomainEvent) -> None:
        # The tenant header must name the event's tenant, which differs from the transaction's
        # when a platform admin acts on another tenant (CreateTenant). add_event takes the tenant
        # from the unit of work, so point it at the event's tenant for this one call.
        acting_tenant = uow.tenant_id
        uow.tenant_id = event.tenant_id
        try:
            # Keyed by user so a consumer sees one user's events in order.
            uow.add_event(self.to_proto(event), key=event.user_id)
        finally:
            uow.tenant_id = acting_tenant
