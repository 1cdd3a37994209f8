"""Partial uploads on local disk: appended in order, hashed as they arrive, made durable on
checkpoints so an interrupted upload resumes from the last committed offset.

Writing and hashing a chunk happen together in one worker thread (hashlib releases the GIL on
large buffers), keeping the event loop free while a 100 MiB upload streams in.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable
from pathlib import Path
from typing import BinaryIO, TypeVar

T = TypeVar("T")

_READ_BYTES = 4 * 1024 * 1024


async def finish_despite_cancellation(work: Awaitable[T]) -> T:
    """Await `work` to its end even if this task is cancelled meanwhile, then re-raise that.

    gRPC cancels the handler of a dropped call at any await. A write running in a worker thread
    cannot be stopped, so the file must not be checkpointed or closed under it; and the bytes that
    did arrive must still be checkpointed for the upload to resume.
    """
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return task.result()


class StagedBytesLostError(OSError):
    """Fewer bytes are staged than were committed (another replica's disk, a wiped volume)."""


class StagedUpload:
    # Small chunks are gathered and written/hashed in one worker-thread hop per this many bytes
    # (a thread hop per 64 KiB message would cost more than the write itself).
    BATCH_BYTES = 1024 * 1024

    def __init__(self, path: Path, handle: BinaryIO, hasher: hashlib._Hash, size: int) -> None:
        self.path = path
        self._handle = handle
        self._hasher = hasher
        self.size = size  # bytes appended, including those still batched in memory
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    def _write(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self._handle.write(chunk)
            self._hasher.update(chunk)

    async def append(self, chunk: bytes) -> None:
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        self.size += len(chunk)
        if self._pending_bytes >= self.BATCH_BYTES:
            await self.drain()

    async def drain(self) -> None:
        """Write and hash what is batched (off the event loop)."""
        if not self._pending:
            return
        chunks, self._pending, self._pending_bytes = self._pending, [], 0
        await finish_despite_cancellation(asyncio.to_thread(self._write, chunks))

    def _sync(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())

    async def sync(self) -> None:
        """Everything appended so far survives a crash once this returns."""
        await self.drain()
        await finish_despite_cancellation(asyncio.to_thread(self._sync))

    def hexdigest(self) -> str:
        return self._hasher.hexdigest()

    async def read_head(self, count: int) -> bytes:
        await self.drain()

        def read() -> bytes:
            self._handle.flush()
            with open(self.path, "rb") as handle:
                return handle.read(count)

        return await asyncio.to_thread(read)

    def close(self) -> None:
        self._handle.close()


class Staging:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, upload_id: str) -> Path:
        return self.root / f"{upload_id}.part"

    def _open(self, upload_id: str, committed: int) -> StagedUpload:
        path = self.path(upload_id)
        if (path.stat().st_size if path.exists() else 0) < committed:
            raise StagedBytesLostError(f"staged upload {upload_id} has lost committed bytes")
        handle = open(path, "r+b" if path.exists() else "w+b")  # noqa: SIM115 (owned by StagedUpload)
        try:
            # Bytes past the committed offset were never confirmed durable: drop them.
            handle.truncate(committed)
            handle.seek(0)
            hasher = hashlib.sha256()
            remaining = committed
            while remaining > 0:
                block = handle.read(min(_READ_BYTES, remaining))
                if not block:
                    raise StagedBytesLostError(f"staged upload {upload_id} lost bytes")
                hasher.update(block)
                remaining -= len(block)
            handle.seek(committed)
        except BaseException:
            handle.close()
            raise
        return StagedUpload(path, handle, hasher, committed)

    async def open(self, upload_id: str, committed: int) -> StagedUpload:
        """The upload's staged bytes up to `committed`, ready to append (and hash) from there."""
        return await asyncio.to_thread(self._open, upload_id, committed)

    async def discard(self, upload_id: str) -> None:
        await asyncio.to_thread(self.path(upload_id).unlink, missing_ok=True)
