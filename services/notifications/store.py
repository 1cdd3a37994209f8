"""SQL for the notifications tables (schema in migrations/). Every statement names its tenant."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications.domain import (
    Category,
    Channel,
    PreferenceKey,
    QuietHours,
    Recipient,
    Status,
    unknown_recipient,
)
from services.notifications.templates import TemplateText
from suuupra_runtime.ids import random_uuid


@dataclass(frozen=True)
class DeliveryRow:
    delivery_id: str
    tenant_id: str
    user_id: str
    kind: str
    category: Category
    channel: Channel
    source: str
    status: Status
    attempts: int
    error: str
    address: str
    context: Mapping[str, Any]
    template_version: int
    due_at: dt.datetime
    sent_at: dt.datetime | None
    created_at: dt.datetime


# Built once or more per event on the consumer's hot path: a NamedTuple, not a frozen dataclass,
# whose __init__ (object.__setattr__ per field) made those constructions ~8% of the event path.
class InboxItem(NamedTuple):
    notification_id: str
    tenant_id: str
    user_id: str
    kind: str
    category: Category
    title: str
    body: str
    data: Mapping[str, str]
    created_at: dt.datetime
    read_at: dt.datetime | None = None
    unread_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "notification_id": self.notification_id,
            "tenant_id": self.tenant_id,
            "user_id": self.user_id,
            "kind": self.kind,
            "category": int(self.category),
            "title": self.title,
            "body": self.body,
            "data": dict(self.data),
            "created_at": self.created_at.isoformat(),
            "unread_count": self.unread_count,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InboxItem:
        return cls(
            notification_id=d["notification_id"],
            tenant_id=d["tenant_id"],
            user_id=d["user_id"],
            kind=d["kind"],
            category=Category(d["category"]),
            title=d["title"],
            body=d["body"],
            data=d["data"],
            created_at=dt.datetime.fromisoformat(d["created_at"]),
            unread_count=d["unread_count"],
        )


# Built once or more per event on the consumer's hot path: a NamedTuple, not a frozen dataclass,
# whose __init__ (object.__setattr__ per field) made those constructions ~8% of the event path.
class NewDelivery(NamedTuple):
    tenant_id: str
    user_id: str
    kind: str
    category: Category
    channel: Channel
    source: str
    status: Status
    address: str
    due_at: dt.datetime
    context: Mapping[str, Any] = MappingProxyType({})
    error: str = ""
    # In-app deliveries are composed before they are stored, so they are inserted as sent, with
    # their inbox row (`inbox`) in the same statement.
    attempts: int = 0
    template_version: int = 0
    inbox: InboxText | None = None


# Built once or more per event on the consumer's hot path: a NamedTuple, not a frozen dataclass,
# whose __init__ (object.__setattr__ per field) made those constructions ~8% of the event path.
class InboxText(NamedTuple):
    title: str
    body: str
    data: Mapping[str, str]


@dataclass(frozen=True)
class NewNotification:
    """The inbox row of an in-app delivery."""

    tenant_id: str
    user_id: str
    delivery_id: str
    kind: str
    category: Category
    title: str
    body: str
    data: Mapping[str, str]


RecipientKey = tuple[str, str]  # (tenant, user)


def to_json(value: Any) -> str:
    """JSON for the batch statements' parameters: orjson (raw UTF-8, no spaces) encodes these rows
    ~7x faster than the standard library's C encoder, which was ~8% of the event path. Strings
    come from protobuf and templates, so they hold no lone surrogates (orjson refuses those)."""
    return orjson.dumps(value).decode()


# --- recipients -------------------------------------------------------------------------------


def _recipient(row: Any) -> Recipient:
    quiet = (
        QuietHours(row.quiet_start, row.quiet_end)
        if row.quiet_start is not None and row.quiet_end is not None
        else None
    )
    return Recipient(
        tenant_id=row.tenant_id,
        user_id=row.user_id,
        email=row.email,
        display_name=row.display_name,
        active=row.active,
        locale=row.locale,
        time_zone=row.time_zone,
        quiet_hours=quiet,
        phone_number=row.phone_number,
        push_tokens=tuple(row.push_tokens or ()),
    )


async def upsert_identity(
    s: AsyncSession,
    tenant_id: str,
    user_id: str,
    *,
    email: str,
    display_name: str,
    now: dt.datetime,
) -> None:
    await s.execute(
        text(
            "INSERT INTO recipients (tenant_id, user_id, email, display_name, updated_at) "
            "VALUES (:t, :u, :e, :d, :now) ON CONFLICT (tenant_id, user_id) DO UPDATE "
            "SET email = EXCLUDED.email, display_name = EXCLUDED.display_name, "
            "updated_at = EXCLUDED.updated_at"
        ),
        {"t": tenant_id, "u": user_id, "e": email, "d": display_name, "now": now},
    )


async def set_active(
    s: AsyncSession, tenant_id: str, user_id: str, active: bool, now: dt.datetime, *, erase: bool
) -> None:
    await s.execute(
        text(
            "INSERT INTO recipients (tenant_id, user_id, active, updated_at) "
            "VALUES (:t, :u, :a, :now) ON CONFLICT (tenant_id, user_id) DO UPDATE "
            "SET active = EXCLUDED.active, updated_at = EXCLUDED.updated_at"
        ),
        {"t": tenant_id, "u": user_id, "a": active, "now": now},
    )
    if erase:
        await s.execute(
            text(
                "UPDATE recipients SET email = '', display_name = '', phone_number = '', "
                "push_tokens = '{}' WHERE tenant_id = :t AND user_id = :u"
            ),
            {"t": tenant_id, "u": user_id},
        )


async def recipients(
    s: AsyncSession, tenant_id: str, user_ids: Sequence[str]
) -> dict[str, Recipient]:
    rows = await s.execute(
        text("SELECT * FROM recipients WHERE tenant_id = :t AND user_id = ANY(:u)"),
        {"t": tenant_id, "u": list(user_ids)},
    )
    found = {row.user_id: _recipient(row) for row in rows}
    return {u: found.get(u) or unknown_recipient(tenant_id, u) for u in user_ids}


async def save_settings(s: AsyncSession, r: Recipient, now: dt.datetime) -> None:
    quiet = r.quiet_hours
    await s.execute(
        text(
            "INSERT INTO recipients (tenant_id, user_id, locale, time_zone, quiet_start, "
            "quiet_end, phone_number, push_tokens, updated_at) "
            "VALUES (:t, :u, :l, :z, :qs, :qe, :p, :pt, :now) "
            "ON CONFLICT (tenant_id, user_id) DO UPDATE SET locale = EXCLUDED.locale, "
            "time_zone = EXCLUDED.time_zone, quiet_start = EXCLUDED.quiet_start, "
            "quiet_end = EXCLUDED.quiet_end, phone_number = EXCLUDED.phone_number, "
            "push_tokens = EXCLUDED.push_tokens, updated_at = EXCLUDED.updated_at"
        ),
        {
            "t": r.tenant_id,
            "u": r.user_id,
            "l": r.locale,
            "z": r.time_zone,
            "qs": quiet.start_minute if quiet else None,
            "qe": quiet.end_minute if quiet else None,
            "p": r.phone_number,
            "pt": list(r.push_tokens),
            "now": now,
        },
    )


# --- preferences ------------------------------------------------------------------------------


async def explicit_preferences(
    s: AsyncSession, tenant_id: str, user_ids: Sequence[str]
) -> dict[str, dict[PreferenceKey, bool]]:
    rows = await s.execute(
        text(
            "SELECT user_id, category, channel, enabled FROM preferences "
            "WHERE tenant_id = :t AND user_id = ANY(:u)"
        ),
        {"t": tenant_id, "u": list(user_ids)},
    )
    out: dict[str, dict[PreferenceKey, bool]] = {u: {} for u in user_ids}
    for row in rows:
        out[row.user_id][(Category(row.category), Channel(row.channel))] = row.enabled
    return out


_RECIPIENTS_AND_PREFERENCES = text(
    "SELECT k.t AS key_tenant, k.u AS key_user, r.*, p.categories, p.channels, p.enabled "
    "FROM unnest(CAST(:ts AS text[]), CAST(:us AS text[])) AS k(t, u) "
    "LEFT JOIN recipients r ON r.tenant_id = k.t AND r.user_id = k.u "
    "LEFT JOIN LATERAL (SELECT array_agg(category) AS categories, "
    "array_agg(channel) AS channels, array_agg(enabled) AS enabled FROM preferences "
    "WHERE preferences.tenant_id = k.t AND preferences.user_id = k.u) p ON true"
)


async def recipients_and_preferences(
    s: AsyncSession, keys: Sequence[RecipientKey]
) -> dict[RecipientKey, tuple[Recipient, dict[PreferenceKey, bool]]]:
    """Recipients (unknown ones as `unknown_recipient`) with their explicit preferences, for
    any number of (tenant, user) pairs, in one query."""
    wanted = list(dict.fromkeys(keys))
    rows = await s.execute(
        _RECIPIENTS_AND_PREFERENCES,
        {"ts": [t for t, _ in wanted], "us": [u for _, u in wanted]},
    )
    out: dict[RecipientKey, tuple[Recipient, dict[PreferenceKey, bool]]] = {}
    for row in rows:
        key = (row.key_tenant, row.key_user)
        recipient = _recipient(row) if row.tenant_id is not None else unknown_recipient(*key)
        explicit = {
            (Category(category), Channel(channel)): enabled
            for category, channel, enabled in zip(
                row.categories or (), row.channels or (), row.enabled or (), strict=True
            )
        }
        out[key] = (recipient, explicit)
    return out


async def save_preferences(
    s: AsyncSession,
    tenant_id: str,
    user_id: str,
    changes: Iterable[tuple[Category, Channel, bool]],
    now: dt.datetime,
) -> None:
    for category, channel, enabled in changes:
        await s.execute(
            text(
                "INSERT INTO preferences (tenant_id, user_id, category, channel, enabled, "
                "updated_at) VALUES (:t, :u, :c, :ch, :e, :now) "
                "ON CONFLICT (tenant_id, user_id, category, channel) DO UPDATE "
                "SET enabled = EXCLUDED.enabled, updated_at = EXCLUDED.updated_at"
            ),
            {"t": tenant_id, "u": user_id, "c": int(category), "ch": int(channel), "e": enabled,
             "now": now},
        )  # fmt: skip


# --- courses projection -----------------------------------------------------------------------


async def upsert_course(s: AsyncSession, tenant_id: str, course_id: str, title: str) -> None:
    if not title:
        return
    await s.execute(
        text(
            "INSERT INTO courses (tenant_id, course_id, title) VALUES (:t, :c, :ti) "
            "ON CONFLICT (tenant_id, course_id) DO UPDATE SET title = EXCLUDED.title"
        ),
        {"t": tenant_id, "c": course_id, "ti": title},
    )


async def course_title(s: AsyncSession, tenant_id: str, course_id: str) -> str:
    title = await s.scalar(
        text("SELECT title FROM courses WHERE tenant_id = :t AND course_id = :c"),
        {"t": tenant_id, "c": course_id},
    )
    return str(title) if title else "your course"


async def set_membership(
    s: AsyncSession,
    tenant_id: str,
    batch_id: str,
    user_id: str,
    *,
    course_id: str,
    role: int,
    active: bool,
    now: dt.datetime,
    source_seq: int,
) -> bool:
    """Apply one enrollment event; False (nothing changed) when a later event of the same
    stream already set this membership, so a retried older event cannot undo a newer one."""
    result = await s.execute(
        text(
            "INSERT INTO memberships (tenant_id, batch_id, user_id, course_id, role, active, "
            "updated_at, source_seq) VALUES (:t, :b, :u, :c, :r, :a, :now, :seq) "
            "ON CONFLICT (tenant_id, batch_id, user_id) DO UPDATE SET role = EXCLUDED.role, "
            "active = EXCLUDED.active, course_id = EXCLUDED.course_id, "
            "updated_at = EXCLUDED.updated_at, source_seq = EXCLUDED.source_seq "
            "WHERE memberships.source_seq <= EXCLUDED.source_seq"
        ),
        {"t": tenant_id, "b": batch_id, "u": user_id, "c": course_id, "r": role, "a": active,
         "now": now, "seq": source_seq},
    )  # fmt: skip
    return bool(getattr(result, "rowcount", 0))


async def batch_members(
    s: AsyncSession, tenant_id: str, batch_id: str, roles: Sequence[int] | None = None
) -> list[str]:
    rows = await s.execute(
        text(
            "SELECT user_id FROM memberships WHERE tenant_id = :t AND batch_id = :b AND active "
            "AND (CAST(:r AS smallint[]) IS NULL OR role = ANY(:r)) ORDER BY user_id"
        ),
        {"t": tenant_id, "b": batch_id, "r": list(roles) if roles is not None else None},
    )
    return [row.user_id for row in rows]


# --- deliveries -------------------------------------------------------------------------------


DeliveryKey = tuple[str, str, str, Channel]  # (tenant, source, user, channel)

# Inbox rows from `json_to_recordset(...) AS i(did, nid, t, u, k, c, ti, b, data)` (see
# _inbox_json). The rows come as one JSON array of objects: encoding it is one C call, where a
# column of arrays costs the driver a Python-level type check per element. The trigger of
# migration 0004 adds them to their users' unread counters when the statement ends.
_INBOX_ROWS = (
    "json_to_recordset(CAST(:inbox AS json)) "
    "AS i(did uuid, nid uuid, t text, u text, k text, c smallint, ti text, b text, data jsonb)"
)
_INSERT_INBOX = (
    "n AS (INSERT INTO notifications (notification_id, tenant_id, user_id, delivery_id, kind, "
    "category, title, body, data, created_at) "
    "SELECT i.nid, i.t, i.u, i.did, i.k, i.c, i.ti, i.b, CAST(i.data AS jsonb), :now FROM {rows} "
    "ON CONFLICT (delivery_id) DO NOTHING RETURNING notification_id, delivery_id) "
)


# Deliveries, then the inbox rows of the new ones that carry `inbox` (see _INSERT_INBOX).
_STORE_DELIVERIES = text(
    "WITH d AS (INSERT INTO deliveries (delivery_id, tenant_id, user_id, kind, category, "
    "channel, source, status, error, address, context, due_at, created_at, updated_at, "
    "attempts, template_version, sent_at) "
    "SELECT r.id, r.t, r.user_id, r.k, r.cat, r.ch, r.src, r.st, r.err, r.addr, "
    "CAST(r.ctx AS jsonb), r.due, :now, :now, r.att, r.tv, "
    "CASE WHEN r.st = 2 THEN CAST(:now AS timestamptz) END "
    "FROM json_to_recordset(CAST(:rows AS json)) AS r(id uuid, t text, user_id text, k text, "
    "cat smallint, ch smallint, src text, st smallint, err text, addr text, ctx jsonb, "
    "due timestamptz, att integer, tv integer) "
    "ON CONFLICT ON CONSTRAINT deliveries_once DO NOTHING "
    "RETURNING delivery_id, tenant_id, source, user_id, channel), "
    + _INSERT_INBOX.format(rows=f"{_INBOX_ROWS} JOIN d ON d.delivery_id = i.did")
    + "SELECT d.delivery_id, d.tenant_id, d.source, d.user_id, d.channel, n.notification_id "
    "FROM d LEFT JOIN n ON n.delivery_id = d.delivery_id"
)
_STORE_INBOX = text(
    "WITH "  # noqa: S608
    + _INSERT_INBOX.format(rows=_INBOX_ROWS)
    + "SELECT notification_id FROM n"
)
# Unread counts once a statement's rows are in: this transaction holds those counter rows'
# locks since the trigger updated them, so nobody else's rows are in these numbers.
_UNREAD_OF = text(
    "SELECT tenant_id, user_id, unread FROM inbox_unread "
    "WHERE (tenant_id, user_id) IN "
    "(SELECT * FROM unnest(CAST(:ts AS text[]), CAST(:us AS text[])))"
)


# Built once or more per event on the consumer's hot path: a NamedTuple, not a frozen dataclass,
# whose __init__ (object.__setattr__ per field) made those constructions ~8% of the event path.
class _InboxRow(NamedTuple):
    notification_id: str
    delivery_id: str
    tenant_id: str
    user_id: str
    kind: str
    category: Category
    text: InboxText


def _inbox_json(rows: Sequence[_InboxRow]) -> str:
    return to_json(
        [
            {"did": r.delivery_id, "nid": r.notification_id, "t": r.tenant_id, "u": r.user_id,
             "k": r.kind, "c": int(r.category), "ti": r.text.title, "b": r.text.body,
             "data": dict(r.text.data)}
            for r in rows
        ]
    )  # fmt: skip


def _iso(value: dt.datetime) -> str:
    """A timestamp as PostgreSQL reads it into timestamptz (naive ones are UTC, as asyncpg
    takes them)."""
    return (value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)).isoformat()


async def _inbox_items(
    s: AsyncSession, rows: Sequence[_InboxRow], inserted: set[str], now: dt.datetime
) -> list[InboxItem]:
    """The rows the statement inserted (`inserted` notification ids), in order, each with its
    user's unread count once it is stored: numbered on from the count before the statement."""
    new = [r for r in rows if r.notification_id in inserted]
    if not new:
        return []
    added: dict[RecipientKey, int] = {}
    for r in new:
        added[(r.tenant_id, r.user_id)] = added.get((r.tenant_id, r.user_id), 0) + 1
    counters = await s.execute(
        _UNREAD_OF, {"ts": [t for t, _ in added], "us": [u for _, u in added]}
    )
    before = {(c.tenant_id, c.user_id): c.unread - added[(c.tenant_id, c.user_id)]
              for c in counters}  # fmt: skip
    out: list[InboxItem] = []
    for r in new:
        key = (r.tenant_id, r.user_id)
        before[key] += 1
        out.append(
            InboxItem(
                r.notification_id, r.tenant_id, r.user_id, r.kind, r.category, r.text.title,
                r.text.body, dict(r.text.data), now, unread_count=before[key],
            )
        )  # fmt: skip
    return out


