"""Recently read "get my user" views, served from memory only while every change reaches us.

Every authenticated page load asks identity for the caller's user, and users change rarely, so
the read is served from this process's memory when it can be proven fresh:

* triggers on `users` and `role_assignments` announce each change on `USER_CHANGED_CHANNEL`
  when its transaction commits (migration 0002), on every replica; `invalidate` drops that user;
* entries are served only while the LISTEN connection is up (`is_live`); after a (re)connect the
  cache starts empty (`reset`), because changes announced while nobody listened are lost;
* a read that overlapped any announced change does not store its result (it may predate the
  change): a generation counter moves on every invalidation;
* entries also expire after `ttl_seconds` and the least recently used go beyond `max_entries`.

So a view is at most as stale as the LISTEN delivery (milliseconds after the writer's commit).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

USER_CHANGED_CHANNEL = "identity_user_changed"

V = TypeVar("V")


class UserCache(Generic[V]):
    def __init__(
        self,
        is_live: Callable[[], bool],
        *,
        max_entries: int = 10_000,
        ttl_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._is_live = is_live
        self._max_entries = max_entries
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, V]] = OrderedDict()
        self._generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    def holds(self, tenant_id: str, user_id: str) -> bool:
        """Whether the user's view is in memory (expired or not)."""
        return (tenant_id.lower(), user_id.lower()) in self._entries

    def peek(self, tenant_id: str, user_id: str) -> V | None:
        """The user's view if memory holds a fresh one (no load, no await: the hot path)."""
        if not self._is_live():
            return None
        key = (tenant_id.lower(), user_id.lower())
        hit = self._entries.get(key)
        if hit is None:
            return None
        if hit[0] > self._clock():
            self._entries.move_to_end(key)
            return hit[1]
        del self._entries[key]
        return None

    async def get(
        self, tenant_id: str, user_id: str, load: Callable[[], Awaitable[V | None]]
    ) -> V | None:
        """The user's view: from memory when fresh, else from `load` (None: no such user)."""
        if not self._is_live():
            return await load()
        hit = self.peek(tenant_id, user_id)
        if hit is not None:
            return hit
        key = (tenant_id.lower(), user_id.lower())
        now = self._clock()
        generation = self._generation
        value = await load()
        if value is not None and generation == self._generation and self._is_live():
            self._entries[key] = (now + self._ttl, value)
            if len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return value

    def invalidate(self, payload: str) -> None:
        """A change announced as `<tenant_id>:<user_id>` (anything else empties the cache)."""
        self._generation += 1
        tenant_id, _, user_id = payload.partition(":")
        if not user_id:
            self._entries.clear()
            return
        self._entries.pop((tenant_id.lower(), user_id.lower()), None)

    def reset(self) -> None:
        """Forget everything (the LISTEN connection was just (re)established)."""
        self._generation += 1
        self._entries.clear()


__all__ = ["USER_CHANGED_CHANNEL", "UserCache"]
