"""Channel providers: how a rendered message leaves the service (SMTP, SMS API, push API).

Each provider raises `TransientFailure` (retry later: timeouts, 429, 5xx, SMTP 4xx) or
`PermanentFailure` (never retry: invalid number, unknown device, SMTP 5xx; `bounced` when the
address itself was refused) and returns the provider's message id on success.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class OutgoingMessage:
    address: str  # email address, E.164 number, or comma-separated push tokens
    subject: str
    body: str
    headers: Mapping[str, str] = field(default_factory=dict)  # email only
    data: Mapping[str, str] = field(default_factory=dict)  # push only


class TransientFailure(Exception):  # noqa: N818 (a provider outcome, not a programming error)
    pass


class PermanentFailure(Exception):  # noqa: N818
    def __init__(self, message: str, *, bounced: bool = False) -> None:
        super().__init__(message)
        self.bounced = bounced


class Provider(Protocol):
    async def send(self, message: OutgoingMessage) -> str: ...


class NotConfigured:
    """A channel without a provider: every send fails permanently with a clear reason."""

    def __init__(self, channel: str) -> None:
        self.channel = channel

    async def send(self, message: OutgoingMessage) -> str:
        raise PermanentFailure(f"no {self.channel} provider is configured")


__all__ = ["NotConfigured", "OutgoingMessage", "PermanentFailure", "Provider", "TransientFailure"]
