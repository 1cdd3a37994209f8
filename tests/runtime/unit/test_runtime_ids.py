"""`random_uuid()` (server-minted request ids, notification ids): version-4 UUIDs, unique, never
shared by a forked child."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from suuupra_runtime.ids import random_uuid


def test_ids_are_unique_version_4_uuids() -> None:
    ids = [random_uuid() for _ in range(5000)]  # spans several refills of the random pool
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in ids)


_FORK_SCRIPT = """
import os
from suuupra_runtime.ids import random_uuid
random_uuid()  # the pool now holds bytes the child would inherit
read, write = os.pipe()
pid = os.fork()
if pid == 0:  # the child: report its next id and leave at once
    os.write(write, random_uuid().encode())
    os._exit(0)
os.close(write)
_, status = os.waitpid(pid, 0)
print(status, os.read(read, 64).decode(), random_uuid())
"""


def test_a_forked_child_does_not_repeat_the_parent_s_ids() -> None:
    # Forked in a fresh interpreter: forking this test process, which may hold gRPC's threads,
    # runs gRPC's fork handlers (see suuupra_runtime/infra/become.py).
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, "-c", _FORK_SCRIPT],
        env={**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{root / 'gen'}"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    status, child_id, parent_next = done.stdout.split()
    assert status == "0"
    assert uuid.UUID(child_id).version == 4
    assert child_id != parent_next
