"""Request-scoped values the interceptor sets for each RPC (contextvars: one value per RPC task).

    from suuupra_runtime.request_context import current_request_id, remaining_seconds
    current_request_id()   # the RPC's x-request-id (minted if the caller sent none), or None
    remaining_seconds()    # time left before the caller's deadline, or None without a deadline

Logs, outgoing calls (`clients.call_options`) and event headers read these.
"""

from __future__ import annotations

import time
from contextvars import ContextVar

REQUEST_ID_HEADER = "x-request-id"

request_id_var: ContextVar[str | None] = ContextVar("suuupra_request_id", default=None)
# Absolute deadline on the time.monotonic() clock.
deadline_var: ContextVar[float | None] = ContextVar("suuupra_deadline", default=None)


def current_request_id() -> str | None:
    return request_id_var.get()


def remaining_seconds() -> float | None:
    """Seconds left until the current RPC's deadline (may be <= 0), None when it has none."""
    deadline = deadline_var.get()
    return None if deadline is None else deadline - time.monotonic()


__all__ = [
    "REQUEST_ID_HEADER",
    "current_request_id",
    "deadline_var",
    "remaining_seconds",
    "request_id_var",
]