@dataclass(frozen=True)
class Stored:
    """What `insert_deliveries` created: delivery ids by key, and the new inbox items."""

    created: Mapping[DeliveryKey, str]
    inbox: Sequence[InboxItem]


async def insert_deliveries(
    s: AsyncSession, items: Sequence[NewDelivery], now: dt.datetime
) -> Stored:
    """Inserts deliveries (of any number of notifications) and the inbox rows of those that have
    `inbox` in one statement, skipping any delivery whose (tenant, source, user, channel) exists;
    a redelivered event therefore creates nothing."""
    if not items:
        return Stored({}, [])
    contexts: dict[int, dict[str, Any]] = {}  # one dict per notification's context
    dues: dict[dt.datetime, str] = {}
    ids = [random_uuid() for _ in items]
    rows_json = []
    for delivery_id, i in zip(ids, items, strict=True):
        context = contexts.get(id(i.context))
        if context is None:
            context = contexts[id(i.context)] = dict(i.context)
        due = dues.get(i.due_at)
        if due is None:
            due = dues[i.due_at] = _iso(i.due_at)
        rows_json.append(
            {"id": delivery_id, "t": i.tenant_id, "user_id": i.user_id, "k": i.kind,
             "cat": int(i.category), "ch": int(i.channel), "src": i.source, "st": int(i.status),
             "err": i.error, "addr": i.address, "ctx": context, "due": due, "att": i.attempts,
             "tv": i.template_version}
        )  # fmt: skip
    inbox = [
        _InboxRow(random_uuid(), delivery_id, i.tenant_id, i.user_id, i.kind, i.category,
                  i.inbox)
        for delivery_id, i in zip(ids, items, strict=True)
        if i.inbox is not None
    ]  # fmt: skip
    rows = await s.execute(
        _STORE_DELIVERIES,
        {"now": now, "rows": to_json(rows_json), "inbox": _inbox_json(inbox)},
    )
    created: dict[DeliveryKey, str] = {}
    inserted: set[str] = set()
    for row in rows:
        created[(row.tenant_id, row.source, row.user_id, Channel(row.channel))] = str(
            row.delivery_id
        )
        if row.notification_id is not None:
            inserted.add(str(row.notification_id))
    return Stored(created, await _inbox_items(s, inbox, inserted, now))


