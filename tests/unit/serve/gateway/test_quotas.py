"""serve/gateway/quotas.py: several ingress replicas (leasers) against one quota keeper, on a fake clock.

What a tenant is admitted over all replicas stays within 5% of what its buckets allow (capacity + refill
over the window), its concurrency never exceeds its cap, another tenant is unaffected; and the 429s,
Retry-After and OpenAI's headers."""

from __future__ import annotations

import asyncio
import random

import pytest

from aligner.errors import ErrorInfo, RateLimited
from serve.deployments.quota_keeper import QuotaKeeper, QuotaLimits
from serve.errors import ERROR_TABLE, http_status, retry_headers
from serve.gateway.quotas import IDLE_S, KEEPER_RETRY_S, SYNC_S, QuotaLeaser, QuotaTicket, reset_format
from tests.unit.serve.gateway.quota_cluster import TICK, FakeClock, QuotaCluster

Clock = FakeClock
Cluster = QuotaCluster


def run(coroutine):
    return asyncio.run(coroutine)


@pytest.mark.parametrize("replicas", [2, 3])
def test_requests_per_minute_hold_across_replicas(replicas):
    limits = QuotaLimits(requests_per_minute=600)
    light = QuotaLimits(requests_per_minute=60)

    async def scenario():
        cluster = Cluster(replicas)
        admitted, window, light_refused = 0, 0, 0
        rng = random.Random(7)
        for step in range(int(120 / TICK)):  # two minutes, each replica flooded (40 requests/s each)
            for replica in range(replicas):
                for _ in range(2):
                    ticket = await cluster.try_admit(replica, "acme", limits)
                    if ticket is not None:
                        admitted += 1
                        window += step * TICK >= 60
                        ticket.finish(0)
            if step % 40 == 0:  # the other tenant: one request every 2 s, under its 60 per minute
                ticket = await cluster.try_admit(rng.randrange(replicas), "globex", light)
                light_refused += ticket is None
                if ticket is not None:
                    ticket.finish(0)
            await cluster.advance(TICK)
        return admitted, window, light_refused, cluster.exchanges

    admitted, window, light_refused, exchanges = run(scenario())
    allowed = 600 + 600 * 120 / 60  # full at the start, then refilled at 10 per second
    assert allowed * 0.95 <= admitted <= allowed * 1.05, admitted
    assert window <= 600 * 1.05, window  # the second minute: the refill alone, plus what replicas held
    assert light_refused == 0  # the other tenant is unaffected
    assert exchanges < replicas * 2 * 120 / TICK / 5  # a flood over its quota is refused locally


def test_a_tenant_under_its_limit_makes_far_fewer_keeper_calls_than_requests():
    limits = QuotaLimits(requests_per_minute=600)

    async def scenario():
        cluster = Cluster(2)
        admitted = 0
        for step in range(int(60 / TICK)):  # 8 requests per second, of 10 allowed
            if step % 5 < 2:
                ticket = await cluster.try_admit(step % 2, "acme", limits)
                assert ticket is not None
                ticket.finish(0)
                admitted += 1
            await cluster.advance(TICK)
        return admitted, cluster.exchanges

    admitted, exchanges = run(scenario())
    assert exchanges < admitted / 4, (exchanges, admitted)  # leased in batches


def test_candidate_tokens_per_minute_hold_across_replicas_with_actual_usage_charged():
    limits = QuotaLimits(candidate_tokens_per_minute=60_000)  # 1000 per second

    async def scenario():
        cluster = Cluster(3)
        rng = random.Random(3)
        in_flight: list[tuple[float, QuotaTicket, int]] = []
        charged = refused = 0
        for _ in range(int(120 / TICK)):
            for replica in range(3):
                ticket = await cluster.try_admit(replica, "acme", limits)
                assert ticket is not None
                try:  # its worst case reserved (the fix: admission alone no longer checks tokens)
                    await ticket.reserve(250)
                except RateLimited:
                    ticket.finish(0, refund_request=True)
                    refused += 1
                    continue
                cost = rng.randint(50, 250)  # known only when it ends
                in_flight.append((cluster.clock.now + rng.uniform(0.1, 0.4), ticket, cost))
                charged += cost
            await cluster.advance(TICK)
            for entry in [e for e in in_flight if e[0] <= cluster.clock.now]:
                in_flight.remove(entry)
                entry[1].finish(entry[2])
        return charged, refused, cluster.metrics

    charged, refused, metrics = run(scenario())
    allowed = 60_000 + 60_000 * 120 / 60
    assert allowed * 0.9 <= charged <= allowed * 1.05, charged
    assert refused > 0
    counted = metrics.rate_limited.labels(tenant="acme", limit="candidate_tokens_per_minute")._value.get()
    assert counted == refused


