"""serve/gateway/fair_queue.py: the order in which queued requests get the model replicas' slots.

Pure logic on asyncio, no Ray: requests are `acquire` calls, a slot is given back with `release`."""

from __future__ import annotations

import asyncio

import pytest

from aligner.contract import AlignRequest
from aligner.errors import Overloaded
from serve.config import ServerConfig
from serve.gateway.fair_queue import FairQueue, FairShare, Slot, request_cost

A, B = FairShare("a"), FairShare("b")


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


class Backlog:
    """Tenants that keep `depth` requests of a fixed cost queued at all times, served one slot at a time,
    each request generating exactly what it was charged: the tokens each tenant was served."""

    def __init__(self, queue: FairQueue, demands: dict[FairShare, int], depth: int = 4):
        self.queue, self.demands, self.depth = queue, demands, depth
        self.served = {share.tenant: 0 for share in demands}
        self.order: list[str] = []
        self.pending: dict[asyncio.Task[Slot], FairShare] = {}

    def top_up(self) -> None:
        for share, cost in self.demands.items():
            while sum(1 for s in self.pending.values() if s == share) < self.depth:
                self.pending[asyncio.ensure_future(self.queue.acquire(share, cost))] = share

    async def serve(self, requests: int) -> None:
        self.top_up()
        await settle()
        for _ in range(requests):
            done = next(t for t in self.pending if t.done())
            share = self.pending.pop(done)
            self.served[share.tenant] += self.demands[share]
            self.order.append(share.tenant)
            self.top_up()
            done.result().release(self.demands[share])
            await settle()

    async def close(self) -> None:
        for task in self.pending:
            task.cancel()
        await asyncio.gather(*self.pending, return_exceptions=True)


def shares(weights: tuple[float, float], costs: tuple[int, int], requests: int = 400) -> float:
    """Tenant a's share of the tokens served while both stay backlogged."""

    async def scenario() -> float:
        queue = FairQueue(1)
        backlog = Backlog(
            queue, {FairShare("a", weight=weights[0]): costs[0], FairShare("b", weight=weights[1]): costs[1]}
        )
        await backlog.serve(requests)
        await backlog.close()
        return backlog.served["a"] / (backlog.served["a"] + backlog.served["b"])

    return asyncio.run(scenario())


@pytest.mark.parametrize(
    ("weights", "costs"),
    [((1, 1), (128, 16)), ((1, 1), (16, 128)), ((3, 1), (128, 16)), ((3, 1), (16, 16)), ((1, 3), (64, 16))],
    ids=["1:1 heavy-a", "1:1 heavy-b", "3:1 heavy-a", "3:1 same", "1:3"],
)
def test_backlogged_tenants_get_tokens_in_proportion_to_their_weights(weights, costs):
    """Counted in tokens, not requests: a tenant sending 8x larger requests gets 8x fewer of them."""
    share = shares(weights, costs)
    wanted = weights[0] / sum(weights)
    assert abs(share - wanted) <= 0.1 * wanted, (share, wanted)


def test_the_tenant_with_the_smallest_counter_goes_next_counted_at_dispatch():
    async def scenario() -> list[str]:
        queue = FairQueue(1)
        first = await queue.acquire(A, 1)  # a holds the only slot
        waiting = [asyncio.ensure_future(queue.acquire(s, c)) for s, c in [(A, 100), (A, 100), (B, 10), (B, 10)]]
        await settle()
        order = []
        slot = first
        for _ in waiting:
            slot.release(None)
            await settle()
            task = next(t for t in waiting if t.done() and t not in order)
            order.append(task)
            slot = task.result()
        slot.release(None)
        return [t.result().share.tenant for t in order]

    # a holds the slot, charged 1 in advance; b is lifted to a's settled 0. Then the smallest counter each
    # time: b (0 -> 10), a (1 -> 101), b (10 -> 20), a.
    assert asyncio.run(scenario()) == ["b", "a", "b", "a"]


def test_an_idle_tenant_banks_no_credit_it_is_lifted_when_it_becomes_backlogged():
    """b was away while a was served 100 requests alone; when b comes back it gets its share from
    then on, not the 100 requests' worth of catching up that its counter of 0 would give it."""

    async def scenario() -> list[str]:
        queue = FairQueue(1)
        alone = Backlog(queue, {A: 10}, depth=2)
        await alone.serve(100)
        both = Backlog(queue, {A: 10, B: 10}, depth=2)
        both.pending = alone.pending  # a's queued requests stay queued
        await both.serve(20)
        await both.close()
        return both.order

    order = asyncio.run(scenario())
    assert abs(order.count("b") - order.count("a")) <= 2, order


def test_a_higher_priority_tier_goes_first_whatever_its_counter():
    async def scenario() -> list[str]:
        queue = FairQueue(1)
        held = await queue.acquire(FairShare("gold", tier=2), 10_000)  # gold's counter is far ahead
        low = asyncio.ensure_future(queue.acquire(FairShare("free"), 1))
        high = asyncio.ensure_future(queue.acquire(FairShare("gold", tier=2), 1))
        await settle()
        held.release(None)
        await settle()
        assert high.done() and not low.done()
        high.result().release(None)
        await settle()
        low.result().release(None)
        return ["gold", "free"]

    assert asyncio.run(scenario()) == ["gold", "free"]


def test_the_counter_is_corrected_to_the_tokens_generated_when_the_request_ends():
    async def scenario() -> tuple[float, float, float]:
        queue = FairQueue(2)
        slot = await queue.acquire(FairShare("a", weight=2.0), 1000)
        charged = queue.counters["a"]
        slot.release(100)
        refused = await queue.acquire(FairShare("a", weight=2.0), 1000)
        refused.release(0)  # refused before any engine work: charged nothing
        return charged, queue.counters["a"], queue.in_flight

    assert asyncio.run(scenario()) == (500.0, 50.0, 0)


