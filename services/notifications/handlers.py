"""Use cases: notify users (from events and sends), the inbox, preferences, templates, history.

Event handlers get the consumer's unit of work, so the inbox row that makes an event idempotent
and the deliveries it creates commit together; the deliveries' unique key (tenant, source, user,
channel) holds even if an event arrives twice under two ids of one source.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications import domain, store
from services.notifications.compose import SEALED_KEY_ID, SEALED_TOKEN, Composed, Composer
from services.notifications.domain import Category, Channel, Recipient, Status
from services.notifications.live import InboxHub
from services.notifications.store import (
    DeliveryRow,
    InboxItem,
    InboxText,
    NewDelivery,
    NewNotification,
    TemplateRow,
)
from services.notifications.templates import (
    RenderError,
    TemplateText,
    check_syntax,
    locale_candidates,
    render,
    render_text,
)
from suuupra_runtime.db import Database, UnitOfWork
from suuupra_runtime.errors import FieldViolation, InvalidArgument

Clock = Callable[[], dt.datetime]
# (tenant, user) -> the recipient and their explicit preferences
Recipients = Mapping[store.RecipientKey, tuple[Recipient, Mapping[domain.PreferenceKey, bool]]]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class SealedToken:
    key_id: str
    ciphertext: bytes


# Built per event on the consumer's hot path: a NamedTuple, not a frozen dataclass,
# whose __init__ (object.__setattr__ per field) made those constructions ~8% of the event path.
class Notice(NamedTuple):
    """One notification to some users (`Notifications.notify`'s arguments)."""

    tenant_id: str
    user_ids: Sequence[str]
    kind: str
    source: str  # with user and channel, the idempotency key of a delivery
    data: Mapping[str, str]
    channels: Sequence[Channel] | None = None
    due_at: dt.datetime | None = None
    email_override: str = ""
    sealed: SealedToken | None = None
    pace_per_second: int = 0


@dataclass(frozen=True)
class _Plan:
    notice: Notice
    planned: Sequence[tuple[Recipient, domain.PlannedDelivery]]
    composed: Mapping[tuple[str, Channel], Composed]
    rows: Sequence[NewDelivery]


def _inbox_row(
    delivery_id: str,
    recipient: Recipient,
    *,
    kind: str,
    category: Category,
    context: Mapping[str, Any],
    composed: Composed,
) -> NewNotification:
    return NewNotification(
        tenant_id=recipient.tenant_id,
        user_id=recipient.user_id,
        delivery_id=delivery_id,
        kind=kind,
        category=category,
        title=composed.subject,
        body=composed.body,
        data=_inbox_data(context),
    )


def _inbox_data(context: Mapping[str, Any]) -> dict[str, str]:
    """What an inbox row shows of a notification's context (never the sealed token)."""
    return {k: str(v) for k, v in context.items() if not str(k).startswith("_")}


def encode_page_token(created_at: dt.datetime, item_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), item_id]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_page_token(token: str) -> tuple[dt.datetime, str] | None:
    if not token:
        return None
    try:
        created, item_id = json.loads(base64.urlsafe_b64decode(token.encode()))
        uuid.UUID(item_id)
        return dt.datetime.fromisoformat(created), str(item_id)
    except (ValueError, TypeError):
        raise InvalidArgument(
            [FieldViolation("page_token", "is not a token from a previous page")]
        ) from None


@dataclass(frozen=True)
class PreferencesView:
    recipient: Recipient
    channels: Mapping[domain.PreferenceKey, bool]  # effective value for every pair


@dataclass(frozen=True)
class PreferenceUpdate:
    fields: frozenset[str]
    channels: Sequence[tuple[Category, Channel, bool]] = ()
    time_zone: str = ""
    quiet_start: str = ""
    quiet_end: str = ""
    locale: str = ""
    phone_number: str = ""
    push_tokens: Sequence[str] = ()


