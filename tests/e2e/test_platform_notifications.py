# mypy: disable-error-code="import-untyped"
"""Notifications on the platform started by `./dev up`: the in-app inbox subscription over
gRPC-Web through the edge, and a password-reset mail landing in the platform's SMTP sink
(Maildir under the state dir) with a token identity accepts."""

from __future__ import annotations

import email
import email.policy
import http.client
import re
import struct
import time
import uuid
from pathlib import Path

import grpc
from suuupra.identity.v1 import identity_service_pb2 as identity_pb
from suuupra.identity.v1 import identity_service_pb2_grpc as identity_grpc
from suuupra.notifications.v1 import notification_pb2 as res
from suuupra.notifications.v1 import notifications_service_pb2 as pb
from suuupra.notifications.v1 import notifications_service_pb2_grpc as rpc

from tests.e2e.platform_process import RunningPlatform
from tools.demo_data import DEMO_ADMIN, DEMO_PASSWORD, DEMO_STUDENTS, DEMO_TENANT_SLUG

SUBSCRIBE = "/suuupra.notifications.v1.InboxService/SubscribeInbox"


def _login(channel: grpc.Channel, account: object) -> str:
    auth = identity_grpc.AuthServiceStub(channel)
    reply = auth.Login(
        identity_pb.LoginRequest(
            tenant_slug=DEMO_TENANT_SLUG,
            email=account.email,  # type: ignore[attr-defined]
            password=account.password,  # type: ignore[attr-defined]
        ),
        timeout=10,
    )
    return str(reply.tokens.access_token)


def _read_frame(response: http.client.HTTPResponse) -> tuple[int, bytes]:
    header = response.read(5)
    assert len(header) == 5, header
    flags, length = struct.unpack(">BI", header)
    # Never read(0): on a chunked body http.client would block until the next chunk arrives.
    return flags, response.read(length) if length else b""


def test_inbox_subscription_streams_over_grpc_web_through_the_edge(
    platform: RunningPlatform,
) -> None:
    with grpc.insecure_channel(platform.edge) as channel:
        student_token = _login(channel, DEMO_STUDENTS[1])
        admin_token = _login(channel, DEMO_ADMIN)
        me = identity_grpc.UserServiceStub(channel).GetCurrentUser(
            identity_pb.GetCurrentUserRequest(),
            metadata=(("authorization", f"Bearer {student_token}"),),
            timeout=10,
        )

        host, port = platform.edge.split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=20)
        try:
            connection.request(
                "POST",
                SUBSCRIBE,
                body=struct.pack(">BI", 0, 0),  # an empty SubscribeInboxRequest
                headers={
                    "content-type": "application/grpc-web+proto",
                    "x-grpc-web": "1",
                    "accept": "application/grpc-web+proto",
                    "authorization": f"Bearer {student_token}",
                },
            )
            response = connection.getresponse()
            assert response.status == 200, response.read()
            flags, payload = _read_frame(response)
            assert flags == 0
            first = pb.SubscribeInboxResponse.FromString(payload)
            assert not first.HasField("notification")  # the stream is live

            title = f"Through the edge {uuid.uuid4().hex[:6]}"
            rpc.SendServiceStub(channel).SendNotification(
                pb.SendNotificationRequest(
                    request_id=str(uuid.uuid4()),
                    user_ids=[me.user.user_id],
                    title=title,
                    message="gRPC-Web works",
                    channels=[res.CHANNEL_IN_APP],
                ),
                metadata=(("authorization", f"Bearer {admin_token}"),),
                timeout=10,
            )
            flags, payload = _read_frame(response)
            assert flags == 0
            pushed = pb.SubscribeInboxResponse.FromString(payload)
            assert pushed.notification.title == title
            assert pushed.notification.body == "gRPC-Web works"
            assert pushed.unread_count >= 1
        finally:
            connection.close()


def _mail_to(maildir: Path, address: str, subject: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in sorted((maildir / "new").glob("*")):
            mail = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if address in str(mail["To"]) and mail["Subject"] == subject:
                return str(mail.get_body(preferencelist=("plain",)).get_content())  # type: ignore[union-attr]
        time.sleep(0.2)
    raise AssertionError(f"no mail {subject!r} to {address} in {maildir}")


def test_password_reset_mail_lands_in_the_platform_sink_with_a_working_token(
    platform: RunningPlatform,
) -> None:
    account = DEMO_STUDENTS[2]
    with grpc.insecure_channel(platform.edge) as channel:
        users = identity_grpc.UserServiceStub(channel)
        users.RequestPasswordReset(
            identity_pb.RequestPasswordResetRequest(
                tenant_slug=DEMO_TENANT_SLUG, email=account.email
            ),
            timeout=10,
        )
        body = _mail_to(platform.state_dir / "mail", account.email, "Reset your password")
        token = re.search(r"code: (\S+)", body)
        assert token, body
        # Set the demo password again: the account stays usable for other journeys.
        users.ResetPassword(
            identity_pb.ResetPasswordRequest(token=token.group(1), new_password=DEMO_PASSWORD),
            timeout=10,
        )
        assert _login(channel, account)


def test_one_click_unsubscribe_from_a_mail_works_through_the_edge(
    platform: RunningPlatform,
) -> None:
    account = DEMO_STUDENTS[0]
    with grpc.insecure_channel(platform.edge) as channel:
        admin = (("authorization", f"Bearer {_login(channel, DEMO_ADMIN)}"),)
        student = (("authorization", f"Bearer {_login(channel, account)}"),)
        me = identity_grpc.UserServiceStub(channel).GetCurrentUser(
            identity_pb.GetCurrentUserRequest(), metadata=student, timeout=10
        )
        title = f"Newsletter {uuid.uuid4().hex[:6]}"
        rpc.SendServiceStub(channel).SendNotification(
            pb.SendNotificationRequest(
                request_id=str(uuid.uuid4()),
                user_ids=[me.user.user_id],
                title=title,
                message="Monthly news",
                channels=[res.CHANNEL_EMAIL],
            ),
            metadata=admin,
            timeout=10,
        )
        body = _mail_to(platform.state_dir / "mail", account.email, title)
        link = re.search(r"Unsubscribe: (\S+)", body)
        assert link, body
        url = link.group(1)
        # The link points at the platform's public address: the edge.
        assert url.startswith(f"http://{platform.edge}/notifications/unsubscribe?token="), url
        host, port = platform.edge.split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=15)
        try:
            one_click = b"List-Unsubscribe=One-Click"
            connection.request(
                "POST",
                url.split(platform.edge, 1)[1],
                body=one_click,
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
            response = connection.getresponse()
            page = response.read().decode()
        finally:
            connection.close()
        assert response.status == 200, page
        prefs = rpc.PreferenceServiceStub(channel).GetPreferences(
            pb.GetPreferencesRequest(), metadata=student, timeout=10
        )
        announcements_email = [
            p.enabled
            for p in prefs.preferences.channels
            if (p.category, p.channel) == (res.CATEGORY_ANNOUNCEMENTS, res.CHANNEL_EMAIL)
        ]
        assert announcements_email == [False]
