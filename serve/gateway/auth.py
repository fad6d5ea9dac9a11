"""API-key check: `Authorization: Bearer <key>` -> the key's record (tenant, admin).

The store holds only hashes and compares in constant time. A checked key is
remembered for at most `cache_s` (≤ 1 s), so a revoked key is refused within a
second on every replica while the store is asked at most once a second per key.

What a flood of bad keys costs is bounded: a key that is not of the keys' format
(`alk_<12 hex>_<secret>`) is refused without asking the store, and a well-formed
key the store refused is remembered apart from the valid ones, in a small cache
of its own (`MAX_INVALID_CACHED`), so random keys never evict a valid key: valid
keys stay cached (least recently used first out, `MAX_CACHED`). Concurrent checks
of one uncached key share one store read.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from aligner.errors import PermissionDenied, Unauthenticated
from aligner.tenants import ApiKey, TenantStore
from aligner.tenants.keys import key_parts
from serve.gateway.messages import NO_SAFETY_CONFIG, TenantContext

MAX_HEADER = 512
MAX_CACHED = 10_000  # valid keys (and each cache's tenants) remembered at once, least recently used first out
MAX_INVALID_CACHED = 1_024  # refused keys remembered at once: a flood of random keys stays in here

_MISSING = object()


class StoreCache:
    """Answers read from the tenant store, each trusted for at most `cache_s` seconds; at most `max_entries`
    of them are kept (the least recently used goes first). Concurrent reads of one key share one store
    read."""

    def __init__(self, cache_s: float, max_entries: int = MAX_CACHED):
        self.cache_s = cache_s
        self.max_entries = max_entries
        self._entries: OrderedDict[Any, tuple[float, Any]] = OrderedDict()
        self._reads: dict[Any, asyncio.Future] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def fresh(self, key: Any) -> Any:
        """The value cached for `key` if it is still fresh, else `_MISSING` (and a stale one is dropped)."""
        cached = self._entries.get(key)
        if cached is None:
            return _MISSING
        if time.monotonic() - cached[0] >= self.cache_s:
            del self._entries[key]
            return _MISSING
        self._entries.move_to_end(key)
        return cached[1]

    def put(self, key: Any, value: Any, read_at: float) -> None:
        """Remember `value`, read from the store at `read_at` (its age counts from before the read)."""
        self._entries[key] = (read_at, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def get(self, key: Any, read: Callable[[], Any]) -> Any:
        value = self.fresh(key)
        if value is not _MISSING:
            return value
        read_at, value = await shared_read(self._reads, key, read)
        self.put(key, value, read_at)
        return value


async def shared_read(reads: dict[Any, asyncio.Future], key: Any, read: Callable[[], Any]) -> tuple[float, Any]:
    """(when the read began, what it returned): `read()` in a thread, shared by every caller asking for `key`
    while it runs. A caller that goes away leaves it running for the others (shielded)."""
    pending = reads.get(key)
    if pending is None:
        read_at = time.monotonic()

        async def timed() -> tuple[float, Any]:
            return read_at, await asyncio.to_thread(read)

        def done(future: asyncio.Future) -> None:
            reads.pop(key, None)
            if not future.cancelled():
                future.exception()  # retrieved: callers that went away leave no "never retrieved" warning

        pending = asyncio.ensure_future(timed())
        reads[key] = pending
        pending.add_done_callback(done)
    return await asyncio.shield(pending)


class Authenticator:
    def __init__(
        self,
        store: TenantStore,
        cache_s: float = 0.5,
        max_cached: int = MAX_CACHED,
        max_invalid_cached: int = MAX_INVALID_CACHED,
    ):
        self.store = store
        # Keyed by sha256(key): the plaintext key is never kept. Valid and refused keys apart, so refused
        # ones (a flood of random keys) never take a valid key's place.
        self._valid = StoreCache(cache_s, max_cached)
        self._invalid = StoreCache(cache_s, max_invalid_cached)
        self._reads: dict[Any, asyncio.Future] = {}

    async def authenticate(self, authorization: str | None) -> ApiKey:
        if not authorization:
            raise Unauthenticated("missing API key: send `Authorization: Bearer <key>`")
        scheme, _, key = authorization[:MAX_HEADER].strip().partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthenticated("malformed Authorization header: expected `Bearer <key>`")
        key = key.strip()
        if key_parts(key) is None:
            raise Unauthenticated("invalid or revoked API key")  # no key has this form: the store is not asked
        record = await self._record(hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest(), key)
        if record is None:
            raise Unauthenticated("invalid or revoked API key")
        return record

    async def _record(self, digest: bytes, key: str) -> ApiKey | None:
        for cache in (self._valid, self._invalid):
            cached = cache.fresh(digest)
            if cached is not _MISSING:
                return cached
        read_at, record = await shared_read(self._reads, digest, lambda: self.store.authenticate(key))
        (self._valid if record is not None else self._invalid).put(digest, record, read_at)
        return record

    async def admin(self, authorization: str | None) -> ApiKey:
        record = await self.authenticate(authorization)
        if not record.admin:
            raise PermissionDenied("this route needs an admin key")
        return record


class ActiveSafetyConfigs:
    """Each tenant's active safety config, re-read from the store at most every `cache_s` (≤ 1 s),
    so a change is in force on every replica within a second.

    `for_request` is what travels with a request to the model replica: the version and the config, and
    whether the caller may see the text (admins) or only a placeholder naming the version.
    """

    def __init__(self, store: TenantStore, cache_s: float = 0.5):
        self.store = store
        self._cache = StoreCache(cache_s)

    async def for_request(self, key: ApiKey) -> TenantContext:
        found = await self._cache.get(key.tenant, lambda: self.store.get_safety_config(key.tenant))
        if found is None:
            return NO_SAFETY_CONFIG
        return TenantContext(version=found.version, config=found.config, reveal=key.admin)