class Notifications:
    def __init__(
        self,
        db: Database,
        composer: Composer,
        hub: InboxHub,
        *,
        wake_worker: Callable[[], None] = lambda: None,
        clock: Clock = utcnow,
    ) -> None:
        self.db = db
        self.composer = composer
        self.hub = hub
        self.wake_worker = wake_worker
        self.clock = clock

    # --- creating deliveries ------------------------------------------------------------------

    async def notify(
        self,
        uow: UnitOfWork,
        *,
        tenant_id: str,
        user_ids: Sequence[str],
        kind: str,
        source: str,
        data: Mapping[str, str],
        channels: Sequence[Channel] | None = None,
        due_at: dt.datetime | None = None,
        email_override: str = "",
        sealed: SealedToken | None = None,
        pace_per_second: int = 0,
    ) -> int:
        """Plans and stores deliveries of one notification to `user_ids`; returns how many
        were created (0 when this source was already handled)."""
        notice = Notice(
            tenant_id=tenant_id, user_ids=user_ids, kind=kind, source=source, data=data,
            channels=channels, due_at=due_at, email_override=email_override, sealed=sealed,
            pace_per_second=pace_per_second,
        )  # fmt: skip
        [created] = await self.notify_many(uow, [notice])
        return created

    async def notify_many(
        self, uow: UnitOfWork, notices: Sequence[Notice], *, known: Recipients | None = None
    ) -> list[int]:
        """Plans and stores the deliveries of several notifications with a fixed number of
        statements (recipients with preferences unless `known` has them all, deliveries, inbox
        rows); returns how many deliveries each created. In-app deliveries that are due now land
        in the inbox in this same transaction, and reach live streams after its commit."""
        now = self.clock()
        s = uow.session
        found = dict(known or {})
        missing = [(n.tenant_id, u) for n in notices for u in n.user_ids]
        missing = [key for key in missing if key not in found]
        if missing:
            found.update(await store.recipients_and_preferences(s, missing))
        plans: list[_Plan] = []
        rows: list[NewDelivery] = []
        for notice in notices:
            plan = await self._plan(s, notice, found, now)
            plans.append(plan)
            rows += plan.rows
        stored = await store.insert_deliveries(s, rows, now)
        counts: list[int] = []
        wake = False
        for plan in plans:
            n = plan.notice
            count = 0
            for recipient, p in plan.planned:
                key = (n.tenant_id, n.source, recipient.user_id, p.channel)
                if key not in stored.created:
                    continue
                count += 1
                # In-app deliveries due now were stored as sent, with their inbox row.
                ready = (recipient.user_id, p.channel) in plan.composed
                wake = wake or (p.status is Status.QUEUED and not ready)
            counts.append(count)
        self.push_after_commit(uow, stored.inbox)
        if wake:
            uow.after_commit(self.wake_worker)
        return counts

    async def _plan(
        self,
        s: AsyncSession,
        notice: Notice,
        found: Recipients,
        now: dt.datetime,
    ) -> _Plan:
        if not notice.user_ids:
            return _Plan(notice, [], {}, [])
        spec = domain.kind_spec(notice.kind)
        context: dict[str, Any] = dict(notice.data)
        if notice.sealed is not None:
            context[SEALED_TOKEN] = base64.b64encode(notice.sealed.ciphertext).decode()
            context[SEALED_KEY_ID] = notice.sealed.key_id
        planned: list[tuple[Recipient, domain.PlannedDelivery]] = []
        for user_id in notice.user_ids:
            recipient, explicit = found[(notice.tenant_id, user_id)]
            for item in domain.plan_deliveries(
                recipient,
                notice.kind,
                explicit,
                now,
                channels=notice.channels,
                due_at=notice.due_at,
                email_override=notice.email_override,
            ):
                planned.append((recipient, item))
        if notice.pace_per_second:
            planned = _paced(planned, notice.pace_per_second)
        # In-app deliveries due now are composed here and stored as sent, together with their
        # inbox row, in this transaction: no worker round trip on the latency-critical path.
        composed: dict[tuple[str, Channel], Composed] = {}
        for r, p in planned:
            if p.channel is Channel.IN_APP and p.status is Status.QUEUED and p.due_at <= now:
                composed[(r.user_id, p.channel)] = await self.compose_in_app(
                    s, r, kind=notice.kind, category=spec.category, context=context
                )
        inbox_data = _inbox_data(context)
        rows = []
        for r, p in planned:
            ready = composed.get((r.user_id, p.channel))
            rows.append(
                NewDelivery(
                    tenant_id=notice.tenant_id,
                    user_id=r.user_id,
                    kind=notice.kind,
                    category=spec.category,
                    channel=p.channel,
                    source=notice.source,
                    status=Status.SENT if ready else p.status,
                    address=p.address,
                    due_at=p.due_at,
                    context=context,
                    error=p.reason,
                    attempts=1 if ready else 0,
                    template_version=ready.version if ready else 0,
                    inbox=InboxText(ready.subject, ready.body, inbox_data) if ready else None,
                )
            )
        return _Plan(notice, planned, composed, rows)

    async def compose_in_app(
        self,
        s: AsyncSession,
        recipient: Recipient,
        *,
        kind: str,
        category: Category,
        context: Mapping[str, Any],
    ) -> Composed:
        return await self.composer.compose(
            s,
            kind=kind,
            category=category,
            channel=Channel.IN_APP,
            recipient=recipient,
            context=context,
        )

    async def store_in_app(self, uow: UnitOfWork, rows: Sequence[NewNotification]) -> None:
        """Inbox rows of in-app deliveries, pushed to live streams after the commit."""
        self.push_after_commit(
            uow, await store.insert_notifications(uow.session, rows, self.clock())
        )

    def push_after_commit(self, uow: UnitOfWork, items: Sequence[InboxItem]) -> None:
        if items:
            hub = self.hub
            uow.after_commit(lambda: hub.publish_soon(items))

    async def deliver_in_app(
        self,
        uow: UnitOfWork,
        delivery_id: str,
        recipient: Recipient,
        *,
        kind: str,
        category: Category,
        context: Mapping[str, Any],
        attempts: int,
    ) -> None:
        """A queued in-app delivery that fell due (scheduled or paced sends): the worker's path."""
        composed = await self.compose_in_app(
            uow.session, recipient, kind=kind, category=category, context=context
        )
        await self.store_in_app(
            uow,
            [_inbox_row(delivery_id, recipient, kind=kind, category=category, context=context,
                        composed=composed)],
        )  # fmt: skip
        await store.record_outcome(
            uow.session,
            delivery_id,
            Status.SENT,
            self.clock(),
            template_version=composed.version,
            attempts_at_least=max(attempts, 1),
        )

    # --- sends by people ----------------------------------------------------------------------

    async def send(
        self,
        uow: UnitOfWork,
        *,
        tenant_id: str,
        request_id: str,
        user_ids: Sequence[str],
        title: str,
        message: str,
        channels: Sequence[Channel],
        schedule_time: dt.datetime | None,
    ) -> int:
        self._check_schedule(schedule_time)
        return await self.notify(
            uow,
            tenant_id=tenant_id,
            user_ids=user_ids,
            kind=domain.ANNOUNCEMENT,
            source=f"send:{request_id}",
            data={"title": title, "message": message},
            channels=channels or (Channel.IN_APP, Channel.EMAIL),
            due_at=schedule_time,
        )

    async def bulk_send(
        self,
        uow: UnitOfWork,
        *,
        tenant_id: str,
        batch_id: str,
        title: str,
        message: str,
        channels: Sequence[Channel],
        schedule_time: dt.datetime | None,
        rate_per_second: int,
    ) -> tuple[str, int, int]:
        self._check_schedule(schedule_time)
        members = await store.batch_members(uow.session, tenant_id, batch_id)
        send_id = str(uuid.uuid4())
        created = await self.notify(
            uow,
            tenant_id=tenant_id,
            user_ids=members,
            kind=domain.ANNOUNCEMENT,
            source=f"bulk:{send_id}",
            data={"title": title, "message": message, "batch_id": batch_id},
            channels=channels or (Channel.IN_APP, Channel.EMAIL),
            due_at=schedule_time,
            pace_per_second=rate_per_second or 20,
        )
        return send_id, len(members), created

    def _check_schedule(self, schedule_time: dt.datetime | None) -> None:
        if schedule_time is not None and schedule_time < self.clock() - dt.timedelta(seconds=5):
            raise InvalidArgument(
                [FieldViolation("schedule_time", "must be in the future")],
                reason="SCHEDULE_IN_PAST",
            )

    # --- inbox --------------------------------------------------------------------------------

    async def list_inbox(
        self, tenant_id: str, user_id: str, *, page_size: int, page_token: str, unread_only: bool
    ) -> tuple[list[InboxItem], str]:
        after = decode_page_token(page_token)
        limit = page_size or 50
        async with self.db.sessions() as s:
            items = await store.list_inbox(
                s, tenant_id, user_id, unread_only=unread_only, after=after, limit=limit + 1
            )
        next_token = ""
        if len(items) > limit:
            items = items[:limit]
            next_token = encode_page_token(items[-1].created_at, items[-1].notification_id)
        return items, next_token

    async def unread_count(self, tenant_id: str, user_id: str) -> int:
        async with self.db.sessions() as s:
            return await store.unread_count(s, tenant_id, user_id)

    async def mark_read(
        self, tenant_id: str, user_id: str, ids: Sequence[str], mark_all: bool
    ) -> tuple[int, int]:
        if not ids and not mark_all:
            raise InvalidArgument(
                [FieldViolation("notification_ids", "name notifications, or set all")]
            )
        async with self.db.unit_of_work(tenant_id=tenant_id) as uow:
            marked = await store.mark_read(
                uow.session, tenant_id, user_id, None if mark_all else ids, self.clock()
            )
            unread = await store.unread_count(uow.session, tenant_id, user_id)
        return marked, unread

    # --- preferences --------------------------------------------------------------------------

    async def preferences(self, tenant_id: str, user_id: str) -> PreferencesView:
        async with self.db.sessions() as s:
            return await self._preferences(s, tenant_id, user_id)

    async def _preferences(self, s: Any, tenant_id: str, user_id: str) -> PreferencesView:
        recipient = (await store.recipients(s, tenant_id, [user_id]))[user_id]
        explicit = (await store.explicit_preferences(s, tenant_id, [user_id]))[user_id]
        channels = {
            (category, channel): domain.channel_enabled(explicit, category, channel)[0]
            for category in Category
            for channel in Channel
        }
        return PreferencesView(recipient, channels)

    async def update_preferences(
        self, uow: UnitOfWork, tenant_id: str, user_id: str, update: PreferenceUpdate
    ) -> PreferencesView:
        s = uow.session
        now = self.clock()
        recipient = (await store.recipients(s, tenant_id, [user_id]))[user_id]
        f = update.fields
        if "channels" in f:
            domain.validate_preference_change(update.channels)
            await store.save_preferences(s, tenant_id, user_id, update.channels, now)
        if "time_zone" in f:
            recipient = replace(recipient, time_zone=domain.validate_time_zone(update.time_zone))
        if "quiet_hours" in f:
            quiet = domain.parse_quiet_hours(update.quiet_start, update.quiet_end)
            recipient = replace(recipient, quiet_hours=quiet)
        if "locale" in f:
            recipient = replace(recipient, locale=update.locale or "en")
        if "phone_number" in f:
            recipient = replace(recipient, phone_number=domain.validate_phone(update.phone_number))
        if "push_tokens" in f:
            recipient = replace(recipient, push_tokens=tuple(dict.fromkeys(update.push_tokens)))
        if f - {"channels"}:
            await store.save_settings(s, recipient, now)
        return await self._preferences(s, tenant_id, user_id)

    async def unsubscribe(self, token: str) -> domain.Unsubscribe | None:
        item = domain.verify_unsubscribe(self.composer.signing_key, token)
        if item is None:
            return None
        async with self.db.unit_of_work(tenant_id=item.tenant_id) as uow:
            await store.save_preferences(
                uow.session,
                item.tenant_id,
                item.user_id,
                [(item.category, Channel.EMAIL, False)],
                self.clock(),
            )
        return item

    # --- templates ----------------------------------------------------------------------------

    async def list_templates(self, tenant_id: str, kind: str) -> list[TemplateRow]:
        async with self.db.sessions() as s:
            overrides = await store.latest_templates(s, tenant_id, kind)
        have = {(t.kind, t.channel, t.locale) for t in overrides}
        from services.notifications.templates import BUILT_IN

        defaults = [
            TemplateRow(k, c, "en", 0, t.subject, t.body, "", None)
            for (k, c), t in BUILT_IN.items()
            if (not kind or k == kind) and (k, c, "en") not in have
        ]
        return sorted([*overrides, *defaults], key=lambda t: (t.kind, t.channel, t.locale))

    async def create_template_version(
        self,
        uow: UnitOfWork,
        *,
        tenant_id: str,
        actor_id: str,
        kind: str,
        channel: Channel,
        locale: str,
        subject: str,
        body: str,
    ) -> TemplateRow:
        spec = domain.kind_spec(kind)
        if channel not in spec.channels:
            raise InvalidArgument(
                [FieldViolation("channel", f"{kind} is not sent on {channel.name.lower()}")]
            )
        _validate_template(TemplateText(subject, body), spec.sample)
        uow.after_commit(lambda: self.composer.forget(tenant_id))
        return await store.add_template_version(
            uow.session,
            tenant_id,
            kind=kind,
            channel=channel,
            locale=locale,
            subject=subject,
            body=body,
            created_by=actor_id,
            now=self.clock(),
        )

    async def preview(
        self,
        tenant_id: str,
        *,
        kind: str,
        channel: Channel,
        locale: str,
        subject: str,
        body: str,
        data: Mapping[str, str],
    ) -> tuple[str, str, int]:
        spec = domain.kind_spec(kind)
        sample = {**spec.sample, "display_name": "Sample User", **data}
        if body or subject:
            text = TemplateText(subject, body, -1)
        else:
            async with self.db.sessions() as s:
                text = await self.composer.template(s, tenant_id, kind, channel, locale or "en")
        try:
            rendered_subject, rendered_body = render(text, sample)
        except RenderError as exc:
            raise InvalidArgument([FieldViolation(exc.field, str(exc))]) from None
        return rendered_subject, rendered_body, text.version

    # --- history ------------------------------------------------------------------------------

    async def history(
        self,
        tenant_id: str,
        *,
        page_size: int,
        page_token: str,
        user_id: str,
        status: Status | None,
        channel: Channel | None,
        kind: str,
    ) -> tuple[list[DeliveryRow], str]:
        after = decode_page_token(page_token)
        limit = page_size or 100
        async with self.db.sessions() as s:
            rows = await store.list_deliveries(
                s,
                tenant_id,
                user_id=user_id,
                status=status,
                channel=channel,
                kind=kind,
                after=after,
                limit=limit + 1,
            )
        next_token = ""
        if len(rows) > limit:
            rows = rows[:limit]
            next_token = encode_page_token(rows[-1].created_at, rows[-1].delivery_id)
        return rows, next_token


