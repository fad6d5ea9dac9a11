"""Token reservations (serve/gateway/quotas.py, serve/gateway/reservations.py): a request reserves its worst
case of candidate tokens before it reaches a model replica and gets back what it did not generate, so the
tokens a tenant may spend bound its requests in flight, not only the next admission. Several ingress
replicas (leasers) against one keeper, on a fake clock."""

from __future__ import annotations

import asyncio
import random

import pytest

from aligner.contract import AlignRequest
from aligner.errors import ErrorInfo, RateLimited
from aligner.safety.config import SafetyConfig
from serve.deployments.quota_keeper import QuotaLimits
from serve.gateway.quotas import SYNC_S, TOKEN_RECHECK_S, QuotaTicket
from serve.gateway.reservations import over_the_limit, reserved_tokens
from tests.unit.serve.gateway.quota_cluster import TICK, QuotaCluster


class Cluster(QuotaCluster):
    async def start(self, replica: int, limits: QuotaLimits, tokens: int, tenant: str = "acme") -> QuotaTicket | None:
        """Admit one request and reserve its worst case, as the gateway does (None: refused with 429)."""
        ticket = await self.try_admit(replica, tenant, limits)
        if ticket is None:
            return None
        try:
            await ticket.reserve(tokens)
        except RateLimited:
            ticket.finish(0, refund_request=True)
            return None
        return ticket


def run(coroutine):
    return asyncio.run(coroutine)


def test_requests_in_flight_cannot_reserve_more_than_the_tenants_tokens_per_minute():
    """Failed before this fix (admission checked only that the allowance was positive, and charged each
    request when it ended): 50 best_of_n requests of 8 x 512 tokens, all started at once by a tenant of
    60,000 tokens per minute, would all be admitted, 204,800 tokens in the same minute."""
    limits = QuotaLimits(candidate_tokens_per_minute=60_000)
    worst = 8 * 512

    async def scenario():
        cluster = Cluster(2)
        tickets = [await cluster.start(i % 2, limits, worst) for i in range(50)]
        return [t for t in tickets if t is not None], cluster

    admitted, cluster = run(scenario())
    assert len(admitted) == 60_000 // worst  # 14: what the whole bucket covers, over both replicas
    assert sum(t.reserved for t in admitted) <= 60_000
    refused = cluster.metrics.rate_limited.labels(tenant="acme", limit="candidate_tokens_per_minute")._value.get()
    assert refused == 50 - len(admitted)


def test_what_a_request_did_not_generate_comes_back_and_an_unknown_end_keeps_the_reservation():
    limits = QuotaLimits(candidate_tokens_per_minute=60_000)

    async def scenario():
        cluster = Cluster(1)
        lease_tokens = []
        first = await cluster.start(0, limits, 4096)
        lease = cluster.leasers[0].leases["acme"]
        lease_tokens.append(lease.tokens)
        first.finish(100)  # generated 100 of its 4096
        lease_tokens.append(lease.tokens)
        second = await cluster.start(0, limits, 4096)
        lease_tokens.append(lease.tokens)
        second.finish(None)  # cancelled after it reached a replica: what it generated is unknown
        lease_tokens.append(lease.tokens)
        return lease_tokens

    reserved, refunded, again, kept = run(scenario())
    assert refunded == reserved + 4096 - 100
    assert 0 <= again < refunded  # the second reservation took 4096 of the lease (topped up by the keeper)
    assert kept == again


def test_a_request_refused_before_any_work_gets_its_request_unit_and_its_tokens_back():
    """Failed before this fix: a 400 after admission cost the tenant a request unit."""
    limits = QuotaLimits(requests_per_minute=2, candidate_tokens_per_minute=6000)

    async def scenario():
        cluster = Cluster(1)
        leaser = cluster.leasers[0]
        for _ in range(5):  # five bad requests, each refused once parsed (or once its tokens were reserved)
            ticket = await leaser.admit("acme", limits)
            await ticket.reserve(300)
            ticket.finish(0, refund_request=True)
        served = [await cluster.start(0, limits, 300) for _ in range(3)]
        at_keeper = (await cluster.keeper.state("acme"))["tokens_level"]
        return served, leaser.leases["acme"].tokens + at_keeper

    served, tokens_left = run(scenario())
    assert [t is not None for t in served] == [True, True, False]  # the two units are both still there
    assert tokens_left == pytest.approx(6000 - 2 * 300)  # only the two requests in flight hold tokens


def test_small_requests_reserve_from_the_lease_without_a_keeper_call_each():
    limits = QuotaLimits(candidate_tokens_per_minute=600_000)  # a lease: 3% of it, 18,000 tokens

    async def scenario():
        cluster = Cluster(2)
        for step in range(400):
            ticket = await cluster.start(step % 2, limits, 64)
            assert ticket is not None
            ticket.finish(40)
            await cluster.advance(TICK)
        return cluster.exchanges

    assert run(scenario()) < 400 / 10


