"""Partial uploads on local disk: appended in order, hashed as they arrive, made durable on
checkpoints so an interrupted upload resumes from the last committed offset.

Writing and hashing a chunk happen together in one worker thread (hashlib releases the GIL on
large buffers), keeping the event loop free while a 100 MiB upload streams in.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

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
    """Appends run in a pipeline: while one batch is written and hashed in a worker thread, the
    event loop keeps receiving the next one. Batches are written in order (one in flight)."""

    # Small chunks are gathered and written/hashed in one worker-thread hop per this many bytes
    # (a thread hop per 64 KiB message would cost more than the write itself).
    BATCH_BYTES = 1024 * 1024

    def __init__(self, path: Path, fd: int, hasher: hashlib._Hash, size: int) -> None:
        self.path = path
        self._fd = fd
        self._hasher = hasher
        self.size = size  # bytes appended, including those still batched or being written
        self.written = size  # bytes handed to the file by finished writes
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._in_flight: asyncio.Future[None] | None = None

    def _write(self, chunks: list[bytes], count: int) -> None:
        _write_all(self._fd, chunks, count)
        for chunk in chunks:
            self._hasher.update(chunk)

    async def _settle(self) -> None:
        """Wait for the batch being written, even if this task is cancelled meanwhile."""
        flight = self._in_flight
        if flight is None:
            return
        try:
            await finish_despite_cancellation(flight)
        finally:
            # Cleared only once done: a checkpoint starting meanwhile still waits for it.
            self._in_flight = None

    def _start(self) -> None:
        chunks, count = self._pending, self._pending_bytes
        self._pending, self._pending_bytes = [], 0

        async def write() -> None:
            await asyncio.to_thread(self._write, chunks, count)
            self.written += count

        self._in_flight = asyncio.ensure_future(write())

    async def append(self, chunk: bytes) -> None:
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        self.size += len(chunk)
        if self._pending_bytes >= self.BATCH_BYTES:
            await self._settle()
            self._start()

    async def drain(self) -> None:
        """Write and hash everything appended so far (off the event loop)."""
        await self._settle()
        if self._pending:
            self._start()
            await self._settle()

    @property
    def batched(self) -> int:
        """Bytes already handed to the writer (written or being written), not still gathering."""
        return self.size - self._pending_bytes

    async def _sync_written(self) -> int:
        covered = self.written  # fsync covers every write that finished before it started
        await finish_despite_cancellation(asyncio.to_thread(os.fsync, self._fd))
        return covered

    async def sync_batched(self) -> int:
        """Make at least `batched` bytes durable without pausing the appender (which may go on
        appending meanwhile); returns how many bytes are now durable."""
        flight = self._in_flight
        if flight is not None:
            await asyncio.shield(flight)  # the appender owns it and settles it
        return await self._sync_written()

    async def sync(self) -> None:
        """Everything appended so far survives a crash once this returns."""
        await self.drain()
        await self._sync_written()

    def hexdigest(self) -> str:
        return self._hasher.hexdigest()

    async def read_head(self, count: int) -> bytes:
        await self.drain()
        return await asyncio.to_thread(os.pread, self._fd, count, 0)

    async def close(self) -> None:
        """Close the file once no write is running on it (a thread may not write a closed fd)."""
        try:
            # A failed write has already failed the upload (or will be re-sent on resume).
            with contextlib.suppress(Exception):
                await self._settle()
        finally:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def _write_all(fd: int, chunks: list[bytes], count: int) -> None:
    """One writev for a batch; a short write (signal, nearly full disk) continues where it ended."""
    done = os.writev(fd, chunks)
    if done == count:
        return
    view = memoryview(b"".join(chunks))[done:]
    while view:
        view = view[os.write(fd, view) :]


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
        # Unbuffered, appended with writev: no copy into a file buffer, and fsync from another
        # thread sees every finished write.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            # Bytes past the committed offset were never confirmed durable: drop them.
            os.ftruncate(fd, committed)
            hasher = hashlib.sha256()
            done = 0
            while done < committed:
                block = os.pread(fd, min(_READ_BYTES, committed - done), done)
                if not block:
                    raise StagedBytesLostError(f"staged upload {upload_id} lost bytes")
                hasher.update(block)
                done += len(block)
            os.lseek(fd, committed, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        return StagedUpload(path, fd, hasher, committed)

    async def open(self, upload_id: str, committed: int) -> StagedUpload:
        """The upload's staged bytes up to `committed`, ready to append (and hash) from there."""
        return await asyncio.to_thread(self._open, upload_id, committed)

    async def discard(self, upload_id: str) -> None:
        await asyncio.to_thread(self.path(upload_id).unlink, missing_ok=True)
