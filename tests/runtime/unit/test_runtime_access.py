"""Access rules from the contract: public, internal, permission, missing (fail closed)."""

from __future__ import annotations

import pytest

from suuupra_runtime.access import AccessRule, check_access, method_info
from suuupra_runtime.auth import ANONYMOUS, Caller
from suuupra_runtime.errors import PermissionDenied, Unauthenticated

SERVICE_PEER = "spiffe://suuupra.local/ns/suuupra/sa/courses"
EDGE_PEER = "spiffe://suuupra.local/ns/suuupra/sa/edge"
USER = Caller(subject="u1", tenant_id="t1", permissions=frozenset({"testing.echo.call"}))
USER_WITHOUT = Caller(subject="u2", tenant_id="t1", permissions=frozenset({"other.perm"}))


def test_rules_are_read_from_the_echo_contract() -> None:
    echo = method_info("/suuupra.testing.v1.EchoService/Echo")
    assert echo.access == AccessRule(public=True)
    protected = method_info("/suuupra.testing.v1.EchoService/ProtectedEcho")
    assert protected.access == AccessRule(permission="testing.echo.call")
    assert protected.idempotent is False
    assert method_info("/suuupra.testing.v1.EchoService/CreateNote").idempotent is True
    assert method_info("/suuupra.testing.v1.EchoService/StreamEcho").server_streaming is True


def test_unknown_method_has_no_rule_and_is_refused() -> None:
    info = method_info("/suuupra.testing.v1.EchoService/DoesNotExist")
    assert info.access is None
    with pytest.raises(PermissionDenied) as err:
        check_access(info.access, USER, full_method=info.full_method)
    assert err.value.reason == "NO_ACCESS_RULE"


def test_empty_or_contradictory_rule_is_refused() -> None:
    for rule in (AccessRule(), AccessRule(public=True, internal=True)):
        with pytest.raises(PermissionDenied):
            check_access(rule, Caller(spiffe_id=SERVICE_PEER))


def test_public_needs_nothing() -> None:
    check_access(AccessRule(public=True), ANONYMOUS)


def test_permission_rule() -> None:
    rule = AccessRule(permission="testing.echo.call")
    check_access(rule, USER)
    check_access(rule, Caller(spiffe_id=SERVICE_PEER))
    with pytest.raises(Unauthenticated):
        check_access(rule, ANONYMOUS)
    with pytest.raises(PermissionDenied) as err:
        check_access(rule, USER_WITHOUT)
    assert err.value.reason == "MISSING_PERMISSION"


def test_internal_rule_needs_a_service_peer() -> None:
    rule = AccessRule(internal=True)
    check_access(rule, Caller(spiffe_id=SERVICE_PEER))
    with pytest.raises(PermissionDenied):
        check_access(rule, USER)  # even a user with every permission is refused
    with pytest.raises(Unauthenticated):
        check_access(rule, ANONYMOUS)


def test_edge_proxy_is_not_a_trusted_service() -> None:
    edge_only = Caller(spiffe_id=EDGE_PEER)
    with pytest.raises(PermissionDenied):
        check_access(AccessRule(internal=True), edge_only)
    with pytest.raises(Unauthenticated):
        check_access(AccessRule(permission="testing.echo.call"), edge_only)
    # A user behind the edge is judged by the user's own permissions.
    check_access(
        AccessRule(permission="testing.echo.call"),
        Caller(subject="u1", permissions=frozenset({"testing.echo.call"}), spiffe_id=EDGE_PEER),
    )
