"""Domain events: transactional outbox, relay, JetStream streams, consumers, inbox, dead letters.

Public API (importable from here or from the submodule named in brackets):
- `StreamSpec`, `ensure_streams(js, specs)`, `provision_streams(nats_url, specs)`,
  `stream_name_for(domain)` [streams]
- `OutboxRelay(db, nats_url, ...)` with `run()` / `publish_pending()` [relay]
- `EventConsumer(db, nats_url, durable=, stream=, handlers=, batch_handlers=, max_deliver=,
  backoff=, batch_size=)` with `run()` / `process(msg)` / `process_batch(msgs)`; `Outcome`,
  `Received`, `EventHandler`, `BatchHandler` [consumer]
- `EventEnvelope`, `current_envelope()` [envelope]
- `list_dead_letters(db, consumer=None)`, `replay_dead_letter(db, nc, id)`, `DeadLetter`
  [dead_letters]; CLI `python -m suuupra_runtime.events.dead_letters`
- `replay_stream(nats_url, stream=, handlers=)` [replay]
- `NatsLink(nats_url, name=, streams=)`: connection, stream provisioning, readiness [link]
- header names [headers]

Events are added to the outbox with `UnitOfWork.add_event` (`suuupra_runtime.db`). Submodules
are loaded lazily so that `suuupra_runtime.db` can use `events.headers` without an import cycle.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from suuupra_runtime.events.consumer import (
        BatchHandler,
        EventConsumer,
        EventHandler,
        Outcome,
        Received,
    )
    from suuupra_runtime.events.dead_letters import (
        DeadLetter,
        list_dead_letters,
        replay_dead_letter,
    )
    from suuupra_runtime.events.envelope import EventEnvelope, current_envelope
    from suuupra_runtime.events.link import NatsLink
    from suuupra_runtime.events.relay import OutboxRelay
    from suuupra_runtime.events.replay import ReplayHandler, replay_stream
    from suuupra_runtime.events.streams import (
        StreamSpec,
        ensure_streams,
        provision_streams,
        stream_name_for,
    )

_EXPORTS = {
    "BatchHandler": "consumer",
    "EventConsumer": "consumer",
    "EventHandler": "consumer",
    "Outcome": "consumer",
    "Received": "consumer",
    "DeadLetter": "dead_letters",
    "list_dead_letters": "dead_letters",
    "replay_dead_letter": "dead_letters",
    "EventEnvelope": "envelope",
    "current_envelope": "envelope",
    "NatsLink": "link",
    "OutboxRelay": "relay",
    "ReplayHandler": "replay",
    "replay_stream": "replay",
    "StreamSpec": "streams",
    "ensure_streams": "streams",
    "provision_streams": "streams",
    "stream_name_for": "streams",
}

__all__ = [
    "BatchHandler",
    "DeadLetter",
    "EventConsumer",
    "EventEnvelope",
    "EventHandler",
    "NatsLink",
    "OutboxRelay",
    "Outcome",
    "Received",
    "ReplayHandler",
    "StreamSpec",
    "current_envelope",
    "ensure_streams",
    "list_dead_letters",
    "provision_streams",
    "replay_dead_letter",
    "replay_stream",
    "stream_name_for",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