def _delivery(row: Any) -> DeliveryRow:
    return DeliveryRow(
        delivery_id=str(row.delivery_id),
        tenant_id=row.tenant_id,
        user_id=row.user_id,
        kind=row.kind,
        category=Category(row.category),
        channel=Channel(row.channel),
        source=row.source,
        status=Status(row.status),
        attempts=row.attempts,
        error=row.error,
        address=row.address,
        context=row.context,
        template_version=row.template_version,
        due_at=row.due_at,
        sent_at=row.sent_at,
        created_at=row.created_at,
    )


async def claim_due(
    s: AsyncSession, now: dt.datetime, lease: dt.timedelta, limit: int
) -> list[DeliveryRow]:
    """Claims due deliveries for this worker: SKIP LOCKED lets workers in several processes
    share the queue without waiting on each other; the lease (`leased_until`) hides a claimed row
    from other workers after this transaction commits, and brings it back if this worker dies
    before recording the outcome. `due_at` keeps saying when the delivery was due."""
    rows = await s.execute(
        text(
            "UPDATE deliveries d SET leased_until = :lease_end, attempts = d.attempts + 1, "
            "updated_at = :now FROM (SELECT delivery_id FROM deliveries "
            "WHERE status = 1 AND due_at <= :now "
            "AND (leased_until IS NULL OR leased_until <= :now) ORDER BY due_at LIMIT :lim "
            "FOR UPDATE SKIP LOCKED) due WHERE d.delivery_id = due.delivery_id RETURNING d.*"
        ),
        {"now": now, "lease_end": now + lease, "lim": limit},
    )
    return [_delivery(row) for row in rows]


