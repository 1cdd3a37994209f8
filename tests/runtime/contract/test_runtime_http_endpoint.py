"""The runtime's HTTP endpoint: exact routes, prefix routes with the parsed request, streamed
bodies, and refusal of what it does not serve."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from suuupra_runtime.http_endpoint import HttpEndpoint, HttpRequest, HttpResponse


async def _exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ")[1]), headers, body


@pytest.fixture
async def endpoint() -> AsyncIterator[HttpEndpoint]:
    seen: list[HttpRequest] = []

    async def fixed() -> tuple[int, str, bytes]:
        return 200, "text/plain", b"fixed"

    async def echo(request: HttpRequest) -> HttpResponse:
        seen.append(request)
        body = f"{request.method} {request.path} t={request.query_value('t')}".encode()
        return HttpResponse(200, "text/plain", body + request.body, headers={"X-Seen": "1"})

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"x" * 100_000

    async def download(_: HttpRequest) -> HttpResponse:
        return HttpResponse(206, "application/octet-stream", stream=chunks(), stream_length=400_000)

    server = HttpEndpoint(
        {"/fixed": fixed},
        "127.0.0.1",
        0,
        prefix_routes={"/files/": echo, "/files/blob/": download},
    )
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def test_exact_route_answers_get_and_refuses_post(endpoint: HttpEndpoint) -> None:
    status, _, body = await _exchange(endpoint.port, b"GET /fixed HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, body) == (200, b"fixed")
    status, _, _ = await _exchange(
        endpoint.port, b"POST /fixed HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
    )
    assert status == 405


async def test_prefix_route_gets_decoded_path_query_headers_and_body(
    endpoint: HttpEndpoint,
) -> None:
    status, headers, body = await _exchange(
        endpoint.port,
        b"POST /files/a%20b?t=tok%2F1 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    )
    assert status == 200
    assert headers["x-seen"] == "1"
    assert body == b"POST /files/a b t=tok/1hello"


async def test_longest_prefix_wins_and_streams_exact_length(endpoint: HttpEndpoint) -> None:
    status, headers, body = await _exchange(endpoint.port, b"GET /files/blob/1 HTTP/1.1\r\n\r\n")
    assert status == 206
    assert headers["content-length"] == "400000"
    assert body == b"x" * 400_000


async def test_head_sends_no_body(endpoint: HttpEndpoint) -> None:
    status, headers, body = await _exchange(endpoint.port, b"HEAD /files/blob/1 HTTP/1.1\r\n\r\n")
    assert (status, headers["content-length"], body) == (206, "400000", b"")


async def test_unknown_path_oversized_body_and_bad_method(endpoint: HttpEndpoint) -> None:
    assert (await _exchange(endpoint.port, b"GET /nope HTTP/1.1\r\n\r\n"))[0] == 404
    oversized = b"POST /files/x HTTP/1.1\r\nContent-Length: 10000000\r\n\r\n"
    assert (await _exchange(endpoint.port, oversized))[0] == 400
    assert (await _exchange(endpoint.port, b"DELETE /files/x HTTP/1.1\r\n\r\n"))[0] == 405
    assert (await _exchange(endpoint.port, b"garbage\r\n\r\n"))[0] == 400
