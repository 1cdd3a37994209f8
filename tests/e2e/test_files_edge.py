# mypy: disable-error-code="import-untyped"
"""Files through the edge of a platform started by `./dev up`: a demo student streams an upload
larger than the edge's whole-request limit (UploadFile is a streaming route), then a browser-style
gRPC-Web call downloads a byte range of it (server streaming over gRPC-Web)."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import struct
from collections.abc import Iterator

import grpc
from suuupra.files.v1 import files_service_pb2 as pb
from suuupra.files.v1 import files_service_pb2_grpc as rpc

from tests.e2e.platform_process import RunningPlatform
from tools.demo_data import DEMO_STUDENTS, DEMO_TENANT_SLUG, login

DOWNLOAD = "/suuupra.files.v1.FileService/DownloadFile"
MiB = 1024 * 1024


def _content(size: int) -> bytes:
    block = hashlib.sha256(b"e2e").digest() * 2048
    return (b"%PDF-1.7\n" + block * (size // len(block) + 1))[:size]


def _messages(data: bytes) -> Iterator[pb.UploadFileRequest]:
    yield pb.UploadFileRequest(
        metadata=pb.UploadMetadata(
            name="lab-report.pdf",
            purpose=2,  # type: ignore[arg-type]
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
    )
    for start in range(0, len(data), 64 * 1024):
        yield pb.UploadFileRequest(chunk=data[start : start + 64 * 1024])


def _grpc_web_download(edge: str, token: str, request: pb.DownloadFileRequest) -> list[bytes]:
    host, port = edge.split(":")
    payload = request.SerializeToString()
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request(
            "POST",
            DOWNLOAD,
            body=struct.pack(">BI", 0, len(payload)) + payload,
            headers={
                "content-type": "application/grpc-web+proto",
                "x-grpc-web": "1",
                "accept": "application/grpc-web+proto",
                "authorization": f"Bearer {token}",
            },
        )
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert response.status == 200
    messages: list[bytes] = []
    trailers = ""
    offset = 0
    while offset < len(body):
        flags, length = struct.unpack(">BI", body[offset : offset + 5])
        frame = body[offset + 5 : offset + 5 + length]
        offset += 5 + length
        if flags & 0x80:
            trailers += frame.decode()
        else:
            messages.append(frame)
    status = response.getheader("grpc-status") or ("0" if "grpc-status:0" in trailers else trailers)
    assert status == "0", (status, trailers)
    return messages


async def test_upload_and_grpc_web_ranged_download_through_the_edge(
    platform: RunningPlatform,
) -> None:
    student = DEMO_STUDENTS[0]
    data = _content(5 * MiB + 123)  # above the edge's 4 MiB whole-request limit
    async with grpc.aio.insecure_channel(platform.edge) as channel:
        token = await login(channel, DEMO_TENANT_SLUG, student.email, student.password)
        stub = rpc.FileServiceStub(channel)
        uploaded = await stub.UploadFile(
            _messages(data), metadata=(("authorization", f"Bearer {token}"),), timeout=60
        )
    assert uploaded.file.sha256 == hashlib.sha256(data).hexdigest()
    assert uploaded.file.content_type == "application/pdf"
    request = pb.DownloadFileRequest(file_id=uploaded.file.file_id, offset=MiB - 10, length=2 * MiB)
    frames = await asyncio.to_thread(_grpc_web_download, platform.edge, token, request)
    parts = [pb.DownloadFileResponse.FromString(f) for f in frames]
    assert parts[0].file.file_id == uploaded.file.file_id
    assert parts[0].range_length == 2 * MiB
    assert b"".join(p.data for p in parts) == data[MiB - 10 : 3 * MiB - 10]
