"""Each ingress replica's side of the quotas: capacity leased from the quota keeper in batches, spent
locally, so admitting a request makes no remote call in the common case.

`QuotaLeaser.admit(tenant, limits)` takes one request unit and one concurrency slot from what this
replica holds for the tenant; only when one of them has run out does it ask the keeper
(serve/deployments/quota_keeper.py), once for all the requests of that tenant waiting on this replica.
Once the request is parsed and its worst case is known, `QuotaTicket.reserve(tokens)` takes that many
candidate tokens from the replica's token lease (asking the keeper for the shortfall, whole, when the
lease holds less). What it cannot get is a 429 `rate_limited` naming the limit, with the time until a
retry can be admitted as `Retry-After`. The ticket is finished when the request ends: the slot is
released, what the request did not generate of its reservation comes back to the lease (all of it, and
the request unit too, for a request refused before any engine work).

A background loop (every `SYNC_S`) renews a busy tenant's leases at half, settles token debts, hands
back what an idle tenant holds (after `IDLE_S`), a token lease swollen by refunds, or the spare slots the
keeper asks for, and sends a heartbeat for slots in use, in one keeper call for all tenants. If the
keeper cannot be reached, requests are admitted (logged): a quota failure must not take the service down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ray.serve.handle import DeploymentHandle

from aligner.errors import RateLimited
from serve.deployments.quota_keeper import LeaseGrant, LeaseRequest, QuotaLimits
from serve.gateway.quota_lease import (
    Seen,
    TenantLease,
    limits_of,
    rate_limit_headers,
    renew_at_half,
    reset_format,
    token_refusal,
    token_surplus,
)
from serve.metrics import Metrics

log = logging.getLogger("aligner.serve")

SYNC_S = 0.25  # the background loop's period
IDLE_S = 1.0  # a tenant with no admission for this long hands back what it holds; a spare slot too
HEARTBEAT_S = 2.0  # slots in use are reported at least this often (the keeper frees silent replicas' slots)
KEEPER_TIMEOUT_S = 2.0  # an exchange slower than this admits the request anyway
KEEPER_RETRY_S = 5.0  # after a failed exchange admissions skip the keeper this long (a hung one stalls no one)
TOKEN_RECHECK_S = 1.0  # after the keeper could not cover a reservation, it is asked again this late at the
# soonest, unless the bucket's refill alone covers the next one sooner (a flood is refused here)

__all__ = ["QuotaLeaser", "QuotaTicket", "keeper_exchange", "limits_of", "reset_format"]

Exchange = Callable[[list[LeaseRequest]], Awaitable[list[LeaseGrant]]]


def keeper_exchange(keeper: DeploymentHandle) -> Exchange:
    """Exchanges with the keeper deployment (serve/app.py binds it) through its handle."""

    async def exchange(asks: list[LeaseRequest]) -> list[LeaseGrant]:
        grants: list[LeaseGrant] = await keeper.exchange.remote(asks)
        return grants

    return exchange


class QuotaTicket:
    """One admitted request's quota: `reserve` takes its worst case of candidate tokens once it is known;
    `finish` releases its slot and refunds what it did not use."""

    def __init__(self, leaser: QuotaLeaser, lease: TenantLease):
        self.leaser, self.lease = leaser, lease
        self.reserved = 0  # candidate tokens taken from the lease for this request
        self.done = False

    async def reserve(self, tokens: int) -> None:
        """Take `tokens` (the request's worst case) from the tenant's allowance, or RateLimited."""
        await self.leaser.reserve(self, tokens)

    def finish(self, candidate_tokens: int | None = 0, refund_request: bool = False) -> None:
        """The request ended having generated `candidate_tokens` (None: unknown, so its reservation stays
        spent; beyond the reservation: a debt the next exchange hands to the keeper). `refund_request`: it
        was refused before any engine work, so its request unit comes back too."""
        if self.done:
            return
        self.done = True
        lease = self.lease
        lease.in_use = max(0, lease.in_use - 1)
        if lease.limits.candidate_tokens_per_minute is not None and candidate_tokens is not None:
            lease.tokens += self.reserved - max(0, candidate_tokens)
        if refund_request and lease.limits.requests_per_minute is not None:
            lease.requests += 1

    def headers(self) -> dict[str, str]:
        return self.leaser.headers(self.lease)


class QuotaLeaser:
    """One per ingress replica: each tenant's leases, and the loop that keeps them."""

    def __init__(
        self,
        exchange: Exchange,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        leaser: str | None = None,
    ):
        self.exchange, self.metrics, self.clock = exchange, metrics, clock
        self.leaser = leaser or uuid.uuid4().hex
        self.leases: dict[str, TenantLease] = {}
        self._task: asyncio.Task | None = None
        self._keeper_down_until = float("-inf")

    async def admit(self, tenant: str, limits: QuotaLimits) -> QuotaTicket | None:
        """The request's ticket (None: the tenant has no limits), or RateLimited naming the limit."""
        lease = self.leases.get(tenant)
        if not limits.any:
            if lease is not None:  # the limits were lifted: the loop hands back what it holds
                lease.limits = limits
            return None
        if lease is None:
            lease = self.leases[tenant] = TenantLease(tenant, limits)
        lease.admitting += 1
        ticket = None
        try:
            ticket = await self._admit(lease, limits)
            return ticket
        finally:
            lease.admitting -= 1
            if ticket is None and limits.max_concurrent_requests is not None:
                # It left without its slot (refused, or its client went away while the keeper was asked
                # for slots for every admission under way, a grant that may land after this): the next sync
                # hands spare slots back, so the tenant's other ingress replicas get the ones this one
                # does not use.
                lease.contended = True

    async def _admit(self, lease: TenantLease, limits: QuotaLimits) -> QuotaTicket | None:
        tenant = lease.tenant
        changed, lease.limits = lease.limits != limits, limits  # a changed policy is in force from this request on
        if changed or any(lease.due(self.clock())):
            if not await self._shielded(self._admission_exchange(lease, changed)):
                return None  # the keeper is unreachable: admitted, not counted
        refusal = self._refusal(lease)
        if refusal is not None:
            if self.metrics is not None:
                self.metrics.rate_limited.labels(tenant=tenant, limit=refusal.limit).inc()
            raise refusal
        lease.last_admit = self.clock()
        if limits.requests_per_minute is not None:
            lease.requests -= 1
        lease.in_use += 1  # counted under any limit: a lease with requests in flight is kept
        return QuotaTicket(self, lease)

    def _refusal(self, lease: TenantLease) -> RateLimited | None:
        """The first limit this replica cannot admit one more request under, as the error to answer (the
        token limit is checked by the request's reservation, once its worst case is known)."""
        want_requests, _, want_slots = lease.lacks()
        limits = lease.limits
        if want_slots:
            return RateLimited(
                f"max_concurrent_requests: tenant {lease.tenant!r} already has {limits.max_concurrent_requests} "
                "requests in flight, its limit; retry when one ends",
                "max_concurrent_requests",
                retry_after_s=1.0,
            )
        if want_requests:
            return RateLimited(
                f"requests_per_minute: tenant {lease.tenant!r} has used its limit of {limits.requests_per_minute} "
                "requests per minute; retry later",
                "requests_per_minute",
                retry_after_s=self._retry_s(lease.request_bucket),
            )
        return None

    # -- token reservations -------------------------------------------------------------------------

    async def reserve(self, ticket: QuotaTicket, tokens: int) -> None:
        """Take `tokens` from the lease for `ticket`'s request: locally when the lease holds them, else with
        one keeper call for the shortfall (none while the keeper has just said it lacks it and its refill
        alone cannot cover it yet). RateLimited when it cannot be covered now."""
        lease = ticket.lease
        if ticket.done or tokens <= 0 or lease.limits.candidate_tokens_per_minute is None:
            return
        if lease.tokens < tokens:
            if not await self._shielded(self._token_exchange(lease, tokens)):
                return  # the keeper is unreachable: admitted, not counted
        if lease.tokens < tokens:
            refusal = token_refusal(lease, tokens, self.clock())
            if self.metrics is not None:
                self.metrics.rate_limited.labels(tenant=lease.tenant, limit=refusal.limit).inc()
            raise refusal
        lease.tokens -= tokens
        ticket.reserved += tokens

    def _may_ask_tokens(self, lease: TenantLease, tokens: int) -> bool:
        seen, now = lease.token_bucket, self.clock()
        if seen is None or now >= lease.ask_tokens_at:
            return True
        return seen.level(now) + max(0, lease.tokens) >= tokens

    def _back_off(self, lease: TenantLease, due: tuple[bool, bool, int], grant: LeaseGrant) -> None:
        """What the keeper refused is asked for again once its bucket holds a whole lease (a slot: after
        the other replicas had a loop round to hand back their spare ones)."""
        now = self.clock()
        if due[0] and grant.requests == 0 and grant.request_bucket is not None:
            lease.ask_requests_at = now + grant.request_bucket.lease_wait_s()
        if due[1] and grant.tokens == 0 and grant.token_bucket is not None:
            lease.ask_tokens_at = now + grant.token_bucket.lease_wait_s()
        if due[2] and grant.slots == 0:
            lease.ask_slots_at = now + SYNC_S

    def _retry_s(self, seen: Seen | None) -> float:
        """When a retry is admitted: once the bucket holds a whole lease (only then does this replica ask again)."""
        if seen is None:
            return 1.0
        elapsed = self.clock() - seen.at
        return max(1.0, seen.state.lease_wait_s() - elapsed)

    # -- exchanges with the keeper ----------------------------------------------------------------

    @staticmethod
    async def _shielded(exchange: Coroutine[Any, Any, bool]) -> bool:
        """An admission's exchange, run to its end even when its request is cancelled meanwhile (the client
        went away): it holds the lease's lock until the keeper has answered and the lease is settled, so no
        second exchange starts from the same lease (the keeper would count its report over the first's),
        nothing the ask took from the lease (a debt, units handed back) is lost, and no grant the keeper
        counted goes unapplied."""
        return await asyncio.shield(asyncio.ensure_future(exchange))

    async def _admission_exchange(self, lease: TenantLease, changed: bool) -> bool:
        """What admission lacks, from the keeper; False when it cannot be asked (the request is then
        admitted, not counted)."""
        async with lease.lock:  # one exchange for every request of the tenant waiting here
            due = lease.due(self.clock())
            if not (changed or any(due)):
                return True
            # Under changed limits, what was leased under the old ones goes back first.
            if self.clock() < self._keeper_down_until:  # it failed a moment ago
                return False
            grant = await self._settle(lease, lease.ask(self.leaser, *due, hand_back=changed))
            if grant is None:
                return False
            self._back_off(lease, due, grant)
            return True

    async def _token_exchange(self, lease: TenantLease, tokens: int) -> bool:
        """The tokens a reservation lacks, from the keeper (False: it cannot be asked)."""
        async with lease.lock:  # one exchange at a time for the tenant on this replica
            if lease.tokens < tokens and self._may_ask_tokens(lease, tokens):
                if self.clock() < self._keeper_down_until:  # it failed a moment ago
                    return False
                ask = lease.ask(self.leaser, False, True, 0, need_tokens=tokens - max(0, lease.tokens))
                if await self._settle(lease, ask) is None:
                    return False
                if lease.tokens < tokens:
                    lease.ask_tokens_at = self.clock() + TOKEN_RECHECK_S
            return True

    async def _settle(self, lease: TenantLease, ask: LeaseRequest) -> LeaseGrant | None:
        """One exchange for `lease`: the grant applied, or (None: the keeper is unreachable) what the ask
        took back in the lease for the next exchange."""
        grants = await self._call([ask])
        if grants is None:
            lease.requests += ask.give_requests
            lease.tokens += ask.give_tokens
            self._keeper_down_until = self.clock() + KEEPER_RETRY_S
            return None
        lease.apply(grants[0], self.clock())
        return grants[0]

    async def _call(self, asks: list[LeaseRequest]) -> list[LeaseGrant] | None:
        try:
            grants = await asyncio.wait_for(self.exchange(asks), KEEPER_TIMEOUT_S)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("quotas: the quota keeper did not answer (%s); admitting without quotas", exc)
            return None
        self._keeper_down_until = float("-inf")
        return grants

    async def sync(self) -> None:
        """One round of the background loop: renew, settle, hand back, heartbeat (one keeper call)."""
        now = self.clock()
        chosen: list[tuple[TenantLease, LeaseRequest]] = []
        for tenant, lease in list(self.leases.items()):
            if lease.lock.locked():  # an admission is exchanging for it right now
                continue
            idle = now - lease.last_admit > IDLE_S
            if idle and lease.holds_nothing():
                del self.leases[tenant]
                continue
            limits = lease.limits
            want_requests = not idle and renew_at_half(
                limits.requests_per_minute, lease.requests, lease.request_bucket, now
            )
            want_tokens = not idle and renew_at_half(
                limits.candidate_tokens_per_minute, lease.tokens, lease.token_bucket, now
            )
            hand_back = idle and (lease.requests != 0 or lease.tokens != 0 or lease.slots > lease.in_use)
            heartbeat = lease.slots > 0 and now - lease.last_exchange > HEARTBEAT_S
            surplus = 0 if idle else token_surplus(limits.candidate_tokens_per_minute, lease.tokens, lease.token_bucket)
            if want_requests or want_tokens or hand_back or heartbeat or surplus or lease.tokens < 0 or lease.contended:
                ask = lease.ask(self.leaser, want_requests, want_tokens, 0, hand_back=hand_back, surplus_tokens=surplus)
                chosen.append((lease, ask))
        if not chosen:
            return
        for lease, _ in chosen:
            await lease.lock.acquire()  # free (checked above): returns at once
        try:
            grants = await self._call([ask for _, ask in chosen])
            for (lease, _), grant in zip(chosen, grants or []):
                lease.apply(grant, self.clock())
            if grants is None:  # not delivered: units and debts are kept for the next try (slots handed
                for lease, ask in chosen:  # back stay handed back: the keeper frees them at the next exchange)
                    lease.requests += ask.give_requests
                    lease.tokens += ask.give_tokens
        finally:
            for lease, _ in chosen:
                lease.lock.release()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("quotas: the lease loop failed", exc_info=True)
            await asyncio.sleep(SYNC_S)

    async def close(self) -> None:
        """Stop the loop and hand everything unused back (the replica is stopping)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        asks = [lease.ask(self.leaser, False, False, 0, hand_back=True) for lease in self.leases.values()]
        if asks:
            await self._call(asks)

    # -- OpenAI's rate-limit headers ----------------------------------------------------------------

    def headers(self, lease: TenantLease) -> dict[str, str]:
        """x-ratelimit-{limit,remaining,reset}-{requests,tokens} for the limits the tenant has: the
        tenant's remaining capacity over every replica, as the keeper last said plus what this one holds."""
        return rate_limit_headers(lease, self.clock())

    def headers_for(self, tenant: str) -> dict[str, str]:
        """The same for a tenant whose request holds no ticket (refused at admission): none if this replica
        holds nothing of it."""
        lease = self.leases.get(tenant)
        return {} if lease is None or not lease.limits.any else self.headers(lease)