def test_a_flooding_tenant_gets_its_own_429_and_the_others_are_still_queued():
    async def scenario() -> None:
        queue = FairQueue(1, queue_limit=2, retry_after_s=3)
        held = await queue.acquire(A, 1)
        queued = [asyncio.ensure_future(queue.acquire(A, 1)) for _ in range(2)]
        await settle()
        with pytest.raises(Overloaded) as refused:
            await queue.acquire(A, 1)
        assert refused.value.retry_after_s == 3 and "'a'" in refused.value.message
        assert "tenant_queue_limit" in refused.value.message
        light = asyncio.ensure_future(queue.acquire(FairShare("b", queue_limit=1), 1))  # a policy's own bound
        await settle()
        with pytest.raises(Overloaded):
            await queue.acquire(FairShare("b", queue_limit=1), 1)
        held.release(None)
        await settle()
        assert light.done(), "b's request goes before a's two queued ones"
        for task in queued:
            task.cancel()
        light.result().release(None)
        await asyncio.gather(*queued, return_exceptions=True)

    asyncio.run(scenario())


def test_fairness_off_is_first_come_first_served_in_one_shared_queue():
    async def scenario() -> list[str]:
        queue = FairQueue(1, fair=False, queue_limit=3)
        held = await queue.acquire(A, 1000)
        arrivals = [A, A, B]
        waiting = [asyncio.ensure_future(queue.acquire(s, 1)) for s in arrivals]
        await settle()
        with pytest.raises(Overloaded) as refused:  # the one queue is full, for every tenant
            await queue.acquire(FairShare("c"), 1)
        assert "3 requests queued per ingress" in refused.value.message
        order, slot = [], held
        while len(order) < len(waiting):
            slot.release(None)
            await settle()
            task = next(t for t in waiting if t.done() and t.result() not in order)
            slot = task.result()
            order.append(slot)
        slot.release(None)
        return [s.share.tenant for s in order]

    assert asyncio.run(scenario()) == ["a", "a", "b"]


def test_a_request_cancelled_while_queued_leaves_the_queue_and_frees_its_place():
    async def scenario() -> None:
        queue = FairQueue(1, queue_limit=1)
        held = await queue.acquire(A, 1)
        waiting = asyncio.ensure_future(queue.acquire(A, 50))
        await settle()
        assert queue.queued("a") == 1
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert queue.queued() == 0 and waiting.cancelled()
        again = asyncio.ensure_future(queue.acquire(A, 1))  # its place in a's queue is free again
        await settle()
        held.release(None)
        await settle()
        assert again.done() and queue.in_flight == 1 and queue.counters["a"] == 2.0  # the cancelled one: nothing
        again.result().release(None)
        assert queue.in_flight == 0

    asyncio.run(scenario())


def test_a_slot_freed_right_after_a_cancellation_skips_the_cancelled_request():
    """The cancelled task has not run yet (its future is cancelled, it is still queued): the slot goes to
    the next request, not to the one that left."""

    async def scenario() -> None:
        queue = FairQueue(1)
        held = await queue.acquire(A, 1)
        gone = asyncio.ensure_future(queue.acquire(B, 1))
        stays = asyncio.ensure_future(queue.acquire(FairShare("c"), 1))
        await settle()
        gone.cancel()
        held.release(None)
        await settle()
        assert gone.cancelled() and stays.done() and queue.in_flight == 1 and queue.queued() == 0
        stays.result().release(None)

    asyncio.run(scenario())


def test_a_request_cancelled_as_it_is_dispatched_gives_its_slot_back():
    async def scenario() -> None:
        queue = FairQueue(1)
        held = await queue.acquire(A, 1)
        waiting = asyncio.ensure_future(queue.acquire(B, 50))
        await settle()
        held.release(None)  # b's future has its slot now, its task has not run yet
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert queue.in_flight == 0 and queue.counters["b"] == 0.0  # lifted to a's settled 0, charged nothing
        assert (await queue.acquire(A, 1)).released is False

    asyncio.run(scenario())


def test_a_release_counts_once():
    async def scenario() -> int:
        queue = FairQueue(1)
        slot = await queue.acquire(A, 5)
        slot.release(5)
        slot.release(5)
        return queue.in_flight

    assert asyncio.run(scenario()) == 0


def test_a_request_is_charged_its_worst_case_in_candidate_tokens():
    sample = AlignRequest.parse({"prompt": "hi", "max_tokens": 16})
    data = {"prompt": "hi", "max_tokens": 32, "preference_vector": {"verbosity": -1.0}}
    best = AlignRequest.parse({**data, "search": {"strategy": "best_of_n", "n": 8}})
    budgeted = AlignRequest.parse(
        {**data, "search": {"strategy": "best_of_n", "n": 8}, "budget": {"max_candidate_tokens": 40}}
    )
    assert (request_cost(sample), request_cost(best), request_cost(budgeted)) == (16, 256, 40)


@pytest.mark.parametrize(
    ("config", "slots"),
    [
        ({"num_replicas": 2, "max_ongoing_requests": 2}, 4),
        ({"num_replicas": 2, "max_ongoing_requests": 2, "ingress_replicas": 3}, 2),  # rounded up
        ({"autoscaling": {"min_replicas": 1, "max_replicas": 4}, "max_ongoing_requests": 8, "ingress_replicas": 2}, 16),
        ({"num_replicas": 2, "fair_queue_slots": 3}, 3),
    ],
)
def test_an_ingress_holds_its_share_of_the_replicas_slots(config, slots):
    assert ServerConfig.load(config).fair_queue_capacity() == slots
