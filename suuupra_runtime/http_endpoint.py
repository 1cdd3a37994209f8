"""A small asyncio HTTP/1.1 server (stdlib only) for `/metrics`, `/healthz` and service routes.

Two kinds of routes share it:

* exact-path routes (`HttpHandler`, no arguments) for fixed documents — metrics, health, JWKS;
* prefix routes (`HttpRequestHandler`, given the parsed `HttpRequest`) for what a service serves
  under its `http_paths` — signed file downloads, unsubscribe links. They may answer GET, HEAD
  and POST, set response headers and stream a body of known length.

One request per connection, bounded header and body size, bounded time to read the request, so a
slow or malformed client cannot pin it. It is meant for loopback behind Envoy, not as a general
web server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote

HttpHandler = Callable[[], Awaitable[tuple[int, str, bytes]]]

_MAX_HEADER_BYTES = 16 * 1024
_MAX_BODY_BYTES = 64 * 1024
_READ_TIMEOUT_SECONDS = 5.0
_REASONS = {
    200: "OK",
    204: "No Content",
    206: "Partial Content",
    302: "Found",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    410: "Gone",
    413: "Content Too Large",
    416: "Range Not Satisfiable",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_log = logging.getLogger("suuupra.http")


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str  # percent-decoded, without the query string
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]  # names lower-cased
    body: bytes = b""

    def query_value(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass(frozen=True)
class HttpResponse:
    status: int
    content_type: str = "text/plain"
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    # A streamed body: `stream` yields exactly `stream_length` bytes in total (Content-Length is
    # sent up front, so a download of any size never sits in memory at once).
    stream: AsyncIterator[bytes] | None = None
    stream_length: int = 0


HttpRequestHandler = Callable[[HttpRequest], Awaitable[HttpResponse]]


class _MalformedRequestError(ValueError):
    pass


class HttpEndpoint:
    def __init__(
        self,
        routes: Mapping[str, HttpHandler],
        host: str,
        port: int,
        prefix_routes: Mapping[str, HttpRequestHandler] | None = None,
    ) -> None:
        self._routes = dict(routes)
        # Longest prefix first, so `/files/links/` wins over `/files/`.
        self._prefix_routes = sorted((prefix_routes or {}).items(), key=lambda kv: -len(kv[0]))
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
        head = False
        try:
            request = await asyncio.wait_for(_read_request(reader), _READ_TIMEOUT_SECONDS)
            head = request.method == "HEAD"
            response = await self._dispatch(request)
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
            ValueError,
        ):
            response = HttpResponse(400, body=b"bad request\n")
        try:
            await _write_response(writer, response, head)
        except ConnectionError:
            pass
        finally:
            if response.stream is not None:
                with contextlib.suppress(Exception):
                    await response.stream.aclose()  # type: ignore[attr-defined]
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _dispatch(self, request: HttpRequest) -> HttpResponse:
        handler = self._routes.get(request.path)
        if handler is not None:
            if request.method not in {"GET", "HEAD"}:
                return HttpResponse(405, body=b"method not allowed\n")
            try:
                status, content_type, body = await handler()
            except Exception:
                _log.exception("HTTP route %s failed", request.path)
                return HttpResponse(500, body=b"internal error\n")
            return HttpResponse(status, content_type, body)
        for prefix, prefix_handler in self._prefix_routes:
            if request.path.startswith(prefix):
                if request.method not in {"GET", "HEAD", "POST"}:
                    return HttpResponse(405, body=b"method not allowed\n")
                try:
                    return await prefix_handler(request)
                except Exception:
                    _log.exception("HTTP route %s failed", prefix)
                    return HttpResponse(500, body=b"internal error\n")
        return HttpResponse(404, body=b"not found\n")


async def _read_request(reader: asyncio.StreamReader) -> HttpRequest:
    raw = await reader.readuntil(b"\r\n\r\n")
    if len(raw) > _MAX_HEADER_BYTES:
        raise _MalformedRequestError("headers too large")
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise _MalformedRequestError("malformed request line")
    method, target, _version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise _MalformedRequestError("malformed header")
        headers[name.strip().lower()] = value.strip()
    path, _, query = target.partition("?")
    body = b""
    length = headers.get("content-length")
    if length:
        size = int(length)
        if size < 0 or size > _MAX_BODY_BYTES:
            raise _MalformedRequestError("body too large")
        body = await reader.readexactly(size)
    return HttpRequest(
        method=method,
        path=unquote(path),
        query=parse_qs(query, keep_blank_values=True),
        headers=headers,
        body=body,
    )


async def _write_response(writer: asyncio.StreamWriter, response: HttpResponse, head: bool) -> None:
    length = response.stream_length if response.stream is not None else len(response.body)
    reason = _REASONS.get(response.status, "Status")
    lines = [
        f"HTTP/1.1 {response.status} {reason}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {length}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in response.headers.items()),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if not head:
        if response.stream is not None:
            async for chunk in response.stream:
                writer.write(chunk)
                await writer.drain()
        else:
            writer.write(response.body)
    await writer.drain()


__all__ = ["HttpEndpoint", "HttpHandler", "HttpRequest", "HttpRequestHandler", "HttpResponse"]
