# mypy: disable-error-code="import-untyped"
"""Through gRPC: the inbox (list, unread count, mark read, live subscription), templates
(versions, sandbox, preview), sends (idempotent, scheduled, bulk to a cohort with pacing),
unsubscribe links, admin history, and the errors bad input gets."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import itertools
import re
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from suuupra.courses.v1 import courses_events_pb2 as courses
from suuupra.courses.v1 import enrollment_enums_pb2 as enrollment
from suuupra.notes.v1 import notes_events_pb2 as notes
from suuupra.notifications.v1 import notification_pb2 as res
from suuupra.notifications.v1 import notifications_service_pb2 as pb

from services.notifications.tests.harness import FakeClock, Harness, notifications_harness
from suuupra_runtime.testing.rpc_errors import error_reason, field_violations, rid

IN_APP = res.CHANNEL_IN_APP
EMAIL = res.CHANNEL_EMAIL


@pytest.fixture
async def h(postgres_server_url: str, fresh_nats_url: str) -> AsyncIterator[Harness]:
    async with notifications_harness(postgres_server_url, fresh_nats_url) as harness:
        yield harness


def _admin(h: Harness) -> tuple[tuple[str, str], ...]:
    return h.auth(str(uuid.uuid4()), "tenant_admin")


async def _send(
    h: Harness,
    users: list[str],
    title: str,
    channels: list[res.Channel.ValueType] | None = None,
) -> pb.SendNotificationResponse:
    reply: pb.SendNotificationResponse = await h.sends.SendNotification(
        pb.SendNotificationRequest(
            request_id=rid(), user_ids=users, title=title, message="m", channels=channels or []
        ),
        metadata=h.auth(str(uuid.uuid4()), "instructor"),
    )
    return reply


async def test_inbox_lists_counts_marks_read_and_streams_live(h: Harness) -> None:
    user = await h.user()
    me = h.auth(user)
    stream = h.inbox.SubscribeInbox(pb.SubscribeInboxRequest(), metadata=me)
    first = await asyncio.wait_for(stream.read(), 5)
    assert not first.HasField("notification") and first.unread_count == 0

    await h.publish(
        notes.NoteShared(
            tenant_id=h.tenant_id,
            note_id="n-7",
            share_id="s-1",
            owner_id=str(uuid.uuid4()),
            title="Lecture 7",
            recipient_ids=[user],
        )
    )
    live = await asyncio.wait_for(stream.read(), 10)
    assert live.notification.kind == "notes.shared"
    assert live.notification.body == "Lecture 7 is shared with you."
    assert live.notification.data["note_id"] == "n-7"
    assert live.unread_count == 1
    await _send(h, [user], "Second")
    assert (await asyncio.wait_for(stream.read(), 10)).unread_count == 2
    stream.cancel()

    listed = await h.inbox.ListNotifications(pb.ListNotificationsRequest(page_size=1), metadata=me)
    assert [n.title for n in listed.notifications] == ["Second"]  # newest first
    rest = await h.inbox.ListNotifications(
        pb.ListNotificationsRequest(page_size=1, page_token=listed.next_page_token), metadata=me
    )
    assert [n.notification_id for n in rest.notifications] == [live.notification.notification_id]

    marked = await h.inbox.MarkRead(
        pb.MarkReadRequest(notification_ids=[live.notification.notification_id]), metadata=me
    )
    assert (marked.marked_count, marked.unread_count) == (1, 1)
    again = await h.inbox.MarkRead(
        pb.MarkReadRequest(notification_ids=[live.notification.notification_id]), metadata=me
    )
    assert (again.marked_count, again.unread_count) == (0, 1)  # repeating changes nothing
    unread = await h.inbox.ListNotifications(
        pb.ListNotificationsRequest(unread_only=True), metadata=me
    )
    assert [n.title for n in unread.notifications] == ["Second"]
    await h.inbox.MarkRead(pb.MarkReadRequest(all=True), metadata=me)
    count = await h.inbox.GetUnreadCount(pb.GetUnreadCountRequest(), metadata=me)
    assert count.unread_count == 0

    # Someone else's inbox is invisible, and so is another tenant's.
    other = await h.inbox.ListNotifications(
        pb.ListNotificationsRequest(), metadata=h.auth(str(uuid.uuid4()))
    )
    assert list(other.notifications) == []
    foreign = h.issuer.token(
        user, str(uuid.uuid4()), roles=["student"], perms=["notifications.inbox.read"]
    )
    other_tenant = await h.inbox.ListNotifications(
        pb.ListNotificationsRequest(), metadata=(("authorization", f"Bearer {foreign}"),)
    )
    assert list(other_tenant.notifications) == []


async def test_bad_input_is_refused_with_field_violations_and_changes_nothing(h: Harness) -> None:
    user = await h.user()
    me = h.auth(user)
    cases = [
        (h.inbox.ListNotifications(pb.ListNotificationsRequest(page_token="garbage!"), metadata=me),
         ["page_token"]),
        (h.inbox.MarkRead(pb.MarkReadRequest(notification_ids=["not-a-uuid"]), metadata=me),
         ["notification_ids[0]"]),
        (h.inbox.MarkRead(pb.MarkReadRequest(), metadata=me), ["notification_ids"]),
        (h.preferences.UpdatePreferences(
            pb.UpdatePreferencesRequest(
                request_id=rid(),
                preferences=res.Preferences(time_zone="Mars/Olympus"),
                fields=["time_zone"],
            ), metadata=me), ["preferences.time_zone"]),
        (h.preferences.UpdatePreferences(
            pb.UpdatePreferencesRequest(
                request_id=rid(),
                preferences=res.Preferences(quiet_hours_start="25:00", quiet_hours_end="07:00"),
                fields=["quiet_hours"],
            ), metadata=me), ["preferences.quiet_hours_start"]),
        (h.preferences.UpdatePreferences(
            pb.UpdatePreferencesRequest(
                request_id=rid(), preferences=res.Preferences(), fields=["colour"]
            ), metadata=me), ["fields[0]"]),
        (h.sends.SendNotification(
            pb.SendNotificationRequest(request_id=rid(), user_ids=[], title="t", message="m"),
            metadata=_admin(h)), ["user_ids"]),
    ]  # fmt: skip
    for call, fields in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, fields
        assert field_violations(err.value) == fields
    past = Timestamp()
    past.FromDatetime(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.sends.SendNotification(
            pb.SendNotificationRequest(
                request_id=rid(), user_ids=[user], title="t", message="m", schedule_time=past
            ),
            metadata=_admin(h),
        )
    assert field_violations(err.value) == ["schedule_time"]
    assert await h.count("SELECT count(*) FROM deliveries") == 0
    assert await h.count("SELECT count(*) FROM preferences") == 0

    # Students may not send, read the history or edit templates; no token at all is refused.
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await h.sends.ListDeliveries(pb.ListDeliveriesRequest(), metadata=me)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await h.sends.SendNotification(
            pb.SendNotificationRequest(request_id=rid(), user_ids=[user], title="t", message="m"),
            metadata=me,
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await h.inbox.GetUnreadCount(pb.GetUnreadCountRequest())
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_retried_send_duplicates_nothing(h: Harness) -> None:
    user = await h.user()
    request = pb.SendNotificationRequest(
        request_id=rid(), user_ids=[user], title="Once", message="only once", channels=[IN_APP]
    )
    sender = h.auth(str(uuid.uuid4()), "instructor")
    first = await h.sends.SendNotification(request, metadata=sender)
    second = await h.sends.SendNotification(request, metadata=sender)
    assert first == second and first.delivery_count == 1
    assert await h.count("SELECT count(*) FROM notifications") == 1
    changed = pb.SendNotificationRequest()
    changed.CopyFrom(request)
    changed.title = "Twice?"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.sends.SendNotification(changed, metadata=sender)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(err.value) == "REQUEST_ID_REUSED"


async def test_templates_are_versioned_sandboxed_previewed_and_used(h: Harness) -> None:
    admin = _admin(h)
    body = "Hi {{ display_name }}: {{ message | upper }}"
    created = await h.templates.CreateTemplateVersion(
        pb.CreateTemplateVersionRequest(
            request_id=rid(),
            kind="announcement",
            channel=IN_APP,
            locale="en",
            subject="[Notice] {{ title }}",
            body=body,
        ),
        metadata=admin,
    )
    assert created.template.version == 1
    second = await h.templates.CreateTemplateVersion(
        pb.CreateTemplateVersionRequest(
            request_id=rid(), kind="announcement", channel=IN_APP, locale="en",
            subject="[Notice v2] {{ title }}", body=body,
        ),
        metadata=admin,
    )  # fmt: skip
    assert second.template.version == 2

    preview = await h.templates.PreviewTemplate(
        pb.PreviewTemplateRequest(
            kind="announcement", channel=IN_APP, locale="en", data={"message": "exam moved"}
        ),
        metadata=admin,
    )
    assert (preview.subject, preview.version) == ("[Notice v2] Campus closed Friday", 2)
    assert preview.body == "Hi Sample User: EXAM MOVED"
    listed = await h.templates.ListTemplates(
        pb.ListTemplatesRequest(kind="announcement"), metadata=admin
    )
    in_app = [t for t in listed.templates if t.channel == IN_APP]
    assert [t.version for t in in_app] == [2]  # the tenant's newest replaces the default
    assert any(t.version == 0 for t in listed.templates)  # other channels: built-in

    user = await h.user(display_name="Ravi")
    await _send(h, [user], "Exam", [IN_APP])
    (note,) = (
        await h.inbox.ListNotifications(pb.ListNotificationsRequest(), metadata=h.auth(user))
    ).notifications
    assert (note.title, note.body) == ("[Notice v2] Exam", "Hi Ravi: M")

    # Template text cannot reach Python internals, and broken text is refused before saving.
    for bad_body, reason in [
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "not allowed"),
        ("{% for x in %}", "does not compile"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.templates.CreateTemplateVersion(
                pb.CreateTemplateVersionRequest(
                    request_id=rid(), kind="announcement", channel=IN_APP, locale="en",
                    subject="s", body=bad_body,
                ),
                metadata=admin,
            )  # fmt: skip
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(err.value) == ["body"]
        assert reason in (err.value.details() or "") or error_reason(err.value)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.templates.PreviewTemplate(
            pb.PreviewTemplateRequest(
                kind="announcement", channel=IN_APP, body="{{ cycler.__init__.__globals__ }}"
            ),
            metadata=admin,
        )
    assert field_violations(err.value) == ["body"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.templates.PreviewTemplate(
            pb.PreviewTemplateRequest(kind="no.such.kind", channel=IN_APP), metadata=admin
        )
    assert field_violations(err.value) == ["kind"]
    assert await h.count("SELECT count(*) FROM templates") == 2


async def test_unsubscribe_link_turns_off_that_category_by_email(h: Harness) -> None:
    email = "unsub@example.test"
    user = await h.user(email)
    await _send(h, [user], "Newsletter", [EMAIL])
    (body,) = await h.mails_to(email, 1)
    mail = h.sink.to(email)[0]
    header = str(mail["List-Unsubscribe"])
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = re.search(r"Unsubscribe: (\S+)", body)
    assert url and f"<{url.group(1)}>" == header
    path = url.group(1).split("/", 3)[3]

    host, port = h.service.http_address.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)

    def call(method: str, target: str, body: bytes = b"") -> tuple[int, str]:
        connection.request(method, target, body=body, headers={"content-length": str(len(body))})
        response = connection.getresponse()
        text = response.read().decode()
        connection.close()
        return response.status, text

    status, page = await asyncio.to_thread(call, "GET", "/" + path)
    assert status == 200 and "<form method='post'" in page  # GET changes nothing
    assert await h.count("SELECT count(*) FROM preferences") == 0
    tampered = "/" + path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
    status, _ = await asyncio.to_thread(call, "POST", tampered, b"List-Unsubscribe=One-Click")
    assert status == 400
    status, page = await asyncio.to_thread(call, "POST", "/" + path, b"List-Unsubscribe=One-Click")
    assert status == 200 and "announcements" in page

    await _send(h, [user], "Second newsletter", [EMAIL, IN_APP])
    suppressed = await h.delivery(user, EMAIL, kind="announcement")
    deliveries = [d for d in await h.deliveries(user) if d.channel == EMAIL]
    assert sorted(d.status for d in deliveries) == [
        res.DELIVERY_STATUS_SENT,
        res.DELIVERY_STATUS_SUPPRESSED,
    ]
    assert suppressed is not None
    assert len(h.sink.to(email)) == 1


async def test_bulk_send_reaches_the_cohort_paced_and_history_pages(h: Harness) -> None:
    batch = "batch-2026"
    members = [await h.user() for _ in range(4)]
    for i, member in enumerate(members):
        await h.publish(
            courses.EnrollmentCreated(
                tenant_id=h.tenant_id,
                enrollment_id=f"e-{i}",
                course_id="c-1",
                batch_id=batch,
                user_id=member,
                role=enrollment.ENROLLMENT_ROLE_STUDENT,
                status=enrollment.ENROLLMENT_STATUS_ACTIVE,
            )
        )
    # The last member drops out before the announcement.
    await h.publish(
        courses.EnrollmentDropped(
            tenant_id=h.tenant_id, enrollment_id="e-3", course_id="c-1", batch_id=batch,
            user_id=members[3], role=enrollment.ENROLLMENT_ROLE_STUDENT,
        )
    )  # fmt: skip

    async def cohort() -> bool:
        active = await h.count("SELECT count(*) FROM memberships WHERE active")
        return active == 3 and await h.count("SELECT count(*) FROM memberships") == 4

    await h.until(cohort, what="the cohort projection")
    # Enrollment itself notified each member (in-app and email).
    reply = await h.sends.BulkSend(
        pb.BulkSendRequest(
            request_id=rid(), batch_id=batch, title="Lab moved", message="Room 4",
            channels=[IN_APP], rate_per_second=10,
        ),
        metadata=h.auth(str(uuid.uuid4()), "instructor"),
    )  # fmt: skip
    assert (reply.recipient_count, reply.delivery_count) == (3, 3)
    bulk = await h.count(
        "SELECT count(*) FROM deliveries WHERE source = $1", f"bulk:{reply.send_id}"
    )
    assert bulk == 3
    due = [
        r["due_at"]
        for r in await h.wiring.database.fetch(
            "SELECT due_at FROM deliveries WHERE source = $1 ORDER BY due_at",
            f"bulk:{reply.send_id}",
        )
    ]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(due)]
    assert gaps == pytest.approx([0.1, 0.1])  # 10 per second

    async def all_delivered() -> bool:
        return (
            await h.count(
                "SELECT count(*) FROM deliveries WHERE source = $1 AND status = 2",
                f"bulk:{reply.send_id}",
            )
            == 3
        )

    await h.until(all_delivered, what="the paced bulk deliveries")
    assert await h.count("SELECT count(*) FROM notifications WHERE kind = 'announcement'") == 3

    admin = _admin(h)
    page = await h.sends.ListDeliveries(
        pb.ListDeliveriesRequest(page_size=2, kind="announcement"), metadata=admin
    )
    nxt = await h.sends.ListDeliveries(
        pb.ListDeliveriesRequest(page_size=2, kind="announcement", page_token=page.next_page_token),
        metadata=admin,
    )
    ids = [d.delivery_id for d in [*page.deliveries, *nxt.deliveries]]
    assert len(ids) == 3 and len(set(ids)) == 3 and not nxt.next_page_token
    sent = await h.sends.ListDeliveries(
        pb.ListDeliveriesRequest(status=res.DELIVERY_STATUS_SENT, channel=EMAIL), metadata=admin
    )
    assert {d.kind for d in sent.deliveries} <= {"courses.enrolled"}


async def test_scheduled_send_waits_for_its_time(
    postgres_server_url: str, fresh_nats_url: str
) -> None:
    clock = FakeClock()
    async with notifications_harness(postgres_server_url, fresh_nats_url, clock=clock) as h:
        user = await h.user()
        when = Timestamp()
        when.FromDatetime(clock.now + dt.timedelta(hours=2))
        await h.sends.SendNotification(
            pb.SendNotificationRequest(
                request_id=rid(), user_ids=[user], title="Later", message="m",
                channels=[IN_APP], schedule_time=when,
            ),
            metadata=_admin(h),
        )  # fmt: skip
        queued = await h.delivery(user, IN_APP, final=False)
        assert queued.status == res.DELIVERY_STATUS_QUEUED
        assert queued.due_time == when
        assert await h.wiring.worker.run_once() == 0
        clock.advance(dt.timedelta(hours=2, seconds=1))
        h.wiring.worker.wake()
        delivered = await h.delivery(user, IN_APP)
        assert delivered.status == res.DELIVERY_STATUS_SENT
        assert await h.count("SELECT count(*) FROM notifications") == 1
