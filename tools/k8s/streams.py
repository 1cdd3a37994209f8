"""JetStream provisioning, run inside the cluster by the `nats-streams` Job
(`python -m tools.k8s streams --replicas 3`): one stream per topology stream, replicated on the
NATS nodes. The stream definition is the runtime's own (`suuupra_runtime.events.streams`), the
one each service also ensures at start, so the Job and the services never fight over a stream's
settings; services read the replica count from `SUUUPRA_STREAM_REPLICAS` (base ConfigMap).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from suuupra_runtime.events.streams import StreamSpec, ensure_streams
from suuupra_runtime.mesh.topology import Topology

STREAM_REPLICAS = 3
REPLICAS_VARIABLE = "SUUUPRA_STREAM_REPLICAS"


def stream_specs(topology: Topology, replicas: int) -> list[StreamSpec]:
    """One stream per domain: `IDENTITY` carries `suuupra.identity.v1.>` (DESIGN.md §6)."""
    return [
        StreamSpec.for_domain(stream.lower(), replicas=replicas)
        for _, spec in sorted(topology.services.items())
        for stream in spec.streams
    ]


async def provision_streams(
    nats_url: str, specs: Sequence[StreamSpec], wait_seconds: float
) -> None:
    """Wait for the broker (it may still be forming its cluster), then create each stream or
    bring it to its spec in place (e.g. raise its replica count)."""
    import nats

    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            client = await nats.connect(nats_url, connect_timeout=5, allow_reconnect=False)
            break
        except Exception as error:  # not up yet: retry until the deadline
            if time.monotonic() > deadline:
                raise SystemExit(f"cannot reach NATS at {nats_url}: {error}") from error
            await asyncio.sleep(2)
    try:
        # JetStream answers only once the cluster has elected its meta leader.
        jetstream = client.jetstream(timeout=30)
        await ensure_streams(jetstream, specs)
        for spec in specs:
            info = await jetstream.stream_info(spec.name)
            print(
                f"stream {spec.name} on {list(spec.subjects)}: {info.config.num_replicas} replicas"
            )
    finally:
        await client.close()
