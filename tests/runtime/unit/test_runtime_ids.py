"""`random_uuid()` (server-minted request ids, notification ids): version-4 UUIDs, unique, never
shared by a forked child."""

from __future__ import annotations

import os
import uuid

from suuupra_runtime.ids import random_uuid


def test_ids_are_unique_version_4_uuids() -> None:
    ids = [random_uuid() for _ in range(5000)]  # spans several refills of the random pool
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in ids)


def test_a_forked_child_does_not_repeat_the_parent_s_ids() -> None:
    random_uuid()  # the pool now holds bytes the child would inherit
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.write(write, random_uuid().encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    child_id = os.read(read, 64).decode()
    os.close(read)
    assert status == 0
    assert uuid.UUID(child_id).version == 4
    assert child_id != random_uuid()
