"""The quota hook of the gateway's `Call` (serve/gateway/gateway.py): admitted under the tenant's policy,
its slot released and its candidate tokens charged when it ends, OpenAI's headers on its answer."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from aligner.contract import AlignRequest, AlignResponse, Usage
from aligner.errors import InvalidRequest, RateLimited
from aligner.tenants import TenantPolicy
from serve.deployments.quota_keeper import QuotaKeeper
from serve.gateway.answer_headers import answer_headers
from serve.gateway.call import Call
from serve.gateway.gateway import Gateway
from serve.gateway.policies import PolicyContext
from serve.gateway.quotas import QuotaLeaser, limits_of
from serve.gateway.readiness import ReadinessRecord
from serve.metrics import Metrics


def test_the_call_releases_its_slot_charges_candidate_tokens_and_carries_the_headers():
    async def scenario():
        keeper = QuotaKeeper()
        leaser = QuotaLeaser(keeper.exchange)
        policy = TenantPolicy(max_concurrent_requests=1, candidate_tokens_per_minute=6000)
        call = Call(Metrics(), ReadinessRecord())
        call.policy = PolicyContext(tenant="acme", version=3, policy=policy)
        call.quota = await leaser.admit("acme", limits_of(policy))
        assert set(call.headers()) >= {"x-ratelimit-limit-tokens", "x-aligner-policy-version"}
        usage = Usage(prompt_tokens=3, generated_tokens=900, candidate_tokens=700, wall_time_s=0.1)
        call.ok(AlignResponse(id="r", model="m", text="t", finish_reason="stop", usage=usage))
        lease = leaser.leases["acme"]
        return lease.in_use, lease.tokens, call.quota.lease.token_bucket.state.slice

    in_use, tokens, slice_size = asyncio.run(scenario())
    assert in_use == 0
    assert tokens == slice_size - 700  # the candidate tokens, not the judge's


def limited_call(leaser: QuotaLeaser, policy: TenantPolicy) -> Call:
    call = Call(Metrics(), ReadinessRecord())
    call.tenant = "acme"
    call.policy = PolicyContext(tenant="acme", version=1, policy=policy)
    call.quotas = leaser
    return call


def test_a_request_refused_once_parsed_gets_its_request_unit_back():
    """Failed before this fix: a 400 after admission cost the tenant one of its requests per minute."""

    async def scenario():
        leaser = QuotaLeaser(QuotaKeeper().exchange)
        policy = TenantPolicy(requests_per_minute=1)
        for _ in range(3):
            call = limited_call(leaser, policy)
            call.quota = await leaser.admit("acme", limits_of(policy))
            call.finish("invalid_argument")  # refused by the parse, before any slot or engine work
        served = limited_call(leaser, policy)
        served.quota = await leaser.admit("acme", limits_of(policy))  # the one unit is still there
        return served.quota

    assert asyncio.run(scenario()) is not None


def test_a_cancelled_or_failed_request_after_dispatch_keeps_its_reservation_and_unit():
    call = Call(Metrics(), ReadinessRecord())
    call.slot = object()  # it reached a model replica
    assert call.quota_use("cancelled") == (None, False)
    assert call.quota_use("internal") == (None, False)
    assert call.quota_use("prompt_too_long") == (0, True)  # the replica refused it before any engine work
    assert call.quota_use("overloaded") == (0, True)  # Ray Serve's queue was full: it never ran
    waiting = Call(Metrics(), ReadinessRecord())
    assert waiting.quota_use("cancelled") == (0, False)  # gave up before dispatch: tokens back, unit kept
    assert waiting.quota_use("rate_limited") == (0, True)


def gateway_part(leaser: QuotaLeaser) -> SimpleNamespace:
    """What `Gateway.call` and `Gateway.reserve` read of a gateway (the rest needs Ray handles)."""
    return SimpleNamespace(metrics=Metrics(), readiness=ReadinessRecord(), meter=None, quotas=leaser)


def test_an_error_answer_carries_the_rate_limit_headers_of_its_tenant():
    """Failed before this fix: a 400, 429 or 500 answer of a limited tenant had no x-ratelimit-* headers."""

    async def scenario():
        leaser = QuotaLeaser(QuotaKeeper().exchange)
        gateway = gateway_part(leaser)
        policy = TenantPolicy(requests_per_minute=1, candidate_tokens_per_minute=6000)
        caught = []
        for error in (InvalidRequest("search.n", "is 99"), RuntimeError("boom")):
            with pytest.raises(type(error)) as raised:
                async with Gateway.call(gateway) as call:
                    call.tenant, call.policy, call.quotas = "acme", PolicyContext("acme", 2, policy), leaser
                    call.quota = await leaser.admit("acme", limits_of(policy))
                    raise error
            caught.append(raised.value)
        with pytest.raises(RateLimited) as refused:  # over the limit: refused at admission, without a ticket
            async with Gateway.call(gateway) as call:
                call.tenant, call.policy, call.quotas = "acme", PolicyContext("acme", 2, policy), leaser
                await leaser.admit("acme", limits_of(policy))
                await leaser.admit("acme", limits_of(policy))
        caught.append(refused.value)
        return [answer_headers(exc) for exc in caught]

    invalid, internal, limited = asyncio.run(scenario())
    for headers in (invalid, internal, limited):
        assert headers["x-ratelimit-limit-requests"] == "1" and headers["x-ratelimit-limit-tokens"] == "6000"
        assert headers["x-aligner-policy-version"] == "2"
    assert invalid["x-ratelimit-remaining-requests"] == "1"  # its unit came back: a 400 costs nothing
    assert limited["x-ratelimit-remaining-requests"] == "0"


def test_the_gateway_reserves_the_worst_case_and_refuses_one_above_the_whole_limit():
    async def scenario():
        leaser = QuotaLeaser(QuotaKeeper().exchange)
        gateway = gateway_part(leaser)
        policy = TenantPolicy(candidate_tokens_per_minute=1000)
        call = limited_call(leaser, policy)
        call.quota = await leaser.admit("acme", limits_of(policy))
        direction = {"preference_vector": {"helpfulness": 1.0}}
        fits = AlignRequest.model_validate(
            {"prompt": "hi", "max_tokens": 100, "search": {"strategy": "best_of_n"}, **direction}
        )
        await Gateway.reserve(gateway, call, fits)
        too_large = AlignRequest.model_validate(
            {"prompt": "hi", "max_tokens": 512, "search": {"strategy": "best_of_n", "n": 8}, **direction}
        )
        with pytest.raises(InvalidRequest) as refused:
            await Gateway.reserve(gateway, call, too_large)
        return call.quota.reserved, fits, refused.value

    reserved, fits, error = asyncio.run(scenario())
    assert reserved == fits.search.n * 100
    assert error.field == "max_tokens" and "candidate_tokens_per_minute is 1000" in error.message
