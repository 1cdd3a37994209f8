# mypy: disable-error-code="import-untyped"
"""FileStored reaches JetStream through the outbox relay; concurrent uploads never overrun the
quota (the losers store nothing); abandoned partial uploads expire with their bytes."""

from __future__ import annotations

import asyncio

import grpc
import nats
import pytest
from suuupra.files.v1 import files_events_pb2 as ev
from suuupra.files.v1 import files_service_pb2 as pb

from services.files.tests.harness import files_harness, pdf_bytes, upload_messages
from suuupra_runtime.testing.rpc_errors import error_reason, rid

KiB = 1024


async def test_file_stored_is_published_to_jetstream(
    postgres_server_url: str, nats_url: str
) -> None:
    async with files_harness(postgres_server_url, nats_url) as h:
        owner = h.user()
        f = (await h.upload(owner, pdf_bytes(3000, seed=40))).file
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            sub = await js.pull_subscribe("suuupra.files.v1.FileStored", durable=None)
            found = None
            deadline = asyncio.get_running_loop().time() + 30
            while found is None and asyncio.get_running_loop().time() < deadline:
                try:
                    messages = await sub.fetch(50, timeout=1)
                except nats.errors.TimeoutError:
                    continue
                for message in messages:
                    event = ev.FileStored.FromString(message.data)
                    if event.file_id == f.file_id:
                        found = (event, message.headers or {})
            await sub.unsubscribe()
        finally:
            await nc.close()
        assert found is not None, "FileStored never reached the FILES stream"
        event, headers = found
        assert (event.sha256, event.size_bytes, event.owner_id) == (
            f.sha256,
            3000,
            owner.user_id,
        )
        assert headers.get("Nats-Msg-Id")


async def test_concurrent_uploads_never_exceed_the_quota(
    postgres_server_url: str, nats_url: str
) -> None:
    async with files_harness(postgres_server_url, nats_url, default_quota_bytes=1000 * KiB) as h:
        owner = h.user()
        uploads = [pdf_bytes(300 * KiB, seed=50 + i) for i in range(6)]

        async def one(data: bytes) -> grpc.StatusCode:
            try:
                await h.stub.UploadFile(upload_messages(data, chunk=64 * KiB), metadata=owner.md)
            except grpc.aio.AioRpcError as err:
                assert error_reason(err) == "QUOTA_EXCEEDED", err
                return err.code()
            return grpc.StatusCode.OK

        codes = await asyncio.gather(*(one(d) for d in uploads))
        stored = codes.count(grpc.StatusCode.OK)
        assert stored == 3  # 3 x 300 KiB fit in 1000 KiB, a 4th never does
        assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        quota = await h.stub.GetQuota(pb.GetQuotaRequest(), metadata=owner.md)
        assert quota.quota.used_bytes == stored * 300 * KiB <= quota.quota.limit_bytes
        assert len(h.stored_objects()) == stored
        assert (await h.counts())["files"] == stored
        assert h.staged() == []


async def test_abandoned_uploads_expire_with_their_bytes(
    postgres_server_url: str, nats_url: str
) -> None:
    async with files_harness(postgres_server_url, nats_url, upload_expiry_seconds=0.0) as h:
        owner = h.user()
        upload_id = rid()
        data = pdf_bytes(200 * KiB, seed=60)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.stub.UploadFile(
                list(upload_messages(data, upload_id=upload_id, chunk=64 * KiB))[:2],
                metadata=owner.md,
            )
        assert error_reason(err.value) == "UPLOAD_INCOMPLETE"
        assert len(h.staged()) == 1
        await asyncio.sleep(0.01)
        await h.wiring.files.purge_due()
        assert h.staged() == []
        assert (await h.counts())["uploads"] == 0
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.stub.GetUploadStatus(
                pb.GetUploadStatusRequest(upload_id=upload_id), metadata=owner.md
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
