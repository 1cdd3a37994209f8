"""The port offset: one number shifts every port of the topology, so a second platform (a test
run, a benchmark) can run beside a developer's without touching their ports."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator

from suuupra_runtime.mesh.topology import PORT_BLOCK_SIZE, Topology

MAX_PORT = 65535


def shift_ports(topology: Topology, offset: int) -> Topology:
    """The same topology with every port (infrastructure, edge and service blocks) + `offset`."""
    if offset == 0:
        return topology
    infra = topology.infrastructure
    shifted = dataclasses.replace(
        topology,
        infrastructure=dataclasses.replace(
            infra,
            postgres_port=infra.postgres_port + offset,
            nats_port=infra.nats_port + offset,
            nats_monitor_port=infra.nats_monitor_port + offset,
            smtp_port=None if infra.smtp_port is None else infra.smtp_port + offset,
        ),
        edge=dataclasses.replace(topology.edge, port_block=topology.edge.port_block + offset),
        services={
            name: dataclasses.replace(spec, port_block=spec.port_block + offset)
            for name, spec in topology.services.items()
        },
    )
    bad = [p for p in all_ports(shifted) if not 1024 <= p <= MAX_PORT]
    if bad:
        raise ValueError(f"port offset {offset} moves ports out of 1024..{MAX_PORT}: {bad[:5]}")
    return shifted


def all_ports(topology: Topology, *, include_infrastructure: bool = True) -> Iterator[int]:
    """Every TCP port a dev platform for `topology` listens on."""
    if include_infrastructure:
        yield from topology.infrastructure.ports()
    for block in (topology.edge.port_block, *(s.port_block for s in topology.services.values())):
        yield from range(block, block + PORT_BLOCK_SIZE)


def busy_ports(ports: Iterator[int] | list[int], host: str = "127.0.0.1") -> list[int]:
    """The ports someone already listens on (a second `./dev up`, another server)."""
    taken = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.2)
            if sock.connect_ex((host, port)) == 0:
                taken.append(port)
    return taken
