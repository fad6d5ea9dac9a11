"""The quota keeper: one deployment (one replica) holding every tenant's rate buckets and concurrency
slots for the whole cluster, from which each ingress replica leases capacity in batches
(serve/gateway/quotas.py).

Semantics (docs/tenancy.md, Quotas). Each rate limit is a token bucket whose capacity is the per-minute
limit and which refills continuously at limit/60 per second, starting full: over any stretch of T
seconds a tenant starts at most `limit + limit × T / 60` requests (or candidate tokens), and on average
`limit` per minute. A request reserves its worst case of candidate tokens from the token bucket before
it is sent to a model replica and gets back what it did not generate when it ends; an ingress replica
asks for at least what a reservation lacks (`need_tokens`), which the bucket grants whole or not at all.
The bucket goes negative only by what a request generated beyond its reservation (a debt the refill pays
before anything more is granted). Concurrency is a count of slots: the keeper never lets the slots
leased to all ingress replicas of a tenant exceed `max_concurrent_requests`.

Why leases stay within 5% of the limit: a grant is taken out of the bucket when it is leased, so what
every replica spends together never exceeds what the bucket gave; the only excess over a window is what
replicas leased before it and spend inside it, and each lease is at most `LEASE_SHARE` of the capacity
divided among the replicas that lease for the tenant (a replica holds at most 1.5 leases: it renews at
half), so that excess is at most 1.5 × `LEASE_SHARE` (4.5%) of the limit.

`QuotaKeeper` is plain Python (the clock is injected), so its arithmetic is unit-tested directly; the
app wraps it in `serve.deployment` (serve/app.py), as it does the metrics hub.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

LEASE_SHARE = 0.03  # a lease: at most this share of a bucket's capacity, split among the tenant's leasers
ACTIVE_S = 5.0  # a leaser that leased for a tenant this recently shares its buckets (sizes the leases)
LEASER_TTL_S = 10.0  # slots of a leaser not heard from for this long are freed (its replica died)
CONTENDED_S = 1.0  # after a slot was refused, leasers give back their spare slots for this long


@dataclass(frozen=True)
class QuotaLimits:
    """A tenant's limits, from its policy in force (each None: no such limit)."""

    requests_per_minute: int | None = None
    candidate_tokens_per_minute: int | None = None
    max_concurrent_requests: int | None = None

    @property
    def any(self) -> bool:
        return (
            self.requests_per_minute is not None
            or self.candidate_tokens_per_minute is not None
            or self.max_concurrent_requests is not None
        )


@dataclass(frozen=True)
class LeaseRequest:
    """One ingress replica's exchange with the keeper for one tenant: what it gives back, what it wants."""

    leaser: str  # the ingress replica's id
    tenant: str
    limits: QuotaLimits
    give_requests: int = 0  # unused request units handed back
    give_tokens: int = 0  # unused token allowance handed back (> 0), or the debt of finished requests (< 0)
    slots_held: int = 0  # concurrency slots the replica holds, after what it hands back
    slots_in_use: int = 0  # of which in use by requests in flight
    want_requests: bool = False
    want_tokens: bool = False
    need_tokens: int = 0  # with want_tokens: the least grant of use (a reservation's shortfall); 0: any
    want_slots: int = 0


@dataclass(frozen=True)
class BucketState:
    """A bucket as the keeper saw it at `at` (keeper's monotonic clock: only differences are used)."""

    capacity: int
    level: float  # what is left to lease now (negative: a debt)
    slice: int  # the size of one lease for this tenant now

    @property
    def rate(self) -> float:
        return self.capacity / 60.0

    def retry_s(self) -> float:
        """Seconds until one unit can be leased again."""
        return max(0.0, (1.0 - self.level) / self.rate)

    def lease_wait_s(self) -> float:
        """Seconds until a whole lease can be granted (a replica refused waits this long to ask again)."""
        return max(0.0, (min(self.slice, self.capacity) - self.level) / self.rate)

    def reset_s(self) -> float:
        """Seconds until the bucket is full again (OpenAI's `x-ratelimit-reset-*`)."""
        return max(0.0, (self.capacity - self.level) / self.rate)


@dataclass(frozen=True)
class LeaseGrant:
    """The keeper's answer: what was granted, and the buckets after it."""

    requests: int = 0
    tokens: int = 0
    slots: int = 0
    request_bucket: BucketState | None = None
    token_bucket: BucketState | None = None
    slots_free: int | None = None  # slots no replica holds, after this grant
    contended: bool = False  # a replica was refused a slot recently: hand back spare slots now


@dataclass
class Bucket:
    """A token bucket: `capacity` per minute, refilled continuously, starting full."""

    capacity: int
    level: float
    at: float

    def refill(self, now: float) -> None:
        if now > self.at:
            self.level = min(float(self.capacity), self.level + (now - self.at) * self.capacity / 60.0)
        self.at = now

    def resize(self, capacity: int) -> None:
        """A changed limit: what is left stays (at most the new capacity); it refills at the new rate."""
        self.capacity = capacity
        self.level = min(self.level, float(capacity))

    def give(self, amount: int) -> None:
        """Unused units back (never above capacity), or a debt (a negative amount) charged."""
        self.level = min(float(self.capacity), self.level + amount)

    def take(self, most: int, least: int = 1) -> int:
        """Up to `most` whole units, if at least `least` are left (else none)."""
        left = math.floor(self.level + 1e-9)  # 1e-9: a refill computed in floats
        if left < max(1, least):
            return 0
        granted = max(0, min(most, left))
        self.level -= granted
        return granted

    def state(self, slice_size: int) -> BucketState:
        return BucketState(self.capacity, self.level, slice_size)


