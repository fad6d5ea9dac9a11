"""What one ingress replica holds of one tenant's quotas (`TenantLease`), the keeper's buckets as it last
saw them (`Seen`), the limits a tenant's policy sets (`limits_of`), and OpenAI's x-ratelimit-* headers
computed from both. Plain data and arithmetic:
serve/gateway/quotas.py does the exchanges with the keeper."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Protocol

from aligner.errors import RateLimited
from serve.deployments.quota_keeper import BucketState, QuotaLimits


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
    last_admit: float = -math.inf
    last_exchange: float = -math.inf
    contended: bool = False
    # After the keeper refused something, it is not asked again before these times (a tenant flooding
    # over its quota is refused here, not with one keeper call per request).
    ask_requests_at: float = -math.inf
    ask_tokens_at: float = -math.inf
    ask_slots_at: float = -math.inf
    request_bucket: Seen | None = None
    token_bucket: Seen | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def lacks(self) -> tuple[bool, bool, int]:
        """What admitting one more request needs from the keeper: request units, a first look at the token
        bucket (its allowance is checked by each request's reservation, once its worst case is known), a slot."""
        limits = self.limits
        return (
            limits.requests_per_minute is not None and self.requests < 1,
            limits.candidate_tokens_per_minute is not None and self.token_bucket is None,
            1
            if limits.max_concurrent_requests is not None
            and self.in_use >= min(self.slots, limits.max_concurrent_requests)
            else 0,
        )

    def due(self, now: float) -> tuple[bool, bool, int]:
        """What it lacks that the keeper may be asked for now."""
        want_requests, want_tokens, want_slots = self.lacks()
        return (
            want_requests and now >= self.ask_requests_at,
            want_tokens and now >= self.ask_tokens_at,
            want_slots if now >= self.ask_slots_at else 0,
        )

    def holds_nothing(self) -> bool:
        return self.requests == 0 and self.tokens == 0 and self.slots == 0 and self.in_use == 0


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
