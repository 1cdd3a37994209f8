"""NATS helpers for tests.

Public API:
- `async delete_all_streams(nats_url)`: removes every JetStream stream on the server (used when a
  test runs against an external, test-only server given by `NATS_URL`).
"""

from __future__ import annotations

import nats

__all__ = ["delete_all_streams"]


async def delete_all_streams(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            await js.delete_stream(info.config.name or "")
    finally:
        await nc.close()
