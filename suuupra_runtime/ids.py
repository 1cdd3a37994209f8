"""Random (version 4) UUID strings without a getrandom() syscall each.

`random_uuid()` is ~4x cheaper than `str(uuid.uuid4())`: it takes its 16 bytes from a pool read
from the OS 4 KiB at a time (a syscall per id was ~2.5% of a server's CPU per RPC, ~5% of the
notifications event path, which mints two ids per in-app notification). The bytes are the OS's
CSPRNG output either way. A forked child starts with a fresh pool, so processes never share ids.
"""

from __future__ import annotations

import os

__all__ = ["random_uuid"]


class _RandomPool:
    SIZE = 4096

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self._bytes = b""
        self._offset = 0

    def take16(self) -> bytes:
        if self._offset + 16 > len(self._bytes):
            self._bytes, self._offset = os.urandom(self.SIZE), 0
        start = self._offset
        self._offset = start + 16
        return self._bytes[start : start + 16]


_random = _RandomPool()


def random_uuid() -> str:
    """A random (version 4) UUID in its canonical string form."""
    raw = bytearray(_random.take16())
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
