"""The quota hook of the gateway's `Call` (serve/gateway/gateway.py): admitted under the tenant's policy,
its slot released and its candidate tokens charged when it ends, OpenAI's headers on its answer."""

from __future__ import annotations

import asyncio

from aligner.contract import AlignResponse, Usage
from aligner.tenants import TenantPolicy
from serve.deployments.quota_keeper import QuotaKeeper
from serve.gateway.gateway import Call
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