@dataclass
class TenantQuota:
    """One tenant's buckets and slots at the keeper."""

    requests: Bucket | None = None
    tokens: Bucket | None = None
    max_slots: int | None = None
    slots: dict[str, tuple[int, int]] = field(default_factory=dict)  # leaser -> (held, in use)
    seen: dict[str, float] = field(default_factory=dict)  # leaser -> when it last exchanged
    contended_until: float = -math.inf


def _bucket(bucket: Bucket | None, capacity: int | None, now: float) -> Bucket | None:
    """The bucket under `capacity` now. A lifted limit keeps its bucket (not in force): a replica still on
    the old policy for a moment, or the limit set again, must not find it full."""
    if capacity is None:
        return bucket
    if bucket is None:
        return Bucket(capacity, float(capacity), now)
    bucket.refill(now)
    if bucket.capacity != capacity:
        bucket.resize(capacity)
    return bucket


class QuotaKeeper:
    """Every tenant's buckets and slots; `exchange` is the one call ingress replicas make."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.tenants: dict[str, TenantQuota] = {}

    async def exchange(self, requests: list[LeaseRequest]) -> list[LeaseGrant]:
        """Apply each request in order (what it gives back first, then what it wants). A coroutine that never
        awaits: Serve runs it on the replica's event loop, so exchanges are applied one at a time, whole."""
        return [self._one(request, self.clock()) for request in requests]

    def _one(self, ask: LeaseRequest, now: float) -> LeaseGrant:
        quota = self.tenants.setdefault(ask.tenant, TenantQuota())
        limits = ask.limits
        quota.seen[ask.leaser] = now
        self._forget_silent(quota, now)
        active = sum(1 for seen in quota.seen.values() if now - seen <= ACTIVE_S)
        quota.requests = _bucket(quota.requests, limits.requests_per_minute, now)
        quota.tokens = _bucket(quota.tokens, limits.candidate_tokens_per_minute, now)
        quota.max_slots = limits.max_concurrent_requests

        granted_requests = granted_tokens = 0
        request_state = token_state = None
        if quota.requests is not None and limits.requests_per_minute is not None:
            quota.requests.give(ask.give_requests)
            size = self.slice(quota.requests.capacity, active)
            if ask.want_requests:
                granted_requests = quota.requests.take(size)
            request_state = quota.requests.state(size)
        if quota.tokens is not None and limits.candidate_tokens_per_minute is not None:
            quota.tokens.give(ask.give_tokens)
            size = self.slice(quota.tokens.capacity, active)
            if ask.want_tokens:  # a lease, or a reservation's larger shortfall: whole or nothing
                granted_tokens = quota.tokens.take(max(size, ask.need_tokens), least=ask.need_tokens)
            token_state = quota.tokens.state(size)

        granted_slots, free = self._slots(quota, ask, now)
        return LeaseGrant(
            requests=granted_requests,
            tokens=granted_tokens,
            slots=granted_slots,
            request_bucket=request_state,
            token_bucket=token_state,
            slots_free=free,
            contended=now < quota.contended_until,
        )

    @staticmethod
    def slice(capacity: int, leasers: int) -> int:
        """One lease: `LEASE_SHARE` of the capacity split among the tenant's active leasers, at least 1."""
        return max(1, math.floor(LEASE_SHARE * capacity / max(1, leasers)))

    def _slots(self, quota: TenantQuota, ask: LeaseRequest, now: float) -> tuple[int, int | None]:
        """The replica's slots as it reports them (it knows what it holds), plus what can be granted."""
        if quota.max_slots is None:
            quota.slots.pop(ask.leaser, None)
            return 0, None
        quota.slots[ask.leaser] = (ask.slots_held, ask.slots_in_use)
        free = quota.max_slots - sum(held for held, _ in quota.slots.values())
        granted = max(0, min(ask.want_slots, free))
        if granted < ask.want_slots:
            spare = any(held > used for leaser, (held, used) in quota.slots.items() if leaser != ask.leaser)
            if spare:  # another replica sits on a slot it does not use: ask them all to hand spares back
                quota.contended_until = now + CONTENDED_S
        if granted:
            quota.slots[ask.leaser] = (ask.slots_held + granted, ask.slots_in_use)
        return granted, free - granted

    def _forget_silent(self, quota: TenantQuota, now: float) -> None:
        """A replica that stopped exchanging died (a live one sends a heartbeat while it holds slots)."""
        for leaser, seen in list(quota.seen.items()):
            if now - seen > LEASER_TTL_S:
                del quota.seen[leaser]
                quota.slots.pop(leaser, None)

    async def state(self, tenant: str) -> dict[str, object]:
        """A tenant's buckets and slots now (diagnostics and tests): levels, slots per leaser."""
        quota = self.tenants.get(tenant)
        if quota is None:
            return {}
        now = self.clock()
        for bucket in (quota.requests, quota.tokens):
            if bucket is not None:
                bucket.refill(now)
        return {
            "requests_level": None if quota.requests is None else quota.requests.level,
            "tokens_level": None if quota.tokens is None else quota.tokens.level,
            "slots": dict(quota.slots),
            "leasers": sorted(quota.seen),
        }
