# mypy: disable-error-code="import-untyped"
# ruff: noqa: N802 (servicer method names are the RPC names from the contract)
"""gRPC servicers: proto ⇄ handler calls. No business rules live here.

Every RPC acts for the calling user of the caller's tenant (the token's `sub` and `tenant`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from suuupra.notifications.v1 import notification_pb2 as res
from suuupra.notifications.v1 import notifications_service_pb2 as pb
from suuupra.notifications.v1 import notifications_service_pb2_grpc as rpc

from services.notifications.domain import Category, Channel, Status, format_hhmm, mask_address
from services.notifications.handlers import Notifications, PreferencesView, PreferenceUpdate
from services.notifications.live import InboxHub
from services.notifications.store import DeliveryRow, InboxItem, TemplateRow
from suuupra_runtime.auth import current_caller
from suuupra_runtime.db import UnitOfWork
from suuupra_runtime.errors import FieldViolation, InvalidArgument, Unauthenticated
from suuupra_runtime.idempotency import run_idempotent
from suuupra_runtime.timestamps import optional_timestamp_pb, set_timestamp

R = TypeVar("R", bound=Message)
Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]
PACKAGE = "suuupra.notifications.v1"


def _user() -> tuple[str, str]:
    caller = current_caller()
    if not caller.subject or not caller.tenant_id:
        raise Unauthenticated("a user's access token is required", reason="USER_REQUIRED")
    return caller.tenant_id, caller.subject


def _time(value: Timestamp, has: bool) -> dt.datetime | None:
    return value.ToDatetime(tzinfo=dt.UTC) if has else None


def _channels(values: Any) -> list[Channel]:
    return [Channel(int(v)) for v in values]


def notification_pb(item: InboxItem) -> res.Notification:
    out = res.Notification()
    fill_notification(out, item)
    return out


def fill_notification(out: res.Notification, item: InboxItem) -> None:
    """Sets the fields of `out` (a new message, or a response's field) in place: this runs once
    per live push, the hot end of the event path, where building a Notification and copying it
    into the response cost ~40% more (a message merge, and the map's Python-level `update`)."""
    out.notification_id = item.notification_id
    out.user_id = item.user_id
    out.kind = item.kind
    out.category = res.Category.ValueType(int(item.category))
    out.title = item.title
    out.body = item.body
    set_timestamp(out.create_time, item.created_at)
    data = out.data
    for key, value in item.data.items():
        data[key] = value
    if item.read_at is not None:
        set_timestamp(out.read_time, item.read_at)


def delivery_pb(row: DeliveryRow) -> res.Delivery:
    return res.Delivery(
        delivery_id=row.delivery_id,
        user_id=row.user_id,
        kind=row.kind,
        category=res.Category.ValueType(int(row.category)),
        channel=res.Channel.ValueType(int(row.channel)),
        status=res.DeliveryStatus.ValueType(int(row.status)),
        attempts=row.attempts,
        error=row.error,
        address=mask_address(row.channel, row.address),
        source=row.source,
        create_time=optional_timestamp_pb(row.created_at),
        due_time=optional_timestamp_pb(row.due_at),
        sent_time=optional_timestamp_pb(row.sent_at),
        template_version=row.template_version,
    )


def template_pb(row: TemplateRow) -> res.Template:
    return res.Template(
        kind=row.kind,
        channel=res.Channel.ValueType(int(row.channel)),
        locale=row.locale,
        version=row.version,
        subject=row.subject,
        body=row.body,
        create_time=optional_timestamp_pb(row.created_at),
        created_by=row.created_by,
    )


def preferences_pb(view: PreferencesView) -> res.Preferences:
    r = view.recipient
    quiet = r.quiet_hours
    return res.Preferences(
        channels=[
            res.ChannelPreference(
                category=res.Category.ValueType(int(category)),
                channel=res.Channel.ValueType(int(channel)),
                enabled=enabled,
            )
            for (category, channel), enabled in sorted(view.channels.items())
        ],
        time_zone=r.time_zone,
        quiet_hours_start=format_hhmm(quiet.start_minute) if quiet else "",
        quiet_hours_end=format_hhmm(quiet.end_minute) if quiet else "",
        locale=r.locale,
        phone_number=r.phone_number,
        push_tokens=list(r.push_tokens),
    )


class _Base:
    def __init__(self, notifications: Notifications) -> None:
        self.n = notifications

    async def _idempotent(
        self,
        *,
        service: str,
        method: str,
        request: Message,
        response_type: type[R],
        tenant_id: str,
        work: Callable[[UnitOfWork], Awaitable[R]],
    ) -> R:
        return await run_idempotent(
            self.n.db,
            tenant_id=tenant_id,
            method=f"/{PACKAGE}.{service}/{method}",
            request=request,
            response_type=response_type,
            work=work,
        )


class InboxServicer(_Base, rpc.InboxServiceServicer):
    def __init__(
        self, notifications: Notifications, hub: InboxHub, keepalive_seconds: float
    ) -> None:
        super().__init__(notifications)
        self.hub = hub
        self.keepalive_seconds = keepalive_seconds

    async def ListNotifications(
        self, request: pb.ListNotificationsRequest, context: Ctx
    ) -> pb.ListNotificationsResponse:
        tenant_id, user_id = _user()
        items, token = await self.n.list_inbox(
            tenant_id,
            user_id,
            page_size=request.page_size,
            page_token=request.page_token,
            unread_only=request.unread_only,
        )
        return pb.ListNotificationsResponse(
            notifications=[notification_pb(i) for i in items], next_page_token=token
        )

    async def GetUnreadCount(
        self, request: pb.GetUnreadCountRequest, context: Ctx
    ) -> pb.GetUnreadCountResponse:
        tenant_id, user_id = _user()
        return pb.GetUnreadCountResponse(unread_count=await self.n.unread_count(tenant_id, user_id))

    async def MarkRead(self, request: pb.MarkReadRequest, context: Ctx) -> pb.MarkReadResponse:
        tenant_id, user_id = _user()
        marked, unread = await self.n.mark_read(
            tenant_id, user_id, list(request.notification_ids), request.all
        )
        return pb.MarkReadResponse(marked_count=marked, unread_count=unread)

    async def SubscribeInbox(
        self, request: pb.SubscribeInboxRequest, context: Ctx
    ) -> AsyncIterator[pb.SubscribeInboxResponse]:
        tenant_id, user_id = _user()
        # Subscribe before reading the count, so nothing stored in between is missed.
        with self.hub.subscribe(tenant_id, user_id) as queue:
            unread = await self.n.unread_count(tenant_id, user_id)
            yield pb.SubscribeInboxResponse(unread_count=unread)
            while True:
                try:
                    # wait_for costs a task per call: skip it when an item is already queued.
                    item = (
                        queue.get_nowait()
                        if not queue.empty()
                        else (await asyncio.wait_for(queue.get(), self.keepalive_seconds))
                    )
                except TimeoutError:
                    # Keep-alive: proxies close streams idle for longer than their timeout.
                    unread = await self.n.unread_count(tenant_id, user_id)
                    yield pb.SubscribeInboxResponse(unread_count=unread)
                    continue
                response = pb.SubscribeInboxResponse(unread_count=item.unread_count)
                fill_notification(response.notification, item)
                yield response


class PreferenceServicer(_Base, rpc.PreferenceServiceServicer):
    async def GetPreferences(
        self, request: pb.GetPreferencesRequest, context: Ctx
    ) -> pb.GetPreferencesResponse:
        tenant_id, user_id = _user()
        view = await self.n.preferences(tenant_id, user_id)
        return pb.GetPreferencesResponse(preferences=preferences_pb(view))

    async def UpdatePreferences(
        self, request: pb.UpdatePreferencesRequest, context: Ctx
    ) -> pb.UpdatePreferencesResponse:
        tenant_id, user_id = _user()
        p = request.preferences
        update = PreferenceUpdate(
            fields=frozenset(request.fields),
            channels=[
                (
                    _category(c.category, f"preferences.channels[{i}].category"),
                    _channel(c.channel, f"preferences.channels[{i}].channel"),
                    c.enabled,
                )
                for i, c in enumerate(p.channels)
            ],
            time_zone=p.time_zone,
            quiet_start=p.quiet_hours_start,
            quiet_end=p.quiet_hours_end,
            locale=p.locale,
            phone_number=p.phone_number,
            push_tokens=list(p.push_tokens),
        )

        async def work(uow: UnitOfWork) -> pb.UpdatePreferencesResponse:
            view = await self.n.update_preferences(uow, tenant_id, user_id, update)
            return pb.UpdatePreferencesResponse(preferences=preferences_pb(view))

        return await self._idempotent(
            service="PreferenceService",
            method="UpdatePreferences",
            request=request,
            response_type=pb.UpdatePreferencesResponse,
            tenant_id=tenant_id,
            work=work,
        )


def _category(value: int, field: str) -> Category:
    try:
        return Category(value)
    except ValueError:
        raise InvalidArgument([FieldViolation(field, "must name a category")]) from None


def _channel(value: int, field: str) -> Channel:
    try:
        return Channel(value)
    except ValueError:
        raise InvalidArgument([FieldViolation(field, "must name a channel")]) from None


class TemplateServicer(_Base, rpc.TemplateServiceServicer):
    async def ListTemplates(
        self, request: pb.ListTemplatesRequest, context: Ctx
    ) -> pb.ListTemplatesResponse:
        tenant_id, _ = _user()
        rows = await self.n.list_templates(tenant_id, request.kind)
        return pb.ListTemplatesResponse(templates=[template_pb(r) for r in rows])

    async def CreateTemplateVersion(
        self, request: pb.CreateTemplateVersionRequest, context: Ctx
    ) -> pb.CreateTemplateVersionResponse:
        tenant_id, user_id = _user()

        async def work(uow: UnitOfWork) -> pb.CreateTemplateVersionResponse:
            row = await self.n.create_template_version(
                uow,
                tenant_id=tenant_id,
                actor_id=user_id,
                kind=request.kind,
                channel=Channel(request.channel),
                locale=request.locale,
                subject=request.subject,
                body=request.body,
            )
            return pb.CreateTemplateVersionResponse(template=template_pb(row))

        return await self._idempotent(
            service="TemplateService",
            method="CreateTemplateVersion",
            request=request,
            response_type=pb.CreateTemplateVersionResponse,
            tenant_id=tenant_id,
            work=work,
        )

    async def PreviewTemplate(
        self, request: pb.PreviewTemplateRequest, context: Ctx
    ) -> pb.PreviewTemplateResponse:
        tenant_id, _ = _user()
        subject, body, version = await self.n.preview(
            tenant_id,
            kind=request.kind,
            channel=Channel(request.channel),
            locale=request.locale,
            subject=request.subject,
            body=request.body,
            data=dict(request.data),
        )
        return pb.PreviewTemplateResponse(subject=subject, body=body, version=version)


class SendServicer(_Base, rpc.SendServiceServicer):
    async def SendNotification(
        self, request: pb.SendNotificationRequest, context: Ctx
    ) -> pb.SendNotificationResponse:
        tenant_id, _ = _user()

        async def work(uow: UnitOfWork) -> pb.SendNotificationResponse:
            count = await self.n.send(
                uow,
                tenant_id=tenant_id,
                request_id=request.request_id,
                user_ids=list(request.user_ids),
                title=request.title,
                message=request.message,
                channels=_channels(request.channels),
                schedule_time=_time(request.schedule_time, request.HasField("schedule_time")),
            )
            return pb.SendNotificationResponse(delivery_count=count)

        return await self._idempotent(
            service="SendService",
            method="SendNotification",
            request=request,
            response_type=pb.SendNotificationResponse,
            tenant_id=tenant_id,
            work=work,
        )

    async def BulkSend(self, request: pb.BulkSendRequest, context: Ctx) -> pb.BulkSendResponse:
        tenant_id, _ = _user()

        async def work(uow: UnitOfWork) -> pb.BulkSendResponse:
            send_id, recipients, created = await self.n.bulk_send(
                uow,
                tenant_id=tenant_id,
                batch_id=request.batch_id,
                title=request.title,
                message=request.message,
                channels=_channels(request.channels),
                schedule_time=_time(request.schedule_time, request.HasField("schedule_time")),
                rate_per_second=request.rate_per_second,
            )
            return pb.BulkSendResponse(
                send_id=send_id, recipient_count=recipients, delivery_count=created
            )

        return await self._idempotent(
            service="SendService",
            method="BulkSend",
            request=request,
            response_type=pb.BulkSendResponse,
            tenant_id=tenant_id,
            work=work,
        )

    async def ListDeliveries(
        self, request: pb.ListDeliveriesRequest, context: Ctx
    ) -> pb.ListDeliveriesResponse:
        tenant_id, _ = _user()
        rows, token = await self.n.history(
            tenant_id,
            page_size=request.page_size,
            page_token=request.page_token,
            user_id=request.user_id,
            status=Status(request.status) if request.status else None,
            channel=Channel(request.channel) if request.channel else None,
            kind=request.kind,
        )
        return pb.ListDeliveriesResponse(
            deliveries=[delivery_pb(r) for r in rows], next_page_token=token
        )


def register_all(
    server: grpc.aio.Server, notifications: Notifications, hub: InboxHub, keepalive: float
) -> None:
    rpc.add_InboxServiceServicer_to_server(InboxServicer(notifications, hub, keepalive), server)
    rpc.add_PreferenceServiceServicer_to_server(PreferenceServicer(notifications), server)
    rpc.add_TemplateServiceServicer_to_server(TemplateServicer(notifications), server)
    rpc.add_SendServiceServicer_to_server(SendServicer(notifications), server)


SERVICE_NAMES = [
    f"{PACKAGE}.{name}"
    for name in ("InboxService", "PreferenceService", "TemplateService", "SendService")
]
