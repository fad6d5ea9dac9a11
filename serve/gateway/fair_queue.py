"""Fair scheduling of the model replicas across tenants, at each ingress replica.

Without it every request goes straight to the model deployment and Ray Serve queues them first come,
first served, in one queue shared by everyone: a tenant flooding best-of-16 fills the replicas and the
queue, and a tenant sending `sample` waits behind all of it, or gets 429. The `FairQueue` sits in front
of the DeploymentHandle and holds this ingress's share of the replicas' request slots
(`ServerConfig.fair_queue_capacity`); a request takes a slot before it is sent to a replica and gives it
back when it ends, so when the replicas are saturated the queued work waits here, where its order is
chosen:

- Higher priority tiers first (`TenantPolicy.priority`).
- Within a tier, the Virtual Token Counter of Sheng et al., "Fairness in Serving Large Language
  Models" (OSDI 2024): each tenant's counter grows by the tokens it is served divided by its weight
  (`TenantPolicy.weight`), and the backlogged tenant with the smallest counter goes next. Tokens are
  generated candidate tokens, the fan-out: a request is charged its worst case when it is dispatched
  (its strategy's cost model, within its budget) and corrected to what it generated when it ends.
- A tenant that becomes backlogged is lifted to the smallest settled counter among the other active
  tenants (those with requests queued or in flight; settled: less what their requests in flight were
  charged in advance, which their ends mostly refund), or to the settled counter of the last request
  that ended when none is active: idle time banks no credit, so a tenant cannot save up to burst past
  the others later. Lifting to the charged counter instead would put a light tenant behind a heavy
  one at every arrival: the heavy tenant's refunds drop it below the light tenant just lifted to it.
- Each tenant has its own bounded queue (`tenant_queue_limit`): a flood from one tenant is refused with
  that tenant's 429 (`overloaded`, Retry-After) while the others keep being served.
- Room in the engine's batch for a tenant that arrives (`busy_sequences`): order alone cannot help a
  light tenant once a heavy one's requests are running, because vLLM never stops a running sequence for
  a waiting one and a decode step slows with the batch (on 2 CPU cores a 16-token request took 1.0 s
  alone, 1.4 s beside 8 or 16 running sequences and 2.2 s beside 32). So the sequences in flight are
  bounded by `busy_sequences`: a request is dispatched only while they, its own included, stay within
  it, or nothing else is in flight (a wider request still runs) -- except a tenant's arrival (its
  request when nothing of it is queued or in flight here), which goes whenever a slot is free and
  counts in the sequences in flight like any other. When the next in fair order does not fit, the
  requests behind it wait too (arrivals excepted), so the sequences drain for it rather than narrower
  requests passing it for ever. A tenant that sends one request after another arrives every time and
  decodes beside at most `busy_sequences` sequences of the others (or one request of theirs wider than
  that), at the price of a smaller batch (less throughput) for a tenant alone.

With `fair_scheduling` off the same slots are handed out first come, first served from one queue of
`max_queued_requests` shared by every tenant: the order and the bound of Ray Serve's own queue, as
before this scheduler. Nothing here is remote or blocking: the queue is this ingress's, in its event
loop.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from dataclasses import dataclass, field

from aligner.contract import AlignRequest
from aligner.errors import Overloaded
from aligner.safety.config import SafetyConfig, resamples_allowed


@dataclass(frozen=True)
class FairShare:
    """What a request's tenant is given by its policy: its weight and its tier."""

    tenant: str
    weight: float = 1.0  # > 0: the tenant's share of the tokens served, relative to other tenants'
    tier: int = 0  # higher tiers are dispatched first


def request_sequences(request: AlignRequest, safety: SafetyConfig | None) -> int:
    """The most candidate sequences a request decodes at once: its search's, or the candidates its tenant's
    `resample` action may draw in one engine request after it (one after the other: the larger counts)."""
    return max(request.search.sequences(request.shape()), resamples_allowed(safety))


def request_cost(request: AlignRequest) -> int:
    """The generated candidate tokens a request may cost at most (its strategy's worst case, within its
    budget): what it is charged when it is dispatched, until it ends with its actual usage."""
    return request.search.cost(request.shape()).within(request.budget).candidate_tokens