def _validate_template(text: TemplateText, sample: Mapping[str, str]) -> None:
    violations: list[FieldViolation] = []
    for field_name, source in (("subject", text.subject), ("body", text.body)):
        try:
            check_syntax(source, field_name)
            render_text(source, sample, field_name)
        except RenderError as exc:
            violations.append(FieldViolation(exc.field, str(exc)))
    if violations:
        raise InvalidArgument(violations, reason="TEMPLATE_INVALID")


def _paced(
    planned: list[tuple[Recipient, domain.PlannedDelivery]], rate: int
) -> list[tuple[Recipient, domain.PlannedDelivery]]:
    """Spreads each channel's queued deliveries at `rate` per second (bulk sends)."""
    out: list[tuple[Recipient, domain.PlannedDelivery]] = []
    index: dict[Channel, int] = {}
    for recipient, planned_one in planned:
        p = planned_one
        if p.status is Status.QUEUED:
            i = index.get(p.channel, 0)
            index[p.channel] = i + 1
            p = p._replace(due_at=p.due_at + dt.timedelta(seconds=i / max(rate, 1)))
        out.append((recipient, p))
    return out


__all__ = [
    "Notice",
    "Notifications",
    "PreferenceUpdate",
    "PreferencesView",
    "SealedToken",
    "locale_candidates",
    "utcnow",
]
