"""API-key check: `Authorization: Bearer <key>` -> the key's record (tenant, admin).

The store holds only hashes and compares in constant time. A checked key is
remembered for at most `cache_s` (≤ 1 s), so a revoked key is refused within a
second on every replica while the store is asked at most once a second per key.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from typing import Any

from aligner.errors import PermissionDenied, Unauthenticated
from aligner.tenants import ApiKey, TenantStore
from serve.gateway.messages import NO_SAFETY_CONFIG, TenantContext

MAX_HEADER = 512
MAX_CACHED = 10_000


class StoreCache:
    """Answers read from the tenant store, each trusted for at most `cache_s` seconds."""

    def __init__(self, cache_s: float):
        self.cache_s = cache_s
        self._entries: dict[Any, tuple[float, Any]] = {}

    async def get(self, key: Any, read: Callable[[], Any]) -> Any:
        now = time.monotonic()
        cached = self._entries.get(key)
        if cached is not None and now - cached[0] < self.cache_s:
            return cached[1]
        value = await asyncio.to_thread(read)
        if len(self._entries) > MAX_CACHED:
            self._entries.clear()
        self._entries[key] = (now, value)
        return value


class Authenticator:
    def __init__(self, store: TenantStore, cache_s: float = 0.5):
        self.store = store
        # Keyed by sha256(key): the plaintext key is never kept.
        self._cache = StoreCache(cache_s)

    async def authenticate(self, authorization: str | None) -> ApiKey:
        if not authorization:
            raise Unauthenticated("missing API key: send `Authorization: Bearer <key>`")
        scheme, _, key = authorization[:MAX_HEADER].strip().partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthenticated("malformed Authorization header: expected `Bearer <key>`")
        key = key.strip()
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
        record = await self._cache.get(digest, lambda: self.store.authenticate(key))
        if record is None:
            raise Unauthenticated("invalid or revoked API key")
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
