"""JetStream provisioning, run inside the cluster by the `nats-streams` Job
(`python -m tools.k8s streams`): one stream per topology stream, replicated across the nodes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from suuupra_runtime.mesh.topology import Topology

STREAM_REPLICAS = 3


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    replicas: int


def stream_specs(topology: Topology, replicas: int) -> list[StreamSpec]:
    """One stream per domain: `IDENTITY` carries `suuupra.identity.v1.>` (DESIGN.md §6)."""
    return [
        StreamSpec(stream, (f"suuupra.{stream.lower()}.v1.>",), replicas)
        for _, spec in sorted(topology.services.items())
        for stream in spec.streams
    ]


async def ensure_streams(nats_url: str, specs: Sequence[StreamSpec], wait_seconds: float) -> None:
    """Create each stream, or update it in place (e.g. raise its replica count). File storage;
    durability against power loss comes from the servers' `sync_interval: always`."""
    import nats
    from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
    from nats.js.errors import NotFoundError

    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            client = await nats.connect(nats_url, connect_timeout=5, allow_reconnect=False)
            break
        except Exception as error:  # the broker may still be starting: retry until the deadline
            if time.monotonic() > deadline:
                raise SystemExit(f"cannot reach NATS at {nats_url}: {error}") from error
            await asyncio.sleep(2)
    try:
        jetstream = client.jetstream(timeout=30)
        for spec in specs:
            config = StreamConfig(
                name=spec.name,
                subjects=list(spec.subjects),
                num_replicas=spec.replicas,
                storage=StorageType.FILE,
                retention=RetentionPolicy.LIMITS,
                discard=DiscardPolicy.OLD,
                duplicate_window=120.0,  # matches the outbox relay's Nats-Msg-Id dedupe
                deny_delete=True,  # replaying a stream from the start must see every event
                deny_purge=True,
            )
            try:
                await jetstream.stream_info(spec.name)
            except NotFoundError:
                await jetstream.add_stream(config)
                print(f"created stream {spec.name} (replicas={spec.replicas})")
            else:
                await jetstream.update_stream(config)
                print(f"updated stream {spec.name} (replicas={spec.replicas})")
    finally:
        await client.close()
