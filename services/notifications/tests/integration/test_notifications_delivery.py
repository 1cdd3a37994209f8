# mypy: disable-error-code="import-untyped"
"""Delivery rules against real PostgreSQL + NATS: preferences (security mail always arrives),
quiet hours defer, transient provider failures are retried until sent, permanent failures and
bounces are recorded with their reason; the real SMS and push HTTP clients talk to local servers
speaking the providers' APIs."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from suuupra.assessment.v1 import assessment_events_pb2 as assessment
from suuupra.identity.v1 import identity_events_pb2 as identity
from suuupra.notifications.v1 import notification_pb2 as res
from suuupra.notifications.v1 import notifications_service_pb2 as pb

from services.identity.keys import Sealer
from services.notifications.domain import Channel
from services.notifications.providers import Provider
from services.notifications.providers.push import FcmPush
from services.notifications.providers.sms import TwilioSms
from services.notifications.tests.fake_providers import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    PUSH_PROJECT,
    PUSH_TOKEN,
    FakeFcm,
    FakeTwilio,
    serving,
)
from services.notifications.tests.harness import (
    DELIVERY_KEY,
    DELIVERY_KEY_ID,
    FakeClock,
    Harness,
    notifications_harness,
)
from suuupra_runtime.testing.rpc_errors import error_reason, field_violations, rid

EMAIL = res.CHANNEL_EMAIL
SMS = res.CHANNEL_SMS
PUSH = res.CHANNEL_PUSH
IN_APP = res.CHANNEL_IN_APP


async def _grade(h: Harness, user_id: str, title: str = "Problem set 1") -> str:
    return await h.publish(
        assessment.GradeReleased(
            tenant_id=h.tenant_id,
            grade_id=str(uuid.uuid4()),
            assignment_id="a-1",
            student_id=user_id,
            assignment_title=title,
            score_centi=850,
            max_points_centi=1000,
        )
    )


async def _inbox(h: Harness, user_id: str, count: int) -> list[res.Notification]:
    async def check() -> list[res.Notification] | None:
        reply = await h.inbox.ListNotifications(
            pb.ListNotificationsRequest(), metadata=h.auth(user_id)
        )
        return list(reply.notifications) if len(reply.notifications) >= count else None

    return await h.until(check, what=f"{count} inbox notification(s)")


async def _set(h: Harness, user_id: str, fields: list[str], **prefs: Any) -> res.Preferences:
    reply = await h.preferences.UpdatePreferences(
        pb.UpdatePreferencesRequest(
            request_id=rid(), preferences=res.Preferences(**prefs), fields=fields
        ),
        metadata=h.auth(user_id),
    )
    preferences: res.Preferences = reply.preferences
    return preferences


# --- preferences and quiet hours ---------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    # 17:00 UTC = 22:30 in Asia/Kolkata (UTC+5:30).
    return FakeClock(dt.datetime(2026, 12, 6, 17, 0, tzinfo=dt.UTC))


@pytest.fixture
async def h(
    postgres_server_url: str, fresh_nats_url: str, clock: FakeClock
) -> AsyncIterator[Harness]:
    async with notifications_harness(postgres_server_url, fresh_nats_url, clock=clock) as harness:
        yield harness


async def test_a_category_turned_off_gets_nothing_there_but_security_mail_still_arrives(
    h: Harness,
) -> None:
    email = "grace@example.test"
    user = await h.user(email, "Grace")
    prefs = await _set(
        h,
        user,
        ["channels"],
        channels=[
            res.ChannelPreference(category=res.CATEGORY_GRADES, channel=EMAIL, enabled=False)
        ],
    )
    grades_email = [
        p for p in prefs.channels if (p.category, p.channel) == (res.CATEGORY_GRADES, EMAIL)
    ]
    assert [p.enabled for p in grades_email] == [False]

    await _grade(h, user)
    (note,) = await _inbox(h, user, 1)  # in-app is still on
    assert note.title == "Graded: Problem set 1"
    assert note.body == "You scored 8.5 / 10 on Problem set 1."
    suppressed = await h.delivery(user, EMAIL)
    assert suppressed.status == res.DELIVERY_STATUS_SUPPRESSED
    assert suppressed.error == "preference_off"

    # Security notifications cannot be turned off ...
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _set(
            h,
            user,
            ["channels"],
            channels=[
                res.ChannelPreference(category=res.CATEGORY_SECURITY, channel=EMAIL, enabled=False)
            ],
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(refused.value) == ["preferences.channels[0]"]
    assert error_reason(refused.value) == "CATEGORY_NOT_DISABLEABLE"

    # ... so with everything else off, a password reset mail still arrives.
    await _set(
        h,
        user,
        ["channels"],
        channels=[
            res.ChannelPreference(category=res.Category.ValueType(c), channel=EMAIL, enabled=False)
            for c in range(2, 7)  # every category but security
        ],
    )
    sealer = Sealer(DELIVERY_KEY_ID, DELIVERY_KEY)
    await h.publish(
        identity.PasswordResetRequested(
            tenant_id=h.tenant_id,
            user_id=user,
            email=email,
            display_name="Grace",
            token=identity.SealedToken(
                key_id=DELIVERY_KEY_ID,
                ciphertext=sealer.seal(b"reset-token-of-grace-0123456789", user.encode()),
            ),
        )
    )
    (body,) = await h.mails_to(email, 1)
    assert "reset-token-of-grace-0123456789" in body
    # The grade mail never went out: the only mail is the reset.
    assert len(h.sink.to(email)) == 1


async def test_quiet_hours_defer_interrupting_channels_until_they_end(
    h: Harness, clock: FakeClock
) -> None:
    email = "night@example.test"
    user = await h.user(email, "Night Owl")
    await _set(
        h,
        user,
        ["time_zone", "quiet_hours"],
        time_zone="Asia/Kolkata",
        quiet_hours_start="22:00",
        quiet_hours_end="07:00",
    )
    await _grade(h, user, "Late quiz")

    # In-app lands at once; the email waits for 07:00 in Kolkata (01:30 UTC next day).
    await _inbox(h, user, 1)
    queued = await h.delivery(user, EMAIL, final=False)
    assert queued.status == res.DELIVERY_STATUS_QUEUED
    assert queued.due_time.ToDatetime(tzinfo=dt.UTC) == dt.datetime(
        2026, 12, 7, 1, 30, tzinfo=dt.UTC
    )
    assert await h.wiring.worker.run_once() == 0
    assert h.sink.to(email) == []

    clock.advance(dt.timedelta(hours=8, minutes=31))  # 01:31 UTC = 07:01 IST
    h.wiring.worker.wake()
    (body,) = await h.mails_to(email, 1)
    assert "Late quiz" in body
    sent = await h.delivery(user, EMAIL)
    assert sent.status == res.DELIVERY_STATUS_SENT


async def test_email_transient_failure_is_retried_and_bounce_is_recorded(
    apis: tuple[Harness, FakeTwilio, FakeFcm],
) -> None:
    h = apis[0]  # real clock: retries fall due
    flaky = "flaky@example.test"
    gone = "gone@example.test"
    flaky_user = await h.user(flaky)
    gone_user = await h.user(gone)
    h.sink.script(flaky, "451 4.3.0 mailbox busy, try later")
    h.sink.script(gone, "550 5.1.1 no such user")
    await _grade(h, flaky_user)
    await _grade(h, gone_user)

    await h.mails_to(flaky, 1)
    sent = await h.delivery(flaky_user, EMAIL)
    assert sent.status == res.DELIVERY_STATUS_SENT
    assert sent.attempts == 2
    bounced = await h.delivery(gone_user, EMAIL)
    assert bounced.status == res.DELIVERY_STATUS_BOUNCED
    assert "550" in bounced.error
    assert bounced.attempts == 1
    assert h.sink.to(gone) == []


# --- SMS and push through real HTTP clients ------------------------------------------------------


@pytest.fixture
async def apis(
    postgres_server_url: str, fresh_nats_url: str
) -> AsyncIterator[tuple[Harness, FakeTwilio, FakeFcm]]:
    async with (
        serving(FakeTwilio(), "/2010-04-01/") as twilio,
        serving(FakeFcm(), "/v1/") as fcm,
    ):
        assert isinstance(twilio, FakeTwilio) and isinstance(fcm, FakeFcm)
        providers: dict[Channel, Provider] = {
            Channel.SMS: TwilioSms(twilio.url, ACCOUNT_SID, AUTH_TOKEN, "+15550001111"),
            Channel.PUSH: FcmPush(fcm.url, PUSH_PROJECT, PUSH_TOKEN),
        }
        async with notifications_harness(
            postgres_server_url, fresh_nats_url, providers=providers
        ) as harness:
            yield harness, twilio, fcm


async def _phone_user(h: Harness, phone: str) -> str:
    user = await h.user()
    await _set(
        h,
        user,
        ["phone_number", "push_tokens", "channels"],
        phone_number=phone,
        push_tokens=[f"device-{phone[-4:]}"],
        channels=[
            res.ChannelPreference(category=res.CATEGORY_ANNOUNCEMENTS, channel=SMS, enabled=True)
        ],
    )
    return user


async def _announce(h: Harness, user_ids: list[str], channels: list[res.Channel.ValueType]) -> None:
    await h.sends.SendNotification(
        pb.SendNotificationRequest(
            request_id=rid(),
            user_ids=user_ids,
            title="Campus closed",
            message="Classes move online on Friday.",
            channels=channels,
        ),
        metadata=h.auth(str(uuid.uuid4()), "instructor"),
    )


async def test_sms_and_push_transient_failures_are_retried_until_sent(
    apis: tuple[Harness, FakeTwilio, FakeFcm],
) -> None:
    h, twilio, fcm = apis
    user = await _phone_user(h, "+919812345678")
    twilio.fail_next(503, {"code": 20503, "message": "Service unavailable"})
    fcm.fail_next(429, {"error": {"status": "RESOURCE_EXHAUSTED"}}, times=2)
    await _announce(h, [user], [SMS, PUSH])

    sms = await h.delivery(user, SMS)
    push = await h.delivery(user, PUSH)
    assert (sms.status, sms.attempts) == (res.DELIVERY_STATUS_SENT, 2)
    assert (push.status, push.attempts) == (res.DELIVERY_STATUS_SENT, 3)
    assert sms.address.endswith("5678") and "9812" not in sms.address  # masked in history
    assert twilio.requests[-1] == {
        "To": "+919812345678",
        "From": "+15550001111",
        "Body": "Campus closed: Classes move online on Friday.",
    }
    message = fcm.requests[-1]["message"]
    assert isinstance(message, dict)
    assert message["token"] == "device-5678"
    assert message["notification"] == {
        "title": "Campus closed",
        "body": "Classes move online on Friday.",
    }


async def test_permanent_provider_failures_are_recorded_with_their_reason(
    apis: tuple[Harness, FakeTwilio, FakeFcm],
) -> None:
    h, twilio, fcm = apis
    user = await _phone_user(h, "+919800000001")
    twilio.fail_next(400, {"code": 21211, "message": "The 'To' number is not a valid phone number"})
    fcm.fail_next(
        404, {"error": {"status": "NOT_FOUND", "details": [{"errorCode": "UNREGISTERED"}]}}
    )
    await _announce(h, [user], [SMS, PUSH])

    sms = await h.delivery(user, SMS)
    push = await h.delivery(user, PUSH)
    assert sms.status == res.DELIVERY_STATUS_BOUNCED
    assert "21211" in sms.error and sms.attempts == 1
    assert push.status == res.DELIVERY_STATUS_BOUNCED
    assert "UNREGISTERED" in push.error and push.attempts == 1
    assert len(twilio.requests) == 1 and len(fcm.requests) == 1  # never retried

    # A provider that keeps failing transiently is given up on after max_attempts (3 here).
    other = await _phone_user(h, "+919800000002")
    twilio.fail_next(500, times=5)
    await _announce(h, [other], [SMS])
    failed = await h.delivery(other, SMS)
    assert failed.status == res.DELIVERY_STATUS_FAILED
    assert failed.attempts == 3
    assert failed.error.startswith("gave up after 3 attempts")
