"""serve/gateway/fair_queue.py: the order in which queued requests get the model replicas' slots.

Pure logic on asyncio, no Ray: requests are `acquire` calls, a slot is given back with `release`."""

from __future__ import annotations

import asyncio

import pytest

from aligner.contract import AlignRequest
from aligner.errors import Overloaded
from aligner.safety.config import SafetyConfig
from serve.config import ServerConfig
from serve.gateway.fair_queue import FairQueue, FairShare, Slot, request_cost, request_sequences

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
        light = asyncio.ensure_future(queue.acquire(B, 1))  # b's own queue still has room
        await settle()
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


def test_a_busy_tenant_leaves_room_in_the_batch_for_a_tenant_that_arrives():
    """busy_sequences 16: a tenant's requests stop at 16 sequences in flight; another tenant's arrival goes
    at once while a slot is free, and counts in the sequences in flight."""

    async def scenario() -> None:
        queue = FairQueue(8, busy_sequences=16)
        heavy = [asyncio.ensure_future(queue.acquire(A, 256, lanes=8)) for _ in range(5)]
        await settle()
        assert [t.done() for t in heavy] == [True, True, False, False, False]  # a third would pass 16
        assert queue.sequences_in_flight == 16 and queue.in_flight == 2
        light = await asyncio.wait_for(queue.acquire(B, 16, lanes=1), 1)  # b's arrival
        assert queue.sequences_in_flight == 17 and queue.in_flight == 3
        heavy[0].result().release(256)
        await settle()
        assert not heavy[2].done(), "9 in flight: 8 more pass 16 while b's request runs"
        light.release(16)
        await settle()
        assert heavy[2].done() and not heavy[3].done() and queue.sequences_in_flight == 16
        for task in heavy[1:3]:
            task.result().release(256)
        await settle()
        assert heavy[3].done() and heavy[4].done()
        for task in heavy[3:]:
            task.result().release(256)
        assert queue.sequences_in_flight == 0 and queue.in_flight == 0

    asyncio.run(scenario())


def test_an_arrival_wider_than_the_bound_holds_the_others_back():
    """A tenant sending one best-of-64 at a time arrives every time: it goes at once, and its 64 sequences
    keep everyone else's requests (but arrivals) waiting until it ends."""

    async def scenario() -> None:
        queue = FairQueue(8, busy_sequences=8)
        wide = await asyncio.wait_for(queue.acquire(A, 64, lanes=64), 1)
        other = await asyncio.wait_for(queue.acquire(B, 8, lanes=8), 1)  # b's arrival: at once
        more = asyncio.ensure_future(queue.acquire(B, 8, lanes=1))
        await settle()
        assert not more.done() and queue.sequences_in_flight == 72
        wide.release(64)
        other.release(8)
        await settle()
        assert more.done()
        more.result().release(1)

    asyncio.run(scenario())


def test_a_request_wider_than_the_bound_runs_once_nothing_else_is_in_flight():
    async def scenario() -> None:
        queue = FairQueue(8, busy_sequences=4)
        first = await asyncio.wait_for(queue.acquire(A, 8, lanes=1), 1)  # a's arrival
        wide = asyncio.ensure_future(queue.acquire(A, 64, lanes=64))
        await settle()
        assert not wide.done()
        first.release(8)
        await settle()
        assert wide.done(), "nothing else in flight: a request wider than the bound still runs"
        narrow = asyncio.ensure_future(queue.acquire(A, 8, lanes=1))
        await settle()
        assert not narrow.done()
        wide.result().release(64)
        await settle()
        narrow.result().release(8)
        assert queue.sequences_in_flight == 0

    asyncio.run(scenario())


