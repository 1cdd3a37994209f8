"""Domain events → `files_events.proto` messages, queued on the unit of work's outbox."""

from __future__ import annotations

from suuupra.files.v1 import files_events_pb2 as ev

from services.files.handlers import DeletedEvent, StoredEvent
from suuupra_runtime.db import UnitOfWork
from suuupra_runtime.timestamps import timestamp_pb as _ts


def emit(uow: UnitOfWork, event: StoredEvent | DeletedEvent) -> None:
    match event:
        case StoredEvent(file=f):
            uow.add_event(
                ev.FileStored(
                    tenant_id=f.tenant_id,
                    file_id=f.file_id,
                    version=f.version,
                    owner_id=f.owner_id,
                    purpose=f.purpose,  # type: ignore[arg-type]
                    name=f.name,
                    content_type=f.content_type,
                    size_bytes=f.size_bytes,
                    sha256=f.sha256,
                    occurred_at=_ts(event.occurred_at),
                ),
                key=f.file_id,
            )
        case DeletedEvent():
            uow.add_event(
                ev.FileDeleted(
                    tenant_id=event.tenant_id,
                    file_id=event.file_id,
                    owner_id=event.owner_id,
                    purge_time=_ts(event.purge_time),
                    occurred_at=_ts(event.occurred_at),
                ),
                key=event.file_id,
            )
