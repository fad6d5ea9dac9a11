"""serve/deployments/quota_keeper.py: the buckets' arithmetic (capacity = the per-minute limit, refilled
continuously, starting full), lease sizes, token debts, concurrency slots and replicas that go silent,
on a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from serve.deployments.quota_keeper import LEASE_SHARE, LEASER_TTL_S, LeaseRequest, QuotaKeeper, QuotaLimits


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def one(keeper: QuotaKeeper, **fields):
    fields.setdefault("leaser", "a")
    fields.setdefault("tenant", "acme")
    return asyncio.run(keeper.exchange([LeaseRequest(**fields)]))[0]


RPM = QuotaLimits(requests_per_minute=600)


def test_a_bucket_starts_full_and_leases_a_slice_of_it():
    keeper = QuotaKeeper(Clock())
    grant = one(keeper, limits=RPM, want_requests=True)
    assert grant.requests == int(LEASE_SHARE * 600) == 18
    assert grant.request_bucket is not None
    assert grant.request_bucket.capacity == 600 and grant.request_bucket.level == 600 - 18
    assert grant.request_bucket.slice == 18


def test_the_slice_is_split_among_the_tenants_active_leasers():
    keeper = QuotaKeeper(Clock())
    one(keeper, leaser="a", limits=RPM)
    grant = one(keeper, leaser="b", limits=RPM, want_requests=True)
    assert grant.requests == 9  # 3% of 600, split between two replicas


def test_an_empty_bucket_grants_nothing_and_says_when_it_will():
    clock = Clock()
    keeper = QuotaKeeper(clock)
    limits = QuotaLimits(requests_per_minute=60)  # one a second
    granted = sum(one(keeper, limits=limits, want_requests=True).requests for _ in range(100))
    assert granted == 60  # the whole capacity, and not one more
    refused = one(keeper, limits=limits, want_requests=True)
    assert refused.requests == 0 and refused.request_bucket is not None
    assert refused.request_bucket.retry_s() == pytest.approx(1.0)
    assert refused.request_bucket.reset_s() == pytest.approx(60.0)
    clock.now += 1.0  # continuous refill: one more after a second
    assert one(keeper, limits=limits, want_requests=True).requests == 1


def test_unused_units_come_back_but_never_above_capacity():
    keeper = QuotaKeeper(Clock())
    one(keeper, limits=RPM, want_requests=True)
    grant = one(keeper, limits=RPM, give_requests=10_000)  # a hostile replica cannot mint capacity
    assert grant.request_bucket is not None and grant.request_bucket.level == 600


def test_a_token_debt_is_paid_by_the_refill_before_anything_more_is_leased():
    clock = Clock()
    keeper = QuotaKeeper(clock)
    limits = QuotaLimits(candidate_tokens_per_minute=6000)  # 100 per second
    one(keeper, limits=limits, want_tokens=True)
    grant = one(keeper, limits=limits, give_tokens=-9000)  # requests charged far beyond the allowance
    assert grant.token_bucket is not None and grant.token_bucket.level < 0
    assert one(keeper, limits=limits, want_tokens=True).tokens == 0
    seconds = grant.token_bucket.retry_s()
    assert seconds > 30
    clock.now += seconds
    assert one(keeper, limits=limits, want_tokens=True).tokens >= 1


def test_slots_never_exceed_the_cap_over_all_replicas():
    keeper = QuotaKeeper(Clock())
    limits = QuotaLimits(max_concurrent_requests=3)
    held = {"a": 0, "b": 0}
    for leaser in ["a", "b", "a", "b", "a"]:
        grant = one(
            keeper, leaser=leaser, limits=limits, slots_held=held[leaser], slots_in_use=held[leaser], want_slots=1
        )
        held[leaser] += grant.slots
    assert held == {"a": 2, "b": 1}
    # b holds one it does not use and a is refused: the keeper tells every replica to hand spares back
    one(keeper, leaser="b", limits=limits, slots_held=1, slots_in_use=0)
    refused = one(keeper, leaser="a", limits=limits, slots_held=2, slots_in_use=2, want_slots=1)
    assert refused.slots == 0 and refused.contended
    assert one(keeper, leaser="b", limits=limits, slots_held=0, slots_in_use=0).slots_free == 1
    assert one(keeper, leaser="a", limits=limits, slots_held=2, slots_in_use=2, want_slots=1).slots == 1


def test_a_silent_replicas_slots_are_freed():
    clock = Clock()
    keeper = QuotaKeeper(clock)
    limits = QuotaLimits(max_concurrent_requests=2)
    assert one(keeper, leaser="dead", limits=limits, want_slots=2).slots == 2
    assert one(keeper, leaser="b", limits=limits, want_slots=1).slots == 0
    clock.now += LEASER_TTL_S + 1
    assert one(keeper, leaser="b", limits=limits, want_slots=1).slots == 1


def test_a_changed_limit_keeps_what_is_left_and_a_lifted_one_keeps_its_bucket():
    clock = Clock()
    keeper = QuotaKeeper(clock)
    limits = QuotaLimits(requests_per_minute=60)
    for _ in range(60):
        one(keeper, limits=limits, want_requests=True)
    lowered = one(keeper, limits=QuotaLimits(requests_per_minute=30))
    assert lowered.request_bucket is not None and lowered.request_bucket.level == 0
    lifted = one(keeper, limits=QuotaLimits(), want_requests=True)
    assert lifted.requests == 0 and lifted.request_bucket is None  # not in force
    # set again a moment later (a replica still on the old policy): the bucket is not full again
    assert one(keeper, limits=limits, want_requests=True).requests == 0


def test_tenants_have_their_own_buckets():
    keeper = QuotaKeeper(Clock())
    limits = QuotaLimits(requests_per_minute=60)
    while one(keeper, limits=limits, want_requests=True).requests:
        pass
    assert one(keeper, tenant="globex", limits=limits, want_requests=True).requests == 1
    assert asyncio.run(keeper.state("acme"))["requests_level"] == 0


def test_a_reservations_shortfall_is_granted_whole_or_not_at_all():
    clock = Clock()
    keeper = QuotaKeeper(clock)
    limits = QuotaLimits(candidate_tokens_per_minute=6000)  # a lease: 180 tokens
    big = one(keeper, limits=limits, want_tokens=True, need_tokens=5000)
    assert big.tokens == 5000  # more than a lease: the shortfall itself
    small = one(keeper, limits=limits, want_tokens=True, need_tokens=50)
    assert small.tokens == 180  # less than a lease: a lease
    refused = one(keeper, limits=limits, want_tokens=True, need_tokens=900)  # 820 left
    assert refused.tokens == 0 and refused.token_bucket.level == pytest.approx(820)
    clock.now += 60 * 80 / 6000  # the refill covers the other 80
    assert one(keeper, limits=limits, want_tokens=True, need_tokens=900).tokens == 900