def test_the_concurrency_cap_holds_across_replicas_and_idle_slots_move():
    limits = QuotaLimits(max_concurrent_requests=4)

    async def scenario():
        cluster = Cluster(3)
        rng = random.Random(11)
        in_flight: list[tuple[float, QuotaTicket]] = []
        most = 0
        for _ in range(int(30 / TICK)):
            for replica in range(3):
                ticket = await cluster.try_admit(replica, "acme", limits)
                if ticket is not None:
                    in_flight.append((cluster.clock.now + rng.uniform(0.05, 1.0), ticket))
            most = max(most, len(in_flight))
            assert len(in_flight) <= 4
            await cluster.advance(TICK)
            for entry in [e for e in in_flight if e[0] <= cluster.clock.now]:
                in_flight.remove(entry)
                entry[1].finish(0)
        for _, ticket in in_flight:
            ticket.finish(0)
        # replica 0 went quiet: within IDLE_S and a sync its slots are back, and replica 2 may use all 4
        await cluster.advance(IDLE_S + 2 * SYNC_S)
        taken = [await cluster.try_admit(2, "acme", limits) for _ in range(5)]
        return most, taken

    most, taken = run(scenario())
    assert most == 4  # the cap is reached, never passed
    assert [t is not None for t in taken] == [True, True, True, True, False]


def test_a_refusal_names_the_limit_and_when_to_retry():
    async def scenario():
        cluster = Cluster(1)
        limits = QuotaLimits(requests_per_minute=6)  # one every 10 s
        for _ in range(6):
            (await cluster.leasers[0].admit("acme", limits)).finish(0)
        with pytest.raises(RateLimited) as refused:
            await cluster.leasers[0].admit("acme", limits)
        return refused.value

    error = run(scenario())
    assert error.code == "rate_limited" and error.limit == "requests_per_minute"
    assert "requests_per_minute" in error.message and "6 requests per minute" in error.message
    info = ErrorInfo.of(error)
    assert info.retry_after_s == pytest.approx(10.0)
    assert http_status(info.code) == 429 and ERROR_TABLE["rate_limited"][1] == "RESOURCE_EXHAUSTED"
    assert retry_headers(info) == {"Retry-After": "10"}
    assert info.code != "overloaded"


def test_a_concurrency_refusal_names_its_limit():
    async def scenario():
        leaser = Cluster(1).leasers[0]
        limits = QuotaLimits(max_concurrent_requests=1)
        first = await leaser.admit("acme", limits)
        with pytest.raises(RateLimited) as refused:
            await leaser.admit("acme", limits)
        assert first is not None
        first.finish(0)
        first.finish(0)  # twice: released once
        second = await leaser.admit("acme", limits)
        assert second is not None
        return refused.value

    assert run(scenario()).limit == "max_concurrent_requests"


def test_openai_headers_say_limit_remaining_and_reset():
    async def scenario():
        cluster = Cluster(1)
        limits = QuotaLimits(requests_per_minute=600, candidate_tokens_per_minute=60_000)
        ticket = await cluster.leasers[0].admit("acme", limits)
        assert ticket is not None
        ticket.finish(-5)  # a hostile negative count is no credit
        return ticket.headers()

    headers = run(scenario())
    assert headers["x-ratelimit-limit-requests"] == "600"
    assert headers["x-ratelimit-remaining-requests"] == "599"
    assert headers["x-ratelimit-reset-requests"] == "100ms"
    assert headers["x-ratelimit-limit-tokens"] == "60000"
    assert headers["x-ratelimit-remaining-tokens"] == "60000"
    assert headers["x-ratelimit-reset-tokens"] == "0ms"


def test_reset_durations_are_in_openais_format():
    assert [reset_format(s) for s in (0.02, 0.9994, 1, 1.5, 59.25, 360, 361.2, 3723)] == [
        "20ms",
        "1000ms",
        "1s",
        "1.5s",
        "59.25s",
        "6m0s",
        "6m2s",
        "1h2m3s",
    ]


def test_no_limits_no_ticket_and_an_unreachable_keeper_admits():
    async def failing(asks):
        raise ConnectionError("keeper down")

    async def scenario():
        assert await Cluster(1).leasers[0].admit("acme", QuotaLimits()) is None
        return await QuotaLeaser(failing).admit("acme", QuotaLimits(requests_per_minute=1))

    assert run(scenario()) is None


