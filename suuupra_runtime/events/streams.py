"""JetStream streams: one per domain, created or updated idempotently at service start.

Public API::

    StreamSpec.for_domain("identity")        # name IDENTITY, subjects suuupra.identity.v1.>
    StreamSpec(name, subjects, duplicate_window_seconds=120, replicas=1, max_age_seconds=None)
    await ensure_streams(js, [StreamSpec.for_domain("identity"), ...])
    await provision_streams(nats_url, specs)   # the same on a short-lived connection
    stream_name_for(domain) -> "IDENTITY";  domain_of_subject("suuupra.identity.v1.X") -> "identity"

File storage always (events are the system's history). The duplicate window (≥ 2 min) bounds how
late a relay may re-publish an event and still have JetStream drop the copy by `Nats-Msg-Id`;
the consumers' inbox tables catch anything later.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import nats
from nats.js.api import StorageType, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError, NotFoundError

__all__ = [
    "StreamSpec",
    "domain_of_subject",
    "ensure_streams",
    "provision_streams",
    "stream_name_for",
]

MIN_DUPLICATE_WINDOW_SECONDS = 120.0


def stream_name_for(domain: str) -> str:
    return domain.upper().replace("-", "_").replace(".", "_")


def domain_of_subject(subject: str) -> str:
    parts = subject.split(".")
    if len(parts) < 4 or parts[0] != "suuupra":
        raise ValueError(f"{subject!r} is not a suuupra.<domain>.v1.<Event> subject")
    return parts[1]


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    duplicate_window_seconds: float = MIN_DUPLICATE_WINDOW_SECONDS
    replicas: int = 1
    max_age_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.duplicate_window_seconds < MIN_DUPLICATE_WINDOW_SECONDS:
            raise ValueError("duplicate window must be at least 2 minutes")

    @classmethod
    def for_domain(cls, domain: str, *, replicas: int = 1) -> StreamSpec:
        return cls(stream_name_for(domain), (f"suuupra.{domain}.v1.>",), replicas=replicas)

    def config(self) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            subjects=list(self.subjects),
            storage=StorageType.FILE,
            duplicate_window=self.duplicate_window_seconds,
            num_replicas=self.replicas,
            max_age=self.max_age_seconds or 0,
        )


async def provision_streams(nats_url: str, specs: Iterable[StreamSpec]) -> None:
    """`ensure_streams` on a short-lived connection (for a service's `on_start`)."""
    nc = await nats.connect(nats_url, name="suuupra-provision-streams")
    try:
        await ensure_streams(nc.jetstream(), specs)
    finally:
        await nc.close()


async def ensure_streams(js: JetStreamContext, specs: Iterable[StreamSpec]) -> None:
    """Create each stream or bring an existing one to its spec; safe to race with other starters."""
    for spec in specs:
        config = spec.config()
        try:
            await js.stream_info(spec.name)
        except NotFoundError:
            try:
                await js.add_stream(config)
                continue
            except BadRequestError:
                pass  # another process created it between our lookup and add; update below
        await js.update_stream(config)
