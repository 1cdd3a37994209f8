"""Staged uploads on a real disk: resume truncates to the committed offset and re-hashes the
prefix; a handler cancelled mid-write still leaves exactly the appended bytes on disk; a checkpoint
taken beside the stream covers what was handed to the writer."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from pathlib import Path

from services.files.staging import Staging


async def test_resume_truncates_uncommitted_bytes_and_rehashes(tmp_path: Path) -> None:
    staging = Staging(tmp_path)
    data = os.urandom(3 * 1024 * 1024 + 7)
    first = await staging.open("u1", 0)
    await first.append(data[: 2 * 1024 * 1024])
    await first.sync()
    await first.append(b"never committed")  # past the committed offset: dropped on resume
    await first.drain()
    await first.close()
    resumed = await staging.open("u1", 2 * 1024 * 1024)
    await resumed.append(data[2 * 1024 * 1024 :])
    await resumed.sync()
    await resumed.close()
    assert resumed.hexdigest() == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "u1.part").read_bytes() == data
    await staging.discard("u1")
    assert not (tmp_path / "u1.part").exists()


async def test_cancellation_waits_for_the_write_in_flight(tmp_path: Path) -> None:
    staging = Staging(tmp_path)
    staged = await staging.open("u2", 0)
    data = os.urandom(64 * 1024 * 1024)

    async def write() -> None:
        await staged.append(data)  # handed to a worker thread; append returns at once
        await staged.append(data)  # waits for the first write before starting its own

    task = asyncio.create_task(write())
    await asyncio.sleep(0.001)  # the first write is now running in a worker thread
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    # The cancelled task ended only after the thread finished the first write (the file may not
    # be closed under it), so those bytes are there before any sync.
    assert (tmp_path / "u2.part").stat().st_size == len(data)
    # Whatever `size` says was appended is complete on disk once synced: nothing half-written.
    await staged.sync()
    await staged.close()
    assert staged.size == 2 * len(data)
    assert (tmp_path / "u2.part").read_bytes() == data + data


async def test_close_waits_for_the_write_in_flight(tmp_path: Path) -> None:
    staged = await Staging(tmp_path).open("u3", 0)
    data = os.urandom(32 * 1024 * 1024)
    await staged.append(data)  # running in a worker thread when close starts
    await staged.close()
    assert (tmp_path / "u3.part").read_bytes() == data


async def test_a_checkpoint_beside_the_stream_covers_every_batch_handed_over(
    tmp_path: Path,
) -> None:
    staged = await Staging(tmp_path).open("u4", 0)
    data = os.urandom(5 * 1024 * 1024 + 100)
    chunk = 64 * 1024
    for start in range(0, 3 * 1024 * 1024, chunk):
        await staged.append(data[start : start + chunk])
    handed_over = staged.batched
    assert handed_over == 3 * 1024 * 1024  # the 1 MiB batches, nothing left gathering
    checkpoint = asyncio.create_task(staged.sync_batched())
    for start in range(3 * 1024 * 1024, len(data), chunk):  # the stream goes on meanwhile
        await staged.append(data[start : start + chunk])
    covered = await checkpoint
    assert handed_over <= covered <= staged.size
    # What the checkpoint reports durable is on disk, byte for byte, in order.
    assert (tmp_path / "u4.part").read_bytes()[:covered] == data[:covered]
    await staged.sync()
    await staged.close()
    assert staged.hexdigest() == hashlib.sha256(data).hexdigest()