def test_a_lowered_policy_limit_is_in_force_at_the_next_request():
    async def scenario():
        cluster = Cluster(1)
        leaser = cluster.leasers[0]
        five, two = QuotaLimits(max_concurrent_requests=5), QuotaLimits(max_concurrent_requests=2)
        tickets = [await leaser.admit("acme", five) for _ in range(4)]
        tickets[0].finish(0)  # 3 in flight, 4 slots held under the old limit
        with pytest.raises(RateLimited):
            await leaser.admit("acme", two)
        for ticket in tickets[1:]:
            ticket.finish(0)
        return [await leaser.admit("acme", two) for _ in range(2)]

    assert all(ticket is not None for ticket in run(scenario()))  # once the old slots came back


def test_a_hung_keeper_costs_one_timeout_then_admits_at_once_until_retry():
    """Failed before this fix: each request of a limited tenant waited the keeper's timeout in turn."""
    clock = Clock()
    calls = []

    async def failing(asks):
        calls.append(clock.now)
        raise ConnectionError("keeper down")

    async def scenario():
        leaser = QuotaLeaser(failing, clock=clock)
        limits = QuotaLimits(requests_per_minute=60)
        results = [await leaser.admit("acme", limits) for _ in range(5)]
        clock.now += KEEPER_RETRY_S + 0.1
        results.append(await leaser.admit("acme", limits))
        return results

    assert run(scenario()) == [None] * 6
    assert len(calls) == 2  # one for the first request, one once the retry time has passed


def test_a_debt_is_kept_when_the_exchange_that_would_settle_it_fails():
    """Failed before this fix: a failed exchange at admission dropped the tenant's token debt."""
    clock = Clock()
    keeper = QuotaKeeper(clock)
    down = {"now": False}

    async def exchange(asks):
        if down["now"]:
            raise ConnectionError("keeper down")
        return await keeper.exchange(asks)

    async def scenario():
        leaser = QuotaLeaser(exchange, clock=clock)
        limits = QuotaLimits(candidate_tokens_per_minute=10_000)
        ticket = await leaser.admit("acme", limits)
        assert ticket is not None
        ticket.finish(200_000)  # far beyond the allowance: a debt
        lease = leaser.leases["acme"]
        debt = lease.tokens
        assert debt < 0
        down["now"] = True
        uncounted = await leaser.admit("acme", limits)
        await uncounted.reserve(100)  # the exchange for it fails: admitted, not counted
        assert uncounted.reserved == 0
        assert lease.tokens == debt  # still owed
        down["now"] = False
        clock.now += KEEPER_RETRY_S + 0.1
        await leaser.sync()  # settled with the keeper now
        with pytest.raises(RateLimited):
            await (await leaser.admit("acme", limits)).reserve(100)

    run(scenario())


def test_a_request_cancelled_during_its_exchange_neither_wipes_a_debt_nor_loses_a_grant():
    """Failed before this fix: the client going away while its admission exchanged with the keeper
    cancelled the exchange after the ask had taken the debt from the lease: the debt was gone, and a grant
    the keeper had already counted was never applied."""
    clock = Clock()
    keeper = QuotaKeeper(clock)
    slow = {"now": False}
    sent: list = []

    async def exchange(asks):
        sent.extend(asks)
        if slow["now"]:
            await asyncio.sleep(0.05)  # the client goes away meanwhile
        return await keeper.exchange(asks)

    async def scenario():
        leaser = QuotaLeaser(exchange, clock=clock)
        limits = QuotaLimits(requests_per_minute=6000, candidate_tokens_per_minute=10_000)
        ticket = await leaser.admit("acme", limits)
        ticket.finish(200_000)  # far beyond the allowance: a debt
        lease = leaser.leases["acme"]
        debt = lease.tokens
        assert debt < 0
        slow["now"] = True
        clock.now += 60  # a minute's refill: the next reservation asks the keeper, handing the debt over
        second = await leaser.admit("acme", limits)
        asked = len(sent)
        reservation = asyncio.ensure_future(second.reserve(100))
        await asyncio.sleep(0.01)
        assert len(sent) == asked + 1  # in flight
        reservation.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reservation
        await asyncio.sleep(0.1)  # the shielded exchange completes
        assert sent[-1].give_tokens == debt  # the debt reached the keeper...
        assert lease.last_exchange == clock.now and lease.tokens >= 0  # ...and its answer reached the lease
        # The keeper holds the debt: 10,000 tokens a minute cannot cover a 200,000-token overrun for a while.
        with pytest.raises(RateLimited):
            await (await leaser.admit("acme", limits)).reserve(lease.tokens + 1_000)

    run(scenario())


