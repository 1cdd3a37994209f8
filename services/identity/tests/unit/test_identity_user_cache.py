"""The user cache serves from memory only while it can prove freshness."""

from __future__ import annotations

import asyncio

from services.identity.user_cache import UserCache

T, U, V = "0b7c7f8e-0000-4000-8000-000000000001", "5f0e-user-a", "5f0e-user-b"


class Loader:
    def __init__(self) -> None:
        self.calls = 0
        self.value = "v1"

    async def __call__(self) -> str | None:
        self.calls += 1
        return self.value


def make(live: list[bool] | None = None, **kwargs: object) -> UserCache[str]:
    state = live if live is not None else [True]
    return UserCache(lambda: state[0], **kwargs)  # type: ignore[arg-type]


async def test_a_second_read_is_served_from_memory() -> None:
    cache, load = make(), Loader()
    assert await cache.get(T, U, load) == "v1"
    load.value = "v2"  # a change nobody announced (cannot happen with the triggers)
    assert await cache.get(T, U.upper(), load) == "v1"
    assert load.calls == 1


async def test_an_announced_change_drops_only_that_user() -> None:
    cache, load_u, load_v = make(), Loader(), Loader()
    await cache.get(T, U, load_u)
    await cache.get(T, V, load_v)
    load_u.value = "v2"
    cache.invalidate(f"{T}:{U}")
    assert await cache.get(T, U, load_u) == "v2"
    assert await cache.get(T, V, load_v) == "v1"
    assert (load_u.calls, load_v.calls) == (2, 1)


async def test_nothing_is_served_or_stored_while_not_listening() -> None:
    live = [False]
    cache, load = make(live), Loader()
    await cache.get(T, U, load)
    await cache.get(T, U, load)
    assert load.calls == 2 and len(cache) == 0
    live[0] = True
    await cache.get(T, U, load)
    live[0] = False
    load.value = "v2"
    assert await cache.get(T, U, load) == "v2"  # stored entry not trusted while deaf


async def test_a_read_overlapping_a_change_is_not_stored() -> None:
    cache = make()
    started, release = asyncio.Event(), asyncio.Event()

    async def slow_load() -> str:
        started.set()
        await release.wait()
        return "read before the change committed"

    reading = asyncio.create_task(cache.get(T, U, slow_load))
    await started.wait()
    cache.invalidate(f"{T}:{U}")  # the change commits while the read is in flight
    release.set()
    assert await reading == "read before the change committed"
    fresh = Loader()
    assert await cache.get(T, U, fresh) == "v1" and fresh.calls == 1


async def test_reconnect_and_malformed_notices_forget_everything() -> None:
    cache, load = make(), Loader()
    await cache.get(T, U, load)
    cache.reset()
    assert len(cache) == 0
    await cache.get(T, U, load)
    cache.invalidate("garbage")
    assert len(cache) == 0


async def test_entries_expire_and_the_least_recently_used_go_first() -> None:
    now = [0.0]
    cache = make(max_entries=2, ttl_seconds=10.0, clock=lambda: now[0])
    loads = {name: Loader() for name in ("a", "b", "c")}
    for name in ("a", "b"):
        await cache.get(T, name, loads[name])
    await cache.get(T, "a", loads["a"])  # a is now the most recently used
    await cache.get(T, "c", loads["c"])  # evicts b
    await cache.get(T, "b", loads["b"])
    assert loads["b"].calls == 2 and loads["a"].calls == 1
    now[0] = 11.0
    await cache.get(T, "c", loads["c"])
    assert loads["c"].calls == 2  # expired
    missing = Loader()
    missing.value = None  # type: ignore[assignment]
    await cache.get(T, "gone", missing)
    await cache.get(T, "gone", missing)
    assert missing.calls == 2  # "no such user" is never cached


async def test_peek_serves_only_what_get_would_serve_from_memory() -> None:
    now = [100.0]
    live = [True]
    cache, load = make(live, ttl_seconds=10.0, clock=lambda: now[0]), Loader()
    assert cache.peek(T, U) is None  # never loaded: peek never loads
    await cache.get(T, U, load)
    assert cache.peek(T, U.upper()) == "v1"
    cache.invalidate(f"{T}:{U}")
    assert cache.peek(T, U) is None
    await cache.get(T, U, load)
    live[0] = False
    assert cache.peek(T, U) is None  # not provably fresh while deaf to change notices
    live[0] = True
    now[0] += 11
    assert cache.peek(T, U) is None and not cache.holds(T, U)  # expired entries are dropped
    assert load.calls == 2
