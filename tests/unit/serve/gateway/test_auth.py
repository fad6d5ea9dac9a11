"""serve/gateway/auth.py under a flood of bad keys: refused keys are remembered apart from valid ones, in a
small cache of their own, so a flood never evicts a valid key and never makes a valid key's request ask
the store; malformed keys never reach the store. A real SQLite tenant store, counted."""

from __future__ import annotations

import asyncio
import secrets
import threading

import pytest

from aligner.errors import Unauthenticated
from aligner.tenants import TenantStore
from serve.gateway.auth import Authenticator, StoreCache


class CountedStore:
    """The real store, counting the key checks that reach it."""

    def __init__(self, store: TenantStore):
        self.store = store
        self.reads = 0
        self.gate: threading.Event | None = None  # when set, reads wait on it (to hold them concurrent)

    def authenticate(self, key):
        self.reads += 1
        if self.gate is not None:
            self.gate.wait(10)
        return self.store.authenticate(key)


@pytest.fixture
def store(tmp_path):
    store = TenantStore.open(f"sqlite:///{tmp_path}/tenants.db")
    yield store
    store.close()


def random_key() -> str:
    """A well-formed key no store holds: the store must be asked to refuse it."""
    return f"alk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


def refused(auth: Authenticator, header: str) -> bool:
    try:
        asyncio.run(auth.authenticate(header))
    except Unauthenticated:
        return True
    return False


def test_a_flood_of_random_keys_never_evicts_a_valid_key(store):
    _, valid = store.create_key("acme")
    counted = CountedStore(store)
    auth = Authenticator(counted, cache_s=3600, max_cached=100, max_invalid_cached=16)
    assert asyncio.run(auth.authenticate(f"Bearer {valid}")).tenant == "acme"
    assert counted.reads == 1

    async def flood(count):
        for _ in range(count):
            with pytest.raises(Unauthenticated):
                await auth.authenticate(f"Bearer {random_key()}")

    # Before: refused keys were cached with the valid ones and the whole cache was cleared when full.
    asyncio.run(flood(500))
    assert counted.reads == 501  # every distinct random key is one store read, no more
    assert len(auth._invalid) == 16 and len(auth._valid) == 1  # the flood's memory is bounded
    assert asyncio.run(auth.authenticate(f"Bearer {valid}")).tenant == "acme"
    assert counted.reads == 501  # the valid key was still cached: the flood did not reach it


def test_a_refused_key_is_remembered_for_the_cache_time(store):
    counted = CountedStore(store)
    auth = Authenticator(counted, cache_s=3600)
    bad = random_key()
    assert all(refused(auth, f"Bearer {bad}") for _ in range(20))
    assert counted.reads == 1


def test_malformed_keys_never_reach_the_store_nor_any_cache(store):
    counted = CountedStore(store)
    auth = Authenticator(counted, cache_s=3600)
    for header in (
        "Bearer x",
        "Bearer " + "a" * 600,
        "Bearer alk_zz0000000000_" + "s" * 43,
        "Bearer alk_000000000000_short",
        "Bearer \ud800",
        "Bearer alk_000000000000_" + "s" * 43 + "\u00e9",
    ):
        assert refused(auth, header), header
    assert counted.reads == 0 and len(auth._valid) == len(auth._invalid) == 0


def test_a_revoked_key_is_refused_once_its_cache_time_passes(store):
    record, valid = store.create_key("acme")
    auth = Authenticator(CountedStore(store), cache_s=0)
    assert asyncio.run(auth.authenticate(f"Bearer {valid}")).tenant == "acme"
    store.revoke_key(record.id)
    assert refused(auth, f"Bearer {valid}")


def test_concurrent_checks_of_one_uncached_key_share_one_store_read(store):
    _, valid = store.create_key("acme")
    counted = CountedStore(store)
    counted.gate = threading.Event()
    auth = Authenticator(counted, cache_s=3600)

    async def main():
        checks = [asyncio.ensure_future(auth.authenticate(f"Bearer {valid}")) for _ in range(20)]
        while counted.reads == 0:  # the first check is reading, in its thread
            await asyncio.sleep(0.01)
        counted.gate.set()
        return await asyncio.gather(*checks)

    records = asyncio.run(main())
    assert {r.tenant for r in records} == {"acme"} and counted.reads == 1


def test_a_caller_that_goes_away_leaves_the_shared_read_to_the_others(store):
    _, valid = store.create_key("acme")
    counted = CountedStore(store)
    counted.gate = threading.Event()
    auth = Authenticator(counted, cache_s=3600)

    async def main():
        first = asyncio.ensure_future(auth.authenticate(f"Bearer {valid}"))
        second = asyncio.ensure_future(auth.authenticate(f"Bearer {valid}"))
        while counted.reads == 0:
            await asyncio.sleep(0.01)
        first.cancel()  # the client went away
        counted.gate.set()
        return await second, first.cancelled()

    record, cancelled = asyncio.run(main())
    assert record.tenant == "acme" and cancelled and counted.reads == 1


def test_the_store_cache_keeps_the_most_recently_used_entries():
    cache = StoreCache(cache_s=3600, max_entries=3)
    reads = []

    def reader(value):
        def read():
            reads.append(value)
            return value

        return read

    async def main():
        for name in ("a", "b", "c"):
            await cache.get(name, reader(name))
        await cache.get("a", reader("a"))  # used again: "b" is now the least recently used
        await cache.get("d", reader("d"))
        await cache.get("a", reader("a"))
        await cache.get("b", reader("b"))

    asyncio.run(main())
    assert reads == ["a", "b", "c", "d", "b"] and len(cache) == 3
