# mypy: disable-error-code="import-untyped"
"""The S3-compatible backend against a real S3 server (moto's standalone server on loopback):
multipart upload, ranged reads, nothing stored on a bad checksum, purge deletes the object."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import grpc
import pytest
from moto.server import ThreadedMotoServer
from suuupra.files.v1 import files_service_pb2 as pb

from services.files.config import S3Settings
from services.files.storage import S3Store
from services.files.tests.harness import files_harness, pdf_bytes, sha256
from suuupra_runtime.infra import free_port
from suuupra_runtime.testing.rpc_errors import error_reason, rid

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def _settings(endpoint: str) -> S3Settings:
    return S3Settings(
        bucket=f"files-{rid()[:8]}",
        endpoint_url=endpoint,
        access_key_id="test",
        secret_access_key="test",
    )


def _keys(settings: S3Settings) -> list[str]:
    client = boto3.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        region_name=settings.region,
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key,
    )
    listed = client.list_objects_v2(Bucket=settings.bucket)
    return sorted(o["Key"] for o in listed.get("Contents", []))


async def test_s3_backend_end_to_end(
    postgres_server_url: str, nats_url: str, s3_endpoint: str
) -> None:
    settings = _settings(s3_endpoint)
    store = S3Store(settings)
    async with files_harness(
        postgres_server_url, nats_url, objects=store, retention_seconds=0.0
    ) as h:
        owner = h.user()
        # Larger than the multipart threshold (16 MiB): a multipart upload to S3.
        data = pdf_bytes(17 * MiB + 3, seed=30)
        f = (await h.upload(owner, data)).file
        assert _keys(settings) == [f"{h.tenant_id}/{sha256(data)}"]
        assert h.stored_objects() == [] and h.staged() == []  # nothing left on local disk
        assert sha256(await h.download(owner, f.file_id)) == sha256(data)
        part = await h.download(owner, f.file_id, offset=16 * MiB - 10, length=MiB)
        assert part == data[16 * MiB - 10 : 17 * MiB - 10]

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.upload(owner, pdf_bytes(MiB, seed=31), declared_sha256="0" * 64)
        assert error_reason(err.value) == "CHECKSUM_MISMATCH"
        assert _keys(settings) == [f"{h.tenant_id}/{sha256(data)}"]

        await h.stub.DeleteFile(
            pb.DeleteFileRequest(request_id=rid(), file_id=f.file_id), metadata=owner.md
        )
        assert await h.wiring.files.purge_due() == 1
        assert _keys(settings) == []