async def record_outcome(
    s: AsyncSession,
    delivery_id: str,
    status: Status,
    now: dt.datetime,
    *,
    error: str = "",
    due_at: dt.datetime | None = None,
    template_version: int | None = None,
    attempts_at_least: int = 0,
) -> None:
    await s.execute(
        text(
            "UPDATE deliveries SET status = CAST(:st AS smallint), error = :err, "
            "updated_at = CAST(:now AS timestamptz), leased_until = NULL, "
            "attempts = GREATEST(attempts, CAST(:min_attempts AS integer)), "
            "sent_at = CASE WHEN CAST(:st AS smallint) = 2 THEN CAST(:now AS timestamptz) "
            "ELSE sent_at END, "
            "due_at = COALESCE(CAST(:due AS timestamptz), due_at), "
            "template_version = COALESCE(CAST(:tv AS integer), template_version) "
            "WHERE delivery_id = :id"
        ),
        {"st": int(status), "err": error, "now": now, "due": due_at, "tv": template_version,
         "id": delivery_id, "min_attempts": attempts_at_least},
    )  # fmt: skip


async def list_deliveries(
    s: AsyncSession,
    tenant_id: str,
    *,
    user_id: str,
    status: Status | None,
    channel: Channel | None,
    kind: str,
    after: tuple[dt.datetime, str] | None,
    limit: int,
) -> list[DeliveryRow]:
    rows = await s.execute(
        text(
            "SELECT * FROM deliveries WHERE tenant_id = :t "
            "AND (:u = '' OR user_id = :u) AND (CAST(:st AS smallint) IS NULL OR status = :st) "
            "AND (CAST(:ch AS smallint) IS NULL OR channel = :ch) AND (:k = '' OR kind = :k) "
            "AND (CAST(:ac AS timestamptz) IS NULL OR (created_at, delivery_id) < "
            "(CAST(:ac AS timestamptz), CAST(:ai AS uuid))) "
            "ORDER BY created_at DESC, delivery_id DESC LIMIT :lim"
        ),
        {
            "t": tenant_id,
            "u": user_id,
            "st": int(status) if status is not None else None,
            "ch": int(channel) if channel is not None else None,
            "k": kind,
            "ac": after[0] if after else None,
            "ai": after[1] if after else None,
            "lim": limit,
        },
    )
    return [_delivery(row) for row in rows]


