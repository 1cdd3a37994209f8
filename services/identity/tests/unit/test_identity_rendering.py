"""`GetCurrentUser` reuses the response built from a cached view, and only from that view."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from services.identity import domain
from services.identity.api import _RenderedViews
from services.identity.handlers import UserView
from services.identity.store import UserRow
from suuupra_runtime.updates import etag_of

ROW = UserRow(
    user_id="u-1",
    tenant_id="t-1",
    email="ada@example.test",
    display_name="Ada",
    status=domain.UserStatus.ACTIVE,
    email_verified=True,
    password_hash=None,
    mfa_enabled=False,
    totp_secret=None,
    totp_pending_secret=None,
    totp_last_step=None,
    version=3,
    created_at=datetime(2026, 1, 1, tzinfo=UTC),
    updated_at=datetime(2026, 2, 1, tzinfo=UTC),
)


def test_the_same_view_object_reuses_its_response() -> None:
    rendered, view = _RenderedViews(), UserView(ROW, ("student",))
    first = rendered.response(view)
    assert rendered.response(view) is first
    assert (first.user.display_name, list(first.user.roles)) == ("Ada", ["student"])


def test_a_new_view_is_rendered_afresh_even_when_equal() -> None:
    rendered = _RenderedViews()
    old = rendered.response(UserView(ROW, ("student",)))
    renamed = UserView(dataclasses.replace(ROW, display_name="Ada L.", version=4), ("student",))
    assert rendered.response(renamed).user.display_name == "Ada L."
    again = UserView(ROW, ("student",))  # equal to the first, but another object
    assert rendered.response(again) is not old


def test_memory_stays_bounded() -> None:
    rendered = _RenderedViews(max_entries=2)
    views = [UserView(dataclasses.replace(ROW, version=v), ()) for v in range(5)]
    for view in views:
        rendered.response(view)
    assert len(rendered._by_id) <= 2
    assert rendered.response(views[-1]).user.etag == etag_of(4)
