"""What a consumer knows about a delivered event, and decoding by the event-type header.

Public API: `EventEnvelope`, `EventTypes` (full proto name → message class), `current_envelope()`
(the envelope of the event being handled, inside a consumer handler), `DecodeError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError as ProtoDecodeError
from google.protobuf.message import Message

from suuupra_runtime.events import headers as h

__all__ = ["DecodeError", "EventEnvelope", "EventTypes", "current_envelope"]


class DecodeError(Exception):
    """The message claims a known event type but its payload does not parse (poison)."""


@dataclass(frozen=True)
class EventEnvelope:
    event_id: str
    event_type: str
    subject: str
    tenant_id: str | None
    occurred_at: str | None
    headers: Mapping[str, str] = field(default_factory=dict)
    stream_sequence: int | None = None
    num_delivered: int = 1

    @classmethod
    def from_message(
        cls,
        subject: str,
        headers: Mapping[str, str] | None,
        *,
        stream_sequence: int | None = None,
        num_delivered: int = 1,
    ) -> EventEnvelope:
        hdrs = dict(headers or {})
        return cls(
            event_id=hdrs.get(h.EVENT_ID) or hdrs.get(h.MSG_ID) or "",
            event_type=hdrs.get(h.EVENT_TYPE) or subject,
            subject=subject,
            tenant_id=hdrs.get(h.TENANT) or None,
            occurred_at=hdrs.get(h.OCCURRED_AT),
            headers=hdrs,
            stream_sequence=stream_sequence,
            num_delivered=num_delivered,
        )


class EventTypes:
    """Message classes by full proto name, for decoding by the `Suuupra-Event-Type` header."""

    def __init__(self, types: Iterable[type[Message]]) -> None:
        self._by_name = {t.DESCRIPTOR.full_name: t for t in types}

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def decode(self, envelope: EventEnvelope, payload: bytes) -> Message | None:
        """The decoded event, or None when its type is not registered here."""
        message_type = self._by_name.get(envelope.event_type)
        if message_type is None:
            return None
        try:
            return message_type.FromString(payload)
        except ProtoDecodeError as exc:
            raise DecodeError(f"{envelope.event_type} payload does not parse: {exc}") from exc


_current: ContextVar[EventEnvelope | None] = ContextVar("suuupra_event_envelope", default=None)


def current_envelope() -> EventEnvelope:
    """The envelope of the event the current consumer handler is processing."""
    envelope = _current.get()
    if envelope is None:
        raise RuntimeError("current_envelope() called outside an event handler")
    return envelope


def set_current_envelope(envelope: EventEnvelope | None) -> object:
    return _current.set(envelope)


def reset_current_envelope(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]
