"""Staged uploads on a real disk: resume truncates to the committed offset and re-hashes the
prefix; a handler cancelled mid-write still leaves exactly the appended bytes on disk."""

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
    first.close()
    resumed = await staging.open("u1", 2 * 1024 * 1024)
    await resumed.append(data[2 * 1024 * 1024 :])
    await resumed.sync()
    resumed.close()
    assert resumed.hexdigest() == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "u1.part").read_bytes() == data
    await staging.discard("u1")
    assert not (tmp_path / "u1.part").exists()


async def test_cancellation_waits_for_the_write_in_flight(tmp_path: Path) -> None:
    staging = Staging(tmp_path)
    staged = await staging.open("u2", 0)
    data = os.urandom(64 * 1024 * 1024)

    async def write() -> None:
        await staged.append(data)

    task = asyncio.create_task(write())
    await asyncio.sleep(0)  # the write is now running in a worker thread
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    # The cancelled task ended only after the thread finished writing (the file may not close
    # under it), so the bytes are there before any flush.
    assert (tmp_path / "u2.part").stat().st_size == len(data)
    # Whatever `size` says was appended is complete on disk once synced: nothing half-written.
    await staged.sync()
    staged.close()
    assert staged.size == len(data)
    assert (tmp_path / "u2.part").stat().st_size == len(data)
