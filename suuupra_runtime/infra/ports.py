"""Free TCP ports on loopback for servers started by tests and the dev runner.

Public API: `free_port() -> int`.
"""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the kernel reports free on `host` right now.

    The port is released before returning, so another process could take it; callers start their
    server immediately and treat a bind failure as retryable.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
