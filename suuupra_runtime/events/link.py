"""`NatsLink`: a service's long-lived NATS connection for stream provisioning and readiness.

    link = NatsLink(nats_url, name="courses", streams=[StreamSpec.for_domain("courses"), ...])
    ServiceDefinition(readiness=[..., link.ready], background=[link.maintain, ...],
                      on_stop=[link.close, ...])

Connecting retries in the background, so the service starts (health NOT_SERVING) while NATS is
still down, and becomes ready once it is reachable and its streams exist. A consumer of another
domain's events lists that domain's stream too: whoever starts first creates it, with the same
spec, so services can start in any order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import nats
from nats.aio.client import Client

from suuupra_runtime.events.streams import StreamSpec, ensure_streams

log = logging.getLogger(__name__)

__all__ = ["NatsLink"]


class NatsLink:
    def __init__(
        self,
        url: str,
        *,
        name: str,
        streams: Sequence[StreamSpec] = (),
        retry_seconds: float = 1.0,
        no_echo: bool = False,
    ) -> None:
        self.url = url
        self.name = name
        self.streams = list(streams)
        self.retry_seconds = retry_seconds
        # The server does not send this connection's own publications back to its own
        # subscriptions (for a process that fans out locally what it publishes to others).
        self.no_echo = no_echo
        self._nc: Client | None = None

    @property
    def client(self) -> Client | None:
        """The connection once established (None before), e.g. to publish ephemeral messages."""
        return self._nc

    async def ready(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def maintain(self) -> None:
        while self._nc is None:
            try:
                nc = await nats.connect(
                    self.url,
                    name=self.name,
                    max_reconnect_attempts=-1,
                    connect_timeout=2,
                    no_echo=self.no_echo,
                )
                try:
                    await ensure_streams(nc.jetstream(), self.streams)
                except BaseException:
                    await nc.close()
                    raise
                self._nc = nc
            except asyncio.CancelledError:
                raise
            except Exception:  # retried: NATS may come up after us
                log.warning("NATS not reachable yet at %s; retrying", self.url, exc_info=True)
                await asyncio.sleep(self.retry_seconds)
        await asyncio.Event().wait()  # stay alive; cancelled at stop

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()
