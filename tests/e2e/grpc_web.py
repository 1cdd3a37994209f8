"""A minimal gRPC-Web client (what a browser's grpc-web library sends), for end-to-end tests.

Speaks `application/grpc-web+proto` over HTTP/1.1 to the edge: one length-prefixed data frame
in, data frames plus a trailer frame (flag 0x80) out.
"""

from __future__ import annotations

import http.client
import struct
from dataclasses import dataclass, field
from typing import TypeVar

from google.protobuf.message import Message

M = TypeVar("M", bound=Message)


@dataclass
class GrpcWebReply:
    http_status: int
    headers: dict[str, str]
    messages: list[bytes]
    trailers: dict[str, str] = field(default_factory=dict)

    @property
    def grpc_status(self) -> str | None:
        """Trailers-only responses put the status in the headers, others in the trailer frame."""
        return self.headers.get("grpc-status") or self.trailers.get("grpc-status")

    @property
    def grpc_message(self) -> str:
        return self.headers.get("grpc-message") or self.trailers.get("grpc-message") or ""

    def single(self, response_type: type[M]) -> M:
        assert self.grpc_status == "0", (self.grpc_status, self.grpc_message, self.headers)
        assert len(self.messages) == 1, self.messages
        return response_type.FromString(self.messages[0])


def frame(payload: bytes) -> bytes:
    return struct.pack(">BI", 0, len(payload)) + payload


def parse_frames(body: bytes) -> tuple[list[bytes], dict[str, str]]:
    """Data frames and the trailers of a gRPC-Web response body."""
    messages: list[bytes] = []
    trailers: dict[str, str] = {}
    offset = 0
    while offset < len(body):
        flags, length = struct.unpack(">BI", body[offset : offset + 5])
        chunk = body[offset + 5 : offset + 5 + length]
        offset += 5 + length
        if flags & 0x80:
            for line in chunk.decode().split("\r\n"):
                if line:
                    key, _, value = line.partition(":")
                    trailers[key.strip().lower()] = value.strip()
        else:
            messages.append(chunk)
    return messages, trailers


def call(
    edge: str,
    method: str,
    request: Message,
    *,
    token: str | None = None,
    origin: str | None = None,
    timeout: float = 15.0,
) -> GrpcWebReply:
    """One gRPC-Web call (unary, or a server stream read to its end) through the edge."""
    host, port = edge.rsplit(":", 1)
    headers = {
        "content-type": "application/grpc-web+proto",
        "x-grpc-web": "1",
        "accept": "application/grpc-web+proto",
    }
    if token:
        headers["authorization"] = f"Bearer {token}"
    if origin:
        headers["origin"] = origin
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request("POST", method, body=frame(request.SerializeToString()), headers=headers)
        response = connection.getresponse()
        body = response.read()
        got = {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()
    messages, trailers = parse_frames(body)
    return GrpcWebReply(response.status, got, messages, trailers)