def test_requests_behind_one_that_does_not_fit_wait_for_it():
    """c is next in fair order and needs the sequences in flight to drain; a's narrower request that would
    fit does not pass it (else a stream of narrow requests could keep the wide one waiting for ever)."""

    async def scenario() -> None:
        queue = FairQueue(8, busy_sequences=8)
        c = FairShare("c")
        arrival_a = await asyncio.wait_for(queue.acquire(A, 1, lanes=1), 1)
        more_a = await asyncio.wait_for(queue.acquire(A, 1, lanes=3), 1)  # 4 of 8
        arrival_c = await asyncio.wait_for(queue.acquire(c, 1, lanes=1), 1)  # 5
        wide_c = asyncio.ensure_future(queue.acquire(c, 1, lanes=4))  # 9 would pass 8
        narrow_a = asyncio.ensure_future(queue.acquire(A, 100, lanes=3))  # 8 would fit
        await settle()
        assert queue.counters["c"] < queue.counters["a"]
        assert not wide_c.done() and not narrow_a.done(), "a's request would fit, but c is next"
        more_a.release(1)
        await settle()
        assert wide_c.done() and not narrow_a.done() and queue.sequences_in_flight == 6
        for slot in (arrival_a, arrival_c, wide_c.result()):
            slot.release(1)
        await settle()
        narrow_a.result().release(1)
        assert queue.sequences_in_flight == 0

    asyncio.run(scenario())


def test_the_busy_bound_keeps_the_weighted_shares_of_two_backlogged_tenants():
    async def scenario() -> float:
        queue = FairQueue(4, busy_sequences=16)
        a, b = FairShare("a", weight=3.0), FairShare("b")
        served = {"a": 0, "b": 0}
        pending: dict[asyncio.Task[Slot], FairShare] = {}

        def top_up() -> None:
            for share in (a, b):
                while sum(1 for s in pending.values() if s == share) < 4:
                    pending[asyncio.ensure_future(queue.acquire(share, 64, lanes=8))] = share

        top_up()
        await settle()
        for _ in range(400):
            done = next(t for t in pending if t.done())
            served[pending.pop(done).tenant] += 64
            assert queue.sequences_in_flight <= 16 + 8  # the bound, and the other tenant's arrival
            top_up()
            done.result().release(64)
            await settle()
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return served["a"] / (served["a"] + served["b"])

    assert asyncio.run(scenario()) == pytest.approx(0.75, abs=0.03)


def test_fairness_off_has_no_busy_bound():
    assert FairQueue(4, fair=False, busy_sequences=8).busy_sequences is None
    with pytest.raises(ValueError, match="busy_sequences"):
        FairQueue(4, busy_sequences=0)


@pytest.mark.parametrize(
    ("search", "sequences"),
    [
        ({"strategy": "sample"}, 1),
        ({"strategy": "best_of_n", "n": 8}, 8),
        ({"strategy": "rejection", "batch": 4, "max_rounds": 5, "threshold": 0.5}, 4),
        ({"strategy": "beam", "beam_width": 2, "expansions": 3, "chunk_tokens": 8}, 6),
        ({"strategy": "rps", "n": 2, "neighbors": 3}, 6),
    ],
)
def test_each_strategy_says_how_many_sequences_it_decodes_at_once(search, sequences):
    body = {"prompt": "hi", "max_tokens": 32, "preference_vector": {"verbosity": -1.0, "readability": 1.0}}
    request = AlignRequest.parse({**body, "search": search})
    assert request.search.sequences(request.shape()) == sequences


def test_a_tenants_resample_action_counts_in_the_sequences_a_request_may_decode_at_once():
    request = AlignRequest.parse({"prompt": "hi", "max_tokens": 32})
    resample = SafetyConfig(text="Be kind.", thresholds={"harmlessness": 0.9}, action="resample", max_resamples=64)
    refuse = SafetyConfig(text="Be kind.", thresholds={"harmlessness": 0.9}, action="refuse")
    assert [request_sequences(request, c) for c in (None, refuse, resample)] == [1, 1, 64]


def test_a_slot_says_whether_its_request_was_its_tenants_arrival():
    """Only an arrival's wait is the server's (the latency objective); a request behind its own tenant's
    waits for that tenant's load, whichever queue mode."""

    async def scenario(fair: bool) -> None:
        queue = FairQueue(1, fair=fair)
        first = await asyncio.wait_for(queue.acquire(A, 1), 1)
        behind_its_own = asyncio.ensure_future(queue.acquire(A, 1))
        others_arrival = asyncio.ensure_future(queue.acquire(B, 1))
        await settle()
        first.release(1)
        await settle()
        done = next(t for t in (behind_its_own, others_arrival) if t.done())
        done.result().release(1)
        await settle()
        assert first.arrival and others_arrival.result().arrival
        assert not behind_its_own.result().arrival
        behind_its_own.result().release(1)
        others_arrival.result().release(1)

    asyncio.run(scenario(True))
    asyncio.run(scenario(False))
