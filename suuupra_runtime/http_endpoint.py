"""A tiny asyncio HTTP/1.1 server (stdlib only) for `/metrics`, `/healthz` and service routes.

It answers GET and HEAD on exact paths, one request per connection, with bounded header size and
read time, so a slow or malformed client cannot pin it. It is meant for loopback (Prometheus
scrapes through the pod, Envoy routes `http_paths` such as identity's `/.well-known/` to it), not
as a general web server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

HttpHandler = Callable[[], Awaitable[tuple[int, str, bytes]]]

_MAX_HEADER_BYTES = 16 * 1024
_READ_TIMEOUT_SECONDS = 5.0
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_log = logging.getLogger("suuupra.http")


class HttpEndpoint:
    def __init__(self, routes: Mapping[str, HttpHandler], host: str, port: int) -> None:
        self._routes = dict(routes)
        self._host = host
        self._requested_port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("HTTP endpoint is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self._host, self._requested_port, reuse_address=True
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, content_type, body, head = await asyncio.wait_for(
                self._respond(reader), _READ_TIMEOUT_SECONDS
            )
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
            ValueError,
        ):
            status, content_type, body, head = 400, "text/plain", b"bad request\n", False
        try:
            reason = _REASONS.get(status, "Status")
            header = (
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode("latin-1")
            writer.write(header if head else header + body)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[int, str, bytes, bool]:
        raw = await reader.readuntil(b"\r\n\r\n")
        if len(raw) > _MAX_HEADER_BYTES:
            raise ValueError("headers too large")
        request_line = raw.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3:
            raise ValueError("malformed request line")
        method, target, _version = parts
        path = target.split("?", 1)[0]
        if method not in {"GET", "HEAD"}:
            return 405, "text/plain", b"method not allowed\n", False
        handler = self._routes.get(path)
        if handler is None:
            return 404, "text/plain", b"not found\n", method == "HEAD"
        try:
            status, content_type, body = await handler()
        except Exception:
            _log.exception("HTTP route %s failed", path)
            return 500, "text/plain", b"internal error\n", method == "HEAD"
        return status, content_type, body, method == "HEAD"


__all__ = ["HttpEndpoint", "HttpHandler"]