class Slot:
    """A request's place on the model replicas, held from its dispatch until `release`."""

    def __init__(
        self, queue: FairQueue, share: FairShare, charged: int, sequence: int, lanes: int = 1, arrival: bool = False
    ):
        self.queue = queue
        self.share = share
        self.charged = charged  # the tokens its tenant's counter was charged at dispatch
        self.lanes = lanes  # the candidate sequences it may decode at once
        self.sequence = sequence  # its place in the dispatch order of its queue (0 first)
        # nothing of its tenant was queued or in flight when it came: how long it waited is the server's doing
        self.arrival = arrival
        self.released = False

    def release(self, tokens: int | None) -> None:
        """The request ended: give the slot back and correct its tenant's counter to the `tokens` it
        generated (None: unknown, the estimate stays charged). Only the first call counts."""
        if not self.released:
            self.released = True
            self.queue._release(self, tokens)


@dataclass(eq=False)  # compared by identity: each waiter is one request
class _Waiter:
    share: FairShare
    cost: int
    lanes: int  # candidate sequences it may decode at once
    arrival: bool  # nothing of its tenant was queued or in flight when it came: not held by busy_sequences
    order: int  # arrival order: FIFO within a tenant, and between tenants when fairness is off
    future: asyncio.Future[Slot] = field(repr=False)