# --- templates --------------------------------------------------------------------------------


async def latest_template(
    s: AsyncSession, tenant_id: str, kind: str, channel: Channel, locales: Sequence[str]
) -> tuple[str, TemplateText] | None:
    """The tenant's newest version for the first locale of `locales` that has one."""
    rows = await s.execute(
        text(
            "SELECT DISTINCT ON (locale) locale, version, subject, body FROM templates "
            "WHERE tenant_id = :t AND kind = :k AND channel = :ch AND locale = ANY(:l) "
            "ORDER BY locale, version DESC"
        ),
        {"t": tenant_id, "k": kind, "ch": int(channel), "l": list(locales)},
    )
    by_locale = {row.locale: TemplateText(row.subject, row.body, row.version) for row in rows}
    for locale in locales:
        if locale in by_locale:
            return locale, by_locale[locale]
    return None


@dataclass(frozen=True)
class TemplateRow:
    kind: str
    channel: Channel
    locale: str
    version: int
    subject: str
    body: str
    created_by: str
    created_at: dt.datetime | None


async def add_template_version(
    s: AsyncSession,
    tenant_id: str,
    *,
    kind: str,
    channel: Channel,
    locale: str,
    subject: str,
    body: str,
    created_by: str,
    now: dt.datetime,
) -> TemplateRow:
    # The advisory lock serialises concurrent version bumps of one template.
    await s.execute(
        text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
        {"key": f"{tenant_id}|{kind}|{int(channel)}|{locale}"},
    )
    version = await s.scalar(
        text(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM templates WHERE tenant_id = :t "
            "AND kind = :k AND channel = :ch AND locale = :l"
        ),
        {"t": tenant_id, "k": kind, "ch": int(channel), "l": locale},
    )
    await s.execute(
        text(
            "INSERT INTO templates (tenant_id, kind, channel, locale, version, subject, body, "
            "created_by, created_at) VALUES (:t, :k, :ch, :l, :v, :su, :b, :by, :now)"
        ),
        {"t": tenant_id, "k": kind, "ch": int(channel), "l": locale, "v": version, "su": subject,
         "b": body, "by": created_by, "now": now},
    )  # fmt: skip
    return TemplateRow(kind, channel, locale, int(version or 1), subject, body, created_by, now)