def test_a_cancelled_admission_keeps_the_lease_locked_until_its_exchange_is_settled():
    """Found by review: the shielded exchange went on after its cancelled request had left the lease's lock,
    so the tenant's next request started a second exchange from the same lease; the keeper counted that
    report over the first grant, and two replicas together admitted 3 requests under a cap of 2."""
    clock = Clock()
    keeper = QuotaKeeper(clock)
    sent: list = []

    async def slow_first(asks):
        sent.append(asks)
        grants = await keeper.exchange(asks)  # counted by the keeper...
        if len(sent) == 1:
            await asyncio.sleep(0.05)  # ...but its answer is slow on the way back
        return grants

    async def plain(asks):
        return await keeper.exchange(asks)

    async def scenario():
        a = QuotaLeaser(slow_first, clock=clock, leaser="ingress-A")
        b = QuotaLeaser(plain, clock=clock, leaser="ingress-B")
        limits = QuotaLimits(max_concurrent_requests=2)
        first = asyncio.ensure_future(a.admit("t", limits))
        await asyncio.sleep(0.01)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        held = [await a.admit("t", limits)]  # waits for the first exchange, then uses its grant
        assert len(sent) == 1
        held.append(await a.admit("t", limits))
        for _ in range(2):
            try:
                held.append(await b.admit("t", limits))
            except RateLimited:
                break
        in_flight = a.leases["t"].in_use + b.leases["t"].in_use
        assert in_flight <= limits.max_concurrent_requests, (in_flight, keeper.tenants["t"].slots)

    run(scenario())


def test_a_retry_at_retry_after_is_admitted():
    """Failed before this fix: Retry-After was the time to one unit, while the replica asks the keeper again
    only once a whole lease is there, so the retry got 429 again."""

    async def scenario():
        cluster = Cluster(1)
        limits = QuotaLimits(requests_per_minute=6000)
        refused = None
        for _ in range(7000):
            try:
                (await cluster.leasers[0].admit("acme", limits)).finish(0)
            except RateLimited as exc:
                refused = exc
                break
        assert refused is not None
        await cluster.advance(ErrorInfo.of(refused).retry_after_s)
        return await cluster.try_admit(0, "acme", limits)

    assert run(scenario()) is not None


@pytest.mark.parametrize("limits", [QuotaLimits(max_concurrent_requests=1000), QuotaLimits(requests_per_minute=1000)])
def test_concurrent_first_requests_far_under_the_limit_are_all_admitted(limits):
    """16 requests arriving together: each waits for the one exchange in progress; one that then finds the
    lease covering it skips the keeper, and must not be refused because an earlier one took it meanwhile
    (found by `aligner bench tenants`: 429 "already has 1000 requests in flight" at 16 clients)."""

    async def scenario():
        cluster = Cluster(1)
        results = await asyncio.gather(
            *(cluster.leasers[0].admit("acme", limits) for _ in range(16)), return_exceptions=True
        )
        refused = [r for r in results if isinstance(r, Exception)]
        for ticket in results:
            if isinstance(ticket, QuotaTicket):
                ticket.finish(0)
        return refused

    assert run(scenario()) == []


def test_concurrent_requests_at_a_cap_get_exactly_the_cap():
    async def scenario():
        cluster = Cluster(1)
        limits = QuotaLimits(max_concurrent_requests=4)
        results = await asyncio.gather(
            *(cluster.leasers[0].admit("acme", limits) for _ in range(16)), return_exceptions=True
        )
        admitted = [r for r in results if isinstance(r, QuotaTicket)]
        refused = [r for r in results if isinstance(r, RateLimited)]
        for ticket in admitted:
            ticket.finish(0)
        return len(admitted), len(refused), cluster.leasers[0].leases["acme"].admitting

    assert run(scenario()) == (4, 12, 0)


def test_slots_asked_for_admissions_that_left_go_back_at_the_next_sync():
    """Three of four clients go away while the keeper is asked for a slot for each: the grant lands after
    they left, and the tenant's other ingress replica gets the spare slots within a sync."""

    async def scenario():
        clock = FakeClock()
        keeper = QuotaKeeper(clock)

        async def slow(asks):
            await asyncio.sleep(0.01)
            return await keeper.exchange(asks)

        first, other = (QuotaLeaser(slow, clock=clock, leaser=f"ingress-{i}") for i in range(2))
        limits = QuotaLimits(max_concurrent_requests=4)
        tasks = [asyncio.ensure_future(first.admit("acme", limits)) for _ in range(4)]
        await asyncio.sleep(0)  # all four are admitting; the exchange is under way
        for task in tasks[1:]:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.05)  # the shielded exchange has landed
        held_before = first.leases["acme"].slots
        clock.now += SYNC_S
        await first.sync()
        admitted = [await other.admit("acme", limits) for _ in range(3)]
        results[0].finish(0)
        for ticket in admitted:
            ticket.finish(0)
        return held_before, first.leases["acme"].slots, len(admitted)

    held_before, held_after, admitted = run(scenario())
    assert held_before == 4 and held_after == 1 and admitted == 3
