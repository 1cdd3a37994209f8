# mypy: disable-error-code="import-untyped"
"""Object storage backends behind one interface: local disk (default) and S3-compatible.

Keys are `<tenant>/<sha256>` (content-addressed per tenant: identical bytes are stored once, and
a tenant's objects never mix with another's) plus `<tenant>/<sha256>.thumb` for thumbnails. A key
is written once with complete, verified content, so readers never see partial objects.

All blocking I/O runs in worker threads (`asyncio.to_thread`), never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from services.files.config import S3Settings

_KEY = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}/[0-9a-f]{64}(\.thumb)?$")


def object_key(tenant_id: str, sha256: str, *, thumbnail: bool = False) -> str:
    key = f"{tenant_id}/{sha256}{'.thumb' if thumbnail else ''}"
    if not _KEY.match(key):
        raise ValueError(f"unusable object key {key!r}")
    return key


class ObjectStore(Protocol):
    async def put_file(self, key: str, source: Path) -> None:
        """Store `source`'s bytes under `key`; `source` is consumed (moved or deleted)."""

    async def put_bytes(self, key: str, data: bytes) -> None: ...

    async def exists(self, key: str) -> bool: ...

    def read(self, key: str, start: int, length: int, chunk_bytes: int) -> AsyncIterator[bytes]:
        """`length` bytes of `key` from `start`, in chunks of at most `chunk_bytes`."""

    async def delete(self, key: str) -> None: ...


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalDiskStore:
    """Objects under `<root>/<tenant>/<sha[:2]>/<sha>`, written by atomic rename."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        tenant, name = key.split("/", 1)
        return self.root / tenant / name[:2] / name

    def _put_file(self, key: str, source: Path) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            source.unlink(missing_ok=True)  # same key, same bytes: nothing to write
            return
        with open(source, "rb") as handle:
            os.fsync(handle.fileno())
        try:
            os.replace(source, target)  # atomic within one filesystem
        except OSError:
            # Staging on another filesystem: copy to a temp file beside the target, then rename.
            self._write_atomic(target, source.read_bytes())
            source.unlink(missing_ok=True)
        _fsync_dir(target.parent)

    def _write_atomic(self, target: Path, data: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(target.parent)

    async def put_file(self, key: str, source: Path) -> None:
        await asyncio.to_thread(self._put_file, key, source)

    async def put_bytes(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._write_atomic, self.path(key), data)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path(key).exists)

    async def read(
        self, key: str, start: int, length: int, chunk_bytes: int
    ) -> AsyncIterator[bytes]:
        handle = await asyncio.to_thread(open, self.path(key), "rb")
        try:
            await asyncio.to_thread(handle.seek, start)
            remaining = length
            while remaining > 0:
                chunk = await asyncio.to_thread(handle.read, min(chunk_bytes, remaining))
                if not chunk:
                    raise OSError(f"object {key} is shorter than expected")
                remaining -= len(chunk)
                yield chunk
        finally:
            handle.close()

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.path(key).unlink, missing_ok=True)


class S3Store:
    """An S3-compatible bucket through boto3 (each call in a worker thread)."""

    def __init__(self, settings: S3Settings) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = settings.bucket
        self._client: Any = boto3.client(
            "s3",
            endpoint_url=settings.endpoint_url,
            region_name=settings.region,
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=settings.secret_access_key,
            config=Config(retries={"max_attempts": 3, "mode": "standard"}),
        )
        self._transfer = TransferConfig(
            multipart_threshold=16 * 1024 * 1024, multipart_chunksize=16 * 1024 * 1024
        )

    async def ensure_bucket(self) -> None:
        def ensure() -> None:
            from botocore.exceptions import ClientError

            try:
                self._client.head_bucket(Bucket=self.bucket)
            except ClientError:
                self._client.create_bucket(Bucket=self.bucket)

        await asyncio.to_thread(ensure)

    async def put_file(self, key: str, source: Path) -> None:
        def put() -> None:
            # S3 makes an object visible only once its upload (or multipart completion) is whole.
            self._client.upload_file(str(source), self.bucket, key, Config=self._transfer)
            source.unlink(missing_ok=True)

        await asyncio.to_thread(put)

    async def put_bytes(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._client.put_object, Bucket=self.bucket, Key=key, Body=data)

    async def exists(self, key: str) -> bool:
        def head() -> bool:
            from botocore.exceptions import ClientError

            try:
                self._client.head_object(Bucket=self.bucket, Key=key)
            except ClientError:
                return False
            return True

        return await asyncio.to_thread(head)

    async def read(
        self, key: str, start: int, length: int, chunk_bytes: int
    ) -> AsyncIterator[bytes]:
        if length <= 0:
            return
        response = await asyncio.to_thread(
            self._client.get_object,
            Bucket=self.bucket,
            Key=key,
            Range=f"bytes={start}-{start + length - 1}",
        )
        body = response["Body"]
        try:
            remaining = length
            while remaining > 0:
                chunk = await asyncio.to_thread(body.read, min(chunk_bytes, remaining))
                if not chunk:
                    raise OSError(f"object {key} is shorter than expected")
                remaining -= len(chunk)
                yield chunk
        finally:
            body.close()

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._client.delete_object, Bucket=self.bucket, Key=key)