async def latest_templates(s: AsyncSession, tenant_id: str, kind: str) -> list[TemplateRow]:
    rows = await s.execute(
        text(
            "SELECT DISTINCT ON (kind, channel, locale) * FROM templates WHERE tenant_id = :t "
            "AND (:k = '' OR kind = :k) ORDER BY kind, channel, locale, version DESC"
        ),
        {"t": tenant_id, "k": kind},
    )
    return [
        TemplateRow(
            r.kind, Channel(r.channel), r.locale, r.version, r.subject, r.body, r.created_by,
            r.created_at,
        )
        for r in rows
    ]  # fmt: skip


# --- inbox ------------------------------------------------------------------------------------


async def insert_notifications(
    s: AsyncSession, items: Sequence[NewNotification], now: dt.datetime
) -> list[InboxItem]:
    """Inbox rows of in-app deliveries in one statement (a delivery's row exists at most once);
    returns the new ones, each with its user's unread count once it is stored."""
    if not items:
        return []
    rows = [
        _InboxRow(random_uuid(), i.delivery_id, i.tenant_id, i.user_id, i.kind, i.category,
                  InboxText(i.title, i.body, i.data))
        for i in items
    ]  # fmt: skip
    result = await s.execute(
        _STORE_INBOX,
        {"now": now, "inbox": _inbox_json(rows)},
    )  # fmt: skip
    inserted = {str(row.notification_id) for row in result}
    return await _inbox_items(s, rows, inserted, now)


