# mypy: disable-error-code="import-untyped"
"""Garbage request bytes get a clean gRPC error from the runtime server, which keeps serving."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2
from suuupra.testing.v1 import echo_service_pb2 as pb
from suuupra.testing.v1 import echo_service_pb2_grpc as pb_grpc

from suuupra_runtime.config import ServerSettings
from suuupra_runtime.grpc_errors import decode_status
from suuupra_runtime.server import RuntimeServer
from suuupra_runtime.testing.echo_service import echo_definition

ECHO = "/suuupra.testing.v1.EchoService/Echo"
STREAM_ECHO = "/suuupra.testing.v1.EchoService/StreamEcho"
# Not a protobuf message: field 1 as a length-delimited value claiming 100 bytes it lacks, then
# an invalid wire type; the parser must reject it.
GARBAGE = b"\x0a\x64abc\xff\xff\xff\xff\x0f"


def assert_malformed(err: grpc.aio.AioRpcError) -> None:
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "DecodeError" not in (err.details() or "")  # no parser internals leak out
    rich = decode_status(err.trailing_metadata())
    assert rich is not None
    infos = [d for d in rich.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    info = error_details_pb2.ErrorInfo()
    infos[0].Unpack(info)
    assert info.reason == "MALFORMED_REQUEST"


def _identity(data: bytes) -> bytes:
    return data


@pytest.fixture
async def server() -> AsyncIterator[RuntimeServer]:
    settings = ServerSettings(
        service_name="echo",
        grpc_addr="127.0.0.1:0",
        http_addr=None,
        drain_delay_seconds=0.0,
        grace_seconds=1.0,
    )
    srv = RuntimeServer(echo_definition(), settings)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def test_malformed_request_bytes_are_a_clean_error_and_the_server_keeps_answering(
    server: RuntimeServer,
) -> None:
    with pytest.raises(Exception):  # noqa: B017 (only proves GARBAGE really is malformed)
        pb.EchoRequest.FromString(GARBAGE)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        unary = channel.unary_unary(
            ECHO, request_serializer=_identity, response_deserializer=_identity
        )
        streaming = channel.unary_stream(
            STREAM_ECHO, request_serializer=_identity, response_deserializer=_identity
        )
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await unary(GARBAGE, timeout=5)
            assert_malformed(caught.value)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in streaming(GARBAGE, timeout=5):
                    pytest.fail("no message may be streamed for an undecodable request")
            assert_malformed(caught.value)

        # Still serving, well-formed calls work normally.
        reply = await pb_grpc.EchoServiceStub(channel).Echo(pb.EchoRequest(message="ok"), timeout=5)
        assert reply.message == "ok"
