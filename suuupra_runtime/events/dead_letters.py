"""Dead letters: events a consumer gave up on, kept visible and replayable.

Public API::

    rows = await list_dead_letters(db, consumer=None, include_replayed=True)  # newest first
    await replay_dead_letter(db, nc, dead_letter_id)   # nc: a connected nats Client

CLI (operators)::

    python -m suuupra_runtime.events.dead_letters --database-url URL list [--consumer NAME]
    python -m suuupra_runtime.events.dead_letters --database-url URL [--nats-url URL] replay ID

`list` prints one JSON object per line. `--database-url` defaults to `DATABASE_URL`,
`--nats-url` to `NATS_URL`.

Replay re-publishes the stored payload and headers to the original subject, so the durable
consumer handles the event again (its inbox has no row for it, because the failed attempts rolled
back). The message gets a fresh `Nats-Msg-Id` (`<event id>.replay.<dead letter id>`), otherwise
JetStream would drop it as a duplicate inside its window; `Suuupra-Event-Id` stays the original
id, so other consumers of the stream, which handled the event the first time, skip it through
their inboxes. A dead letter is replayed once (`FailedPrecondition` afterwards); `replayed_at` is
set only after JetStream acknowledged the re-publish.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import nats
from nats.aio.client import Client
from sqlalchemy import select, update
from sqlalchemy.sql import func

from suuupra_runtime.db import Database, dead_letters_table
from suuupra_runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from suuupra_runtime.errors import FieldViolation as _FieldViolation
from suuupra_runtime.errors import PreconditionViolation as _PreconditionViolation
from suuupra_runtime.events import headers as h

__all__ = ["DeadLetter", "list_dead_letters", "main", "replay_dead_letter"]


@dataclass(frozen=True)
class DeadLetter:
    id: str
    consumer: str
    stream: str
    subject: str
    event_id: str
    event_type: str
    error: str
    attempts: int
    first_failed_at: dt.datetime
    last_failed_at: dt.datetime
    replayed_at: dt.datetime | None
    headers: dict[str, str]
    payload: bytes

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["payload"] = self.payload.hex()
        for key in ("first_failed_at", "last_failed_at", "replayed_at"):
            value = data[key]
            data[key] = value.isoformat() if value is not None else None
        return data


def _row_to_dead_letter(row: Any) -> DeadLetter:
    return DeadLetter(
        id=str(row.id),
        consumer=row.consumer,
        stream=row.stream,
        subject=row.subject,
        event_id=row.event_id,
        event_type=row.event_type,
        error=row.error,
        attempts=row.attempts,
        first_failed_at=row.first_failed_at,
        last_failed_at=row.last_failed_at,
        replayed_at=row.replayed_at,
        headers=dict(row.headers),
        payload=bytes(row.payload),
    )


async def list_dead_letters(
    db: Database, consumer: str | None = None, *, include_replayed: bool = True
) -> list[DeadLetter]:
    table = dead_letters_table
    stmt = select(table).order_by(table.c.last_failed_at.desc())
    if consumer is not None:
        stmt = stmt.where(table.c.consumer == consumer)
    if not include_replayed:
        stmt = stmt.where(table.c.replayed_at.is_(None))
    async with db.engine.connect() as conn:
        return [_row_to_dead_letter(row) for row in (await conn.execute(stmt)).all()]


def _parse_id(dead_letter_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(dead_letter_id)
    except ValueError:
        raise InvalidArgument([_FieldViolation("id", "must be a UUID")]) from None


async def replay_dead_letter(db: Database, nc: Client, dead_letter_id: str) -> DeadLetter:
    """Re-publish one dead letter to its original subject; returns it with `replayed_at` set."""
    table = dead_letters_table
    key = _parse_id(dead_letter_id)
    async with db.sessions() as session, session.begin():
        # Row lock: two operators replaying the same id cannot both publish it.
        row = (
            await session.execute(select(table).where(table.c.id == key).with_for_update())
        ).one_or_none()
        if row is None:
            raise NotFound(
                f"dead letter {dead_letter_id} not found", reason="DEAD_LETTER_NOT_FOUND"
            )
        if row.replayed_at is not None:
            raise FailedPrecondition(
                f"dead letter {dead_letter_id} was already replayed",
                [_PreconditionViolation("REPLAYED", f"dead_letters/{dead_letter_id}", "replayed")],
                reason="DEAD_LETTER_ALREADY_REPLAYED",
            )
        headers = {k: v for k, v in dict(row.headers).items() if not k.startswith("Nats-")}
        headers[h.MSG_ID] = f"{row.event_id}.replay.{row.id}"
        headers.setdefault(h.EVENT_ID, row.event_id)
        await nc.jetstream().publish(row.subject, bytes(row.payload), headers=headers)
        replayed = (
            await session.execute(
                update(table)
                .where(table.c.id == key)
                .values(replayed_at=func.now())
                .returning(table)
            )
        ).one()
    return _row_to_dead_letter(replayed)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m suuupra_runtime.events.dead_letters",
        description="List and replay events consumers gave up on.",
    )
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--nats-url", default=os.environ.get("NATS_URL"))
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="print dead letters as JSON lines, newest first")
    listing.add_argument("--consumer")
    listing.add_argument("--pending", action="store_true", help="only those not replayed yet")
    replay = commands.add_parser("replay", help="re-publish one dead letter")
    replay.add_argument("id")
    return parser


async def _main(args: argparse.Namespace) -> int:
    db = await Database.connect(args.database_url, pool_size=1)
    try:
        if args.command == "list":
            for letter in await list_dead_letters(
                db, args.consumer, include_replayed=not args.pending
            ):
                print(json.dumps(letter.to_json(), sort_keys=True))
            return 0
        if not args.nats_url:
            print("--nats-url (or NATS_URL) is required for replay", file=sys.stderr)
            return 2
        nc = await nats.connect(args.nats_url)
        try:
            letter = await replay_dead_letter(db, nc, args.id)
        finally:
            await nc.close()
        print(json.dumps(letter.to_json(), sort_keys=True))
        return 0
    except (NotFound, FailedPrecondition, InvalidArgument) as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await db.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.database_url:
        print("--database-url (or DATABASE_URL) is required", file=sys.stderr)
        return 2
    return asyncio.run(_main(args))


if __name__ == "__main__":
    raise SystemExit(main())