async def unread_count(s: AsyncSession, tenant_id: str, user_id: str) -> int:
    count = await s.scalar(
        text("SELECT unread FROM inbox_unread WHERE tenant_id = :t AND user_id = :u"),
        {"t": tenant_id, "u": user_id},
    )
    return int(count or 0)


def _item(row: Any) -> InboxItem:
    return InboxItem(
        str(row.notification_id), row.tenant_id, row.user_id, row.kind, Category(row.category),
        row.title, row.body, row.data, row.created_at, row.read_at,
    )  # fmt: skip


async def list_inbox(
    s: AsyncSession,
    tenant_id: str,
    user_id: str,
    *,
    unread_only: bool,
    after: tuple[dt.datetime, str] | None,
    limit: int,
) -> list[InboxItem]:
    rows = await s.execute(
        text(
            "SELECT * FROM notifications WHERE tenant_id = :t AND user_id = :u "
            "AND (NOT :unread OR read_at IS NULL) "
            "AND (CAST(:ac AS timestamptz) IS NULL OR (created_at, notification_id) < "
            "(CAST(:ac AS timestamptz), CAST(:ai AS uuid))) "
            "ORDER BY created_at DESC, notification_id DESC LIMIT :lim"
        ),
        {"t": tenant_id, "u": user_id, "unread": unread_only, "ac": after[0] if after else None,
         "ai": after[1] if after else None, "lim": limit},
    )  # fmt: skip
    return [_item(row) for row in rows]


async def mark_read(
    s: AsyncSession,
    tenant_id: str,
    user_id: str,
    notification_ids: Sequence[str] | None,
    now: dt.datetime,
) -> int:
    result = await s.execute(
        text(
            "UPDATE notifications SET read_at = :now WHERE tenant_id = :t AND user_id = :u "
            "AND read_at IS NULL AND (CAST(:ids AS uuid[]) IS NULL OR notification_id = ANY(:ids))"
        ),
        {"t": tenant_id, "u": user_id, "now": now,
         "ids": list(notification_ids) if notification_ids is not None else None},
    )  # fmt: skip
    return int(getattr(result, "rowcount", 0) or 0)
