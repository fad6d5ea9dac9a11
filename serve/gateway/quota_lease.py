"""What one ingress replica holds of one tenant's quotas (`TenantLease`), the keeper's buckets as it last
saw them (`Seen`), the limits a tenant's policy sets (`limits_of`), and OpenAI's x-ratelimit-* headers
computed from both. Plain data and arithmetic, including what an exchange asks for and what its grant
adds: serve/gateway/quotas.py makes the exchanges with the keeper."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Protocol

from aligner.errors import RateLimited
from serve.deployments.quota_keeper import BucketState, LeaseGrant, LeaseRequest, QuotaLimits


class Limited(Protocol):
    """What quotas read of a tenant's policy (aligner.tenants.TenantPolicy)."""

    requests_per_minute: int | None
    candidate_tokens_per_minute: int | None
    max_concurrent_requests: int | None


def limits_of(policy: Limited) -> QuotaLimits:
    return QuotaLimits(
        requests_per_minute=policy.requests_per_minute,
        candidate_tokens_per_minute=policy.candidate_tokens_per_minute,
        max_concurrent_requests=policy.max_concurrent_requests,
    )


def reset_format(seconds: float) -> str:
    """OpenAI's reset durations: "20ms", "1s", "1.5s", "6m0s", "1h2m3s"."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    whole = seconds if seconds >= 60 else round(seconds, 3)
    if whole < 60:
        return f"{whole:.3f}".rstrip("0").rstrip(".") + "s"
    total = math.ceil(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{hours}h" if hours else "") + f"{minutes}m{secs}s"


@dataclass
class Seen:
    """A bucket as the keeper last reported it, and when (this replica's clock): extrapolated by its refill."""

    state: BucketState
    at: float

    def level(self, now: float) -> float:
        return min(float(self.state.capacity), self.state.level + (now - self.at) * self.state.rate)

    def wait_s(self, amount: float, now: float) -> float:
        """Seconds until the bucket holds `amount`, if nobody else takes from it."""
        return max(0.0, (amount - self.level(now)) / self.state.rate)


@dataclass
class TenantLease:
    """What this replica holds for one tenant."""

    tenant: str
    limits: QuotaLimits
    requests: int = 0  # request units leased and not yet spent
    tokens: int = 0  # candidate-token allowance not reserved (negative: a debt not yet reported to the keeper)
    slots: int = 0  # concurrency slots held
    in_use: int = 0  # requests in flight (each uses one of the slots when there is a concurrency limit)
    admitting: int = 0  # admissions under way here (each waits for the exchange in progress, then takes)
    last_admit: float = -math.inf
    last_exchange: float = -math.inf
    # Hand back spare slots at the next exchange: the keeper said another replica was refused one, or an
    # admission here left without the slot that may have been asked for it.
    contended: bool = False
    # After the keeper refused something, it is not asked again before these times (a tenant flooding
    # over its quota is refused here, not with one keeper call per request).
    ask_requests_at: float = -math.inf
    ask_tokens_at: float = -math.inf
    ask_slots_at: float = -math.inf
    request_bucket: Seen | None = None
    token_bucket: Seen | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def lacks(self, admissions: int = 1) -> tuple[bool, bool, int]:
        """What admitting `admissions` more requests needs from the keeper: request units, a first look at
        the token bucket (its allowance is checked by each request's reservation, once its worst case is
        known), slots."""
        limits = self.limits
        short = 0
        if limits.max_concurrent_requests is not None:
            short = self.in_use + admissions - min(self.slots, limits.max_concurrent_requests)
        return (
            limits.requests_per_minute is not None and self.requests < admissions,
            limits.candidate_tokens_per_minute is not None and self.token_bucket is None,
            max(0, short),
        )

    def due(self, now: float) -> tuple[bool, bool, int]:
        """What the admissions under way lack that the keeper may be asked for now. All of them, not one:
        an admission that finds the lease covering it skips the keeper, and the one whose exchange got
        that cover would then find it taken."""
        want_requests, want_tokens, want_slots = self.lacks(max(1, self.admitting))
        return (
            want_requests and now >= self.ask_requests_at,
            want_tokens and now >= self.ask_tokens_at,
            want_slots if now >= self.ask_slots_at else 0,
        )

    def ask(
        self,
        leaser: str,
        want_requests: bool,
        want_tokens: bool,
        want_slots: int,
        hand_back: bool = False,
        need_tokens: int = 0,
        surplus_tokens: int = 0,
    ) -> LeaseRequest:
        """The exchange for this lease: a token debt always goes; unused units and spare slots if `hand_back`
        (spare slots also when `contended`); `surplus_tokens` of the token lease. What is handed back leaves
        the lease now (it is the keeper's from the moment it is sent)."""
        give_requests = self.requests if hand_back else 0
        give_tokens = self.tokens if (hand_back or self.tokens < 0) else max(0, min(surplus_tokens, self.tokens))
        spare = self.slots - self.in_use if (hand_back or self.contended) else 0
        self.requests -= give_requests
        self.tokens -= give_tokens
        self.slots -= max(0, spare)
        self.contended = False
        return LeaseRequest(
            leaser=leaser,
            tenant=self.tenant,
            limits=self.limits,
            give_requests=give_requests,
            give_tokens=give_tokens,
            slots_held=self.slots,
            slots_in_use=self.in_use,
            want_requests=want_requests,
            want_tokens=want_tokens,
            need_tokens=need_tokens if want_tokens else 0,
            want_slots=want_slots,
        )

    def apply(self, grant: LeaseGrant, now: float) -> None:
        self.requests += grant.requests
        self.tokens += grant.tokens
        self.slots += grant.slots
        self.contended = self.contended or grant.contended  # kept if set while the exchange was under way
        self.last_exchange = now
        self.request_bucket = None if grant.request_bucket is None else Seen(grant.request_bucket, now)
        self.token_bucket = None if grant.token_bucket is None else Seen(grant.token_bucket, now)

    def holds_nothing(self) -> bool:
        return self.requests == 0 and self.tokens == 0 and self.slots == 0 and self.in_use == 0 and not self.admitting


def renew_at_half(limit: int | None, held: int, seen: Seen | None, now: float) -> bool:
    """Renew a busy tenant's lease at half, when a lease is more than one unit (else at admission)."""
    if limit is None or seen is None or seen.state.slice < 2:
        return False
    return held < seen.state.slice / 2 and seen.level(now) >= seen.state.slice


def token_surplus(limit: int | None, held: int, seen: Seen | None) -> int:
    """What a busy tenant's token lease holds beyond a lease and a half (refunds of reservations larger
    than a lease): handed back down to one lease, so other replicas can use it."""
    if limit is None or seen is None:
        return 0
    size = seen.state.slice
    return held - size if held > size + size // 2 else 0


def rate_limit_headers(lease: TenantLease, now: float) -> dict[str, str]:
    """x-ratelimit-{limit,remaining,reset}-{requests,tokens} for the limits the tenant has: the tenant's
    remaining capacity over every replica, as the keeper last said plus what this replica holds."""
    out: dict[str, str] = {}
    for kind, seen, held in (
        ("requests", lease.request_bucket, lease.requests),
        ("tokens", lease.token_bucket, max(0, lease.tokens)),
    ):
        if seen is None:
            continue
        capacity = seen.state.capacity
        remaining = max(0, min(capacity, math.floor(seen.level(now)) + held))
        out[f"x-ratelimit-limit-{kind}"] = str(capacity)
        out[f"x-ratelimit-remaining-{kind}"] = str(remaining)
        out[f"x-ratelimit-reset-{kind}"] = reset_format((capacity - remaining) / seen.state.rate)
    return out


def token_refusal(lease: TenantLease, tokens: int, now: float) -> RateLimited:
    """The 429 for a reservation of `tokens` the tenant's allowance cannot cover now; Retry-After: once the
    bucket's refill covers the shortfall (if no other request takes from it meanwhile)."""
    seen, held = lease.token_bucket, max(0, lease.tokens)
    left = held if seen is None else max(0, math.floor(seen.level(now)) + held)
    # Whole seconds, rounded up past the instant the refill covers it: a retry at Retry-After is admitted.
    wait = 1.0 if seen is None else max(1.0, math.ceil(seen.wait_s(tokens - held, now) + 0.01))
    return RateLimited(
        f"candidate_tokens_per_minute: tenant {lease.tenant!r} has {left} of its "
        f"{lease.limits.candidate_tokens_per_minute} generated candidate tokens per minute left, and this "
        f"request may generate up to {tokens} (its worst case is reserved until it ends); retry later",
        "candidate_tokens_per_minute",
        retry_after_s=wait,
    )