class FairQueue:
    """`slots` requests in flight at once; the others wait in per-tenant queues, dispatched by tier
    and virtual token counter (`fair=True`) or first come, first served (`fair=False`)."""

    def __init__(
        self,
        slots: int,
        *,
        fair: bool = True,
        queue_limit: int = 64,
        retry_after_s: float = 1.0,
        busy_sequences: int | None = None,
    ):
        if slots < 1:
            raise ValueError(f"a fair queue needs at least one slot, got {slots}")
        if busy_sequences is not None and busy_sequences < 1:
            raise ValueError(f"busy_sequences must be at least 1, got {busy_sequences}")
        self.slots = slots
        self.fair = fair
        # fair only: the candidate sequences in flight past which only arrivals go (module docstring)
        self.busy_sequences = busy_sequences if fair else None
        self.sequences_in_flight = 0  # candidate sequences of the requests holding a slot
        # fair: each tenant's queue bound; FIFO: the one queue's bound.
        self.queue_limit = queue_limit
        self.retry_after_s = retry_after_s
        self.in_flight = 0
        self.dispatches = 0  # requests dispatched so far
        self.counters: dict[str, float] = {}  # each tenant's virtual token counter (tokens / weight)
        self._queues: dict[str, deque[_Waiter]] = {}  # the tenants that are backlogged, each in arrival order
        self._advance: dict[str, float] = {}  # per tenant in flight: what its requests were charged at dispatch
        self._running: dict[str, int] = {}  # per tenant in flight: its requests holding a slot
        self._last_settled = 0.0  # the settled counter of the tenant whose request ended last
        self._arrivals = itertools.count()

    # -- what callers use ---------------------------------------------------------------------------

    async def acquire(self, share: FairShare, cost: int, lanes: int = 1) -> Slot:
        """A slot for a request of `cost` tokens that decodes up to `lanes` sequences at once (at once when
        one is free for it and nobody waits); Overloaded when the tenant's queue (the shared queue, fairness
        off) is full. Cancelled while it waits, the request leaves the queue and charges nothing."""
        self._check_room(share)
        arrival = not self.active(share.tenant)
        if share.tenant not in self._queues:
            self._lift(share)
        future = asyncio.get_running_loop().create_future()
        waiter = _Waiter(share, cost, max(1, lanes), arrival, next(self._arrivals), future)
        self._queues.setdefault(share.tenant, deque()).append(waiter)
        self._pump()
        try:
            return await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                waiter.future.result().release(0)  # dispatched as it was cancelled: it never ran
            else:
                self._forget(waiter)
                self._pump()
            raise

    def active(self, tenant: str) -> bool:
        """The tenant has requests queued or in flight here: a request of it now is not its arrival."""
        return tenant in self._queues or tenant in self._running

    def queued(self, tenant: str | None = None) -> int:
        """Requests waiting for a slot: the tenant's, or everyone's."""
        if tenant is not None:
            return len(self._queues.get(tenant, ()))
        return sum(len(q) for q in self._queues.values())

    # -- admission ------------------------------------------------------------------------------------

    def _check_room(self, share: FairShare) -> None:
        if self.fair:
            if self.queued(share.tenant) >= self.queue_limit and not self._free_now():
                raise Overloaded(
                    f"tenant {share.tenant!r} has {self.queue_limit} requests queued for the model replicas "
                    "(tenant_queue_limit); retry later",
                    retry_after_s=self.retry_after_s,
                )
        elif self.queued() >= self.queue_limit and not self._free_now():
            raise Overloaded(
                f"the server is at capacity ({self.queue_limit} requests queued per ingress); retry later",
                retry_after_s=self.retry_after_s,
            )

    def _free_now(self) -> bool:
        """A request arriving now is dispatched at once (a slot is free and nobody waits for one)."""
        return self.in_flight < self.slots and not self._queues

    def settled(self, tenant: str) -> float:
        """The tenant's counter less what its requests in flight were charged in advance."""
        return self.counters.get(tenant, 0.0) - self._advance.get(tenant, 0.0)

    def _lift(self, share: FairShare) -> None:
        """VTC's lift of a tenant that becomes backlogged (module docstring): idle time banks no credit."""
        if not self.fair:
            return
        active = {*self._queues, *self._running} - {share.tenant}
        floor = min(self.settled(t) for t in active) if active else self._last_settled
        self.counters[share.tenant] = max(self.counters.get(share.tenant, floor), floor)

    # -- dispatch ---------------------------------------------------------------------------------------

    def _next(self) -> _Waiter | None:
        """The waiter to dispatch next, if any may go now (a slot is free; the queues are not empty)."""
        heads = [q[0] for q in self._queues.values()]
        if not self.fair:
            return min(heads, key=lambda w: w.order)
        bound, blocked = self.busy_sequences, False
        for waiter in sorted(heads, key=lambda w: (-w.share.tier, self.counters[w.share.tenant], w.order)):
            if bound is None or waiter.arrival:
                return waiter
            if blocked:
                continue
            if not self.sequences_in_flight or self.sequences_in_flight + waiter.lanes <= bound:
                return waiter
            blocked = True  # the sequences drain for it: no request behind it but an arrival passes it
        return None

    def _pump(self) -> None:
        while self.in_flight < self.slots and self._queues:
            waiter = self._next()
            if waiter is None:
                return
            self._forget(waiter)
            if waiter.future.done():  # its task was cancelled and has not run since: it leaves without a slot
                continue
            tenant = waiter.share.tenant
            if self.fair:
                charge = waiter.cost / waiter.share.weight
                self.counters[tenant] = self.counters.get(tenant, 0.0) + charge
                self._advance[tenant] = self._advance.get(tenant, 0.0) + charge
            self._running[tenant] = self._running.get(tenant, 0) + 1
            self.in_flight += 1
            self.sequences_in_flight += waiter.lanes
            slot = Slot(self, waiter.share, waiter.cost, self.dispatches, waiter.lanes, waiter.arrival)
            waiter.future.set_result(slot)
            self.dispatches += 1

    def _forget(self, waiter: _Waiter) -> None:
        """Take `waiter` out of its tenant's queue (if still there); a tenant with none left is no longer
        backlogged."""
        queue = self._queues.get(waiter.share.tenant)
        if queue is None or waiter not in queue:
            return
        queue.remove(waiter)
        if not queue:
            del self._queues[waiter.share.tenant]

    def _release(self, slot: Slot, tokens: int | None) -> None:
        tenant, weight = slot.share.tenant, slot.share.weight
        self.in_flight -= 1
        self.sequences_in_flight -= slot.lanes
        self._running[tenant] -= 1
        if not self._running[tenant]:
            del self._running[tenant]
        if self.fair:
            if tokens is not None:
                self.counters[tenant] += (tokens - slot.charged) / weight
            self._advance[tenant] -= slot.charged / weight
            if tenant not in self._running:
                del self._advance[tenant]  # no float residue: nothing of the tenant's is in flight
            self._last_settled = self.settled(tenant)
        self._pump()