def test_a_refused_reservation_says_when_a_retry_is_admitted_and_a_flood_stays_local():
    limits = QuotaLimits(candidate_tokens_per_minute=6000)  # 100 tokens a second

    async def scenario():
        cluster = Cluster(1)
        held = [await cluster.start(0, limits, 2000) for _ in range(3)]  # the whole bucket
        assert all(t is not None for t in held)
        ticket = await cluster.leasers[0].admit("acme", limits)
        before = cluster.exchanges
        errors = []
        for _ in range(200):  # a flood, within the same second
            try:
                await ticket.reserve(2000)
            except RateLimited as exc:
                errors.append(exc)
        flood_exchanges = cluster.exchanges - before
        wait = ErrorInfo.of(errors[-1]).retry_after_s
        await cluster.advance(wait)
        await ticket.reserve(2000)  # the refill covered it by then
        return errors[0], flood_exchanges, wait, ticket.reserved

    error, flood_exchanges, wait, reserved = run(scenario())
    assert error.limit == "candidate_tokens_per_minute"
    assert error.message.startswith("candidate_tokens_per_minute:") and "up to 2000" in error.message
    assert flood_exchanges <= 1  # refused here while the keeper has just said it lacks the tokens
    assert wait == pytest.approx(20.0, abs=TOKEN_RECHECK_S)
    assert reserved == 2000


def test_tokens_hold_across_replicas_with_reservations_and_refunds():
    limits = QuotaLimits(candidate_tokens_per_minute=60_000)  # 1000 per second

    async def scenario():
        cluster = Cluster(3)
        rng = random.Random(5)
        in_flight: list[tuple[float, QuotaTicket, int]] = []
        spent = reserved_most = 0
        for _ in range(int(120 / TICK)):
            for replica in range(3):
                worst = rng.choice([64, 256, 1024])
                ticket = await cluster.start(replica, limits, worst)
                if ticket is None:
                    continue
                used = rng.randint(worst // 4, worst)
                in_flight.append((cluster.clock.now + rng.uniform(0.1, 2.0), ticket, used))
                spent += used
            reserved_most = max(reserved_most, sum(t.reserved for _, t, _ in in_flight))
            await cluster.advance(TICK)
            for entry in [e for e in in_flight if e[0] <= cluster.clock.now]:
                in_flight.remove(entry)
                entry[1].finish(entry[2])
        return spent, reserved_most

    spent, reserved_most = run(scenario())
    allowed = 60_000 + 60_000 * 120 / 60
    assert spent <= allowed * 1.05, spent
    assert spent >= allowed * 0.8, spent  # refunds are spent again: reservations do not waste the limit
    assert reserved_most <= 60_000 * 1.05  # what is in flight at once never passes the bucket


def test_a_lease_swollen_by_refunds_goes_back_to_the_keeper_for_the_other_replicas():
    limits = QuotaLimits(candidate_tokens_per_minute=60_000)

    async def scenario():
        cluster = Cluster(2)
        tickets = [await cluster.start(0, limits, 4096) for _ in range(14)]  # replica 0 reserves the bucket
        for ticket in tickets:
            ticket.finish(0)  # and each request generates nothing: 57,344 tokens back in its lease
        await cluster.advance(2 * SYNC_S)  # while replica 0 is still busy: within its idle time
        return await cluster.start(1, limits, 30_000)

    assert run(scenario()) is not None


def request(**fields) -> AlignRequest:
    return AlignRequest.model_validate({"prompt": "hi", "preference_vector": {"helpfulness": 1.0}, **fields})


def test_the_reservation_is_the_search_worst_case_with_the_resamples_within_the_budget():
    best_of_8 = {"search": {"strategy": "best_of_n", "n": 8}, "max_tokens": 512}
    assert reserved_tokens(request(**best_of_8), None) == 4096
    resample = SafetyConfig(text="Be kind.", thresholds={"harmlessness": 0.5}, action="resample", max_resamples=4)
    assert reserved_tokens(request(**best_of_8), resample) == 4096 + 4 * 512
    budgeted = request(**best_of_8, budget={"max_candidate_tokens": 5000})
    assert reserved_tokens(budgeted, resample) == 5000  # the meter keeps the resamples within the budget
    assert (
        reserved_tokens(request(max_tokens=16), SafetyConfig(text="Be kind.", thresholds={"harmlessness": 0.5})) == 16
    )


def test_a_request_no_wait_would_admit_is_a_400_naming_the_field_and_the_tenants_limit():
    best_of_8 = request(search={"strategy": "best_of_n", "n": 8}, max_tokens=512)
    error = over_the_limit(best_of_8, "acme", 1000)
    assert error is not None and error.field == "max_tokens" and ErrorInfo.of(error).code == "invalid_argument"
    assert "4096" in error.message and "candidate_tokens_per_minute is 1000" in error.message
    assert "best_of_n" in error.message and "'acme'" in error.message
    budgeted = request(search={"strategy": "best_of_n", "n": 8}, max_tokens=512, budget={"max_candidate_tokens": 2000})
    assert over_the_limit(budgeted, "acme", 1000).field == "budget.max_candidate_tokens"
    assert over_the_limit(request(max_tokens=1000), "acme", 1000) is None  # exactly the limit: admitted
    assert "over max_tokens" not in over_the_limit(request(max_tokens=1001), "acme", 1000).message
