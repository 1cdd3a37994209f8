"""Per-RPC access rules read from the contract, and the check the runtime applies before handlers.

Every RPC declares `option (suuupra.options.v1.access) = {...}` in its `.proto`:

* `public: true`      anyone; no credentials needed (a token, if sent, is still verified);
* `internal: true`    only another service (a SPIFFE peer from the sidecar's XFCC);
* `permission: "x.y"` an authenticated user whose token's `perms` contain it, or a SPIFFE peer.

A method with no rule (or an empty/contradictory one) is refused: the runtime fails closed.
Anonymous callers get UNAUTHENTICATED; authenticated callers without the right get
PERMISSION_DENIED — decided before the handler runs, so a denied caller never learns whether a
resource exists.

The edge proxy also presents a SPIFFE certificate, but it forwards end users; its identity
(service account `edge`) therefore never counts as a trusted service here.

`method_info("/pkg.Service/Method")` returns the cached descriptor facts the runtime needs
(request type, streaming, access rule, idempotency) — one descriptor-pool lookup per method.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from google.protobuf import descriptor, descriptor_pool, message_factory
from google.protobuf.message import Message
from suuupra.options.v1 import options_pb2

from suuupra_runtime.auth import Caller
from suuupra_runtime.errors import PermissionDenied, Unauthenticated

# Platform services registered by the runtime itself; they carry no suuupra options.
INFRASTRUCTURE_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
# Service accounts that proxy end users and so are not trusted as calling services.
PROXY_SERVICE_ACCOUNTS = frozenset({"edge"})


@dataclass(frozen=True)
class AccessRule:
    public: bool = False
    internal: bool = False
    permission: str | None = None

    @property
    def is_valid(self) -> bool:
        """Exactly one kind of rule; anything else is a contract bug and is refused."""
        return (int(self.public) + int(self.internal) + int(bool(self.permission))) == 1

    def describe(self) -> str:
        if self.public:
            return "public"
        if self.internal:
            return "internal"
        return f"permission {self.permission}" if self.permission else "none"


PUBLIC = AccessRule(public=True)


@dataclass(frozen=True)
class MethodInfo:
    full_method: str
    service: str
    method: str
    access: AccessRule | None
    idempotent: bool
    request_type: type[Message] | None
    server_streaming: bool
    client_streaming: bool


def split_method(full_method: str) -> tuple[str, str]:
    """`/pkg.Service/Method` → (`pkg.Service`, `Method`); malformed names give ("", name)."""
    service, sep, method = full_method.lstrip("/").rpartition("/")
    return (service, method) if sep else ("", full_method)


def _access_of(method: descriptor.MethodDescriptor) -> AccessRule | None:
    options = method.GetOptions()
    if not options.HasExtension(options_pb2.access):
        return None
    rule = options.Extensions[options_pb2.access]
    return AccessRule(
        public=rule.public, internal=rule.internal, permission=rule.permission or None
    )


def _idempotent(method: descriptor.MethodDescriptor) -> bool:
    options = method.GetOptions()
    return options.HasExtension(options_pb2.idempotency) and bool(
        options.Extensions[options_pb2.idempotency].enabled
    )


@functools.lru_cache(maxsize=4096)
def method_info(full_method: str) -> MethodInfo:
    """Descriptor facts for a full method name (cached; unknown methods get `access=None`)."""
    service_name, method_name = split_method(full_method)
    if service_name in INFRASTRUCTURE_SERVICES:
        return MethodInfo(full_method, service_name, method_name, PUBLIC, False, None, False, False)
    try:
        service = descriptor_pool.Default().FindServiceByName(service_name)
        method = service.methods_by_name[method_name]
    except KeyError:
        return MethodInfo(full_method, service_name, method_name, None, False, None, False, False)
    return MethodInfo(
        full_method=full_method,
        service=service_name,
        method=method_name,
        access=_access_of(method),
        idempotent=_idempotent(method),
        request_type=message_factory.GetMessageClass(method.input_type),
        server_streaming=method.server_streaming,
        client_streaming=method.client_streaming,
    )


def service_account(spiffe_id: str) -> str | None:
    """`spiffe://td/ns/<ns>/sa/<name>` → `<name>`."""
    parts = spiffe_id.split("/")
    if len(parts) >= 2 and parts[-2] == "sa":
        return parts[-1]
    return None


def is_trusted_service(caller: Caller, proxies: frozenset[str] = PROXY_SERVICE_ACCOUNTS) -> bool:
    return caller.spiffe_id is not None and service_account(caller.spiffe_id) not in proxies


def check_access(
    rule: AccessRule | None,
    caller: Caller,
    *,
    full_method: str = "",
    proxies: frozenset[str] = PROXY_SERVICE_ACCOUNTS,
) -> None:
    """Raise `PermissionDenied` / `Unauthenticated` unless `caller` may call under `rule`."""
    if rule is None or not rule.is_valid:
        raise PermissionDenied(
            f"method {full_method or '?'} declares no valid access rule", reason="NO_ACCESS_RULE"
        )
    if rule.public:
        return
    trusted_service = is_trusted_service(caller, proxies)
    if rule.internal:
        if trusted_service:
            return
        if not caller.is_authenticated:
            raise Unauthenticated("this method needs credentials", reason="CREDENTIALS_REQUIRED")
        raise PermissionDenied(
            "only platform services may call this method", reason="INTERNAL_ONLY"
        )
    if trusted_service:
        return
    if caller.subject is None:
        raise Unauthenticated("this method needs credentials", reason="CREDENTIALS_REQUIRED")
    if rule.permission not in caller.permissions:
        raise PermissionDenied(
            f"missing permission {rule.permission}",
            reason="MISSING_PERMISSION",
            metadata={"permission": rule.permission or ""},
        )


__all__ = [
    "INFRASTRUCTURE_SERVICES",
    "PROXY_SERVICE_ACCOUNTS",
    "PUBLIC",
    "AccessRule",
    "MethodInfo",
    "check_access",
    "is_trusted_service",
    "method_info",
    "service_account",
    "split_method",
]
