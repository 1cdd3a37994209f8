"""A local SMTP sink (aiosmtpd): accepts every mail, keeps it in memory and, when given a
directory, in a Maildir a developer can read (`./dev up` runs one on the topology's
`infrastructure.smtp_port`). Tests script SMTP replies per recipient to simulate bounces and
temporary failures.

    sink = SmtpSink(port=0, maildir=Path(".suuupra/mail"))
    sink.start()                        # its own thread and event loop
    sink.script("x@example.org", "451 4.3.0 try later", "250 OK")   # per-attempt replies
    mails = sink.wait_for(lambda ms: len(ms) >= 1, timeout=5)
    sink.stop()

    python -m suuupra_runtime.infra.smtp_sink --port 17425 --maildir .suuupra/mail
"""

from __future__ import annotations

import argparse
import mailbox
import signal
import threading
import time
from collections.abc import Callable, Sequence
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from suuupra_runtime.infra.ports import free_port

__all__ = ["SmtpSink"]


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        reply = self.sink.next_reply(address)
        if reply is not None and not reply.startswith("2"):
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        raw = envelope.original_content or envelope.content
        self.sink.received(bytes(raw))
        return "250 Message accepted for delivery"


class SmtpSink:
    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, maildir: Path | None = None
    ) -> None:
        self.host = host
        self._requested_port = port
        self.maildir = maildir
        self._messages: list[EmailMessage] = []
        self._scripts: dict[str, list[str]] = {}
        self._lock = threading.Condition()
        self._controller: Controller | None = None
        self._mailbox = mailbox.Maildir(maildir, create=True) if maildir is not None else None

    @property
    def port(self) -> int:
        if self._controller is None:
            raise RuntimeError("SMTP sink is not started")
        return int(self._controller.port)

    def start(self) -> None:
        # aiosmtpd checks readiness by connecting to the port it was given, so pick a free one
        # here instead of binding port 0. ready_timeout covers a slow start on a loaded machine.
        port = self._requested_port or free_port()
        self._controller = Controller(
            _Handler(self), hostname=self.host, port=port, ready_timeout=10
        )
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- scripted replies ---------------------------------------------------------------------

    def script(self, address: str, *replies: str) -> None:
        """Replies to RCPT TO `address`, one per attempt (e.g. "451 4.3.0 later", "550 no");
        once used up, the address is accepted."""
        with self._lock:
            self._scripts.setdefault(address.lower(), []).extend(replies)

    def next_reply(self, address: str) -> str | None:
        with self._lock:
            queue = self._scripts.get(address.lower())
            return queue.pop(0) if queue else None

    # --- received mail ------------------------------------------------------------------------

    def received(self, raw: bytes) -> None:
        parsed = message_from_bytes(raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        with self._lock:
            self._messages.append(parsed)
            if self._mailbox is not None:
                self._mailbox.add(raw)
            self._lock.notify_all()

    @property
    def messages(self) -> list[EmailMessage]:
        with self._lock:
            return list(self._messages)

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if address.lower() in str(m["To"]).lower()]

    def wait_for(
        self, condition: Callable[[Sequence[EmailMessage]], bool], timeout: float = 10.0
    ) -> list[EmailMessage]:
        """Blocks (a thread, not the event loop: use `asyncio.to_thread`) until `condition`."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not condition(self._messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no matching mail within {timeout}s")
                self._lock.wait(left)
            return list(self._messages)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m suuupra_runtime.infra.smtp_sink")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", type=Path, required=True)
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with SmtpSink(host=args.host, port=args.port, maildir=args.maildir):
        print(f"SMTP sink on {args.host}:{args.port}, Maildir {args.maildir}", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
