"""serve/deployments/aligner_server.py over the deterministic fake generator: what a request that gets no
response had cost reaches the usage (a failed one's in its ErrorInfo, a cancelled one's metered by the
replica itself, tokens only), and the resamples of a tenant's safety config are priced under the
tenant's caps (each failed before this fix)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from aligner.contract import AlignRequest, SearchLimits
from aligner.core import Aligner
from aligner.engine.base import ENGINE_USAGE
from aligner.errors import ErrorInfo
from aligner.prompting import ModelProfile
from aligner.rewards import ObjectiveCatalog
from aligner.safety.config import SafetyConfig
from aligner.tenants import TenantStore, UsageCounts
from serve.deployments.aligner_server import AlignerServer
from serve.gateway.messages import Accepted, TenantContext
from tests.fakes import FakeGenerator, FakeRewardModel

BEST_OF_4 = {
    "prompt": "Name a colour.",
    "max_tokens": 8,
    "seed": 1,
    "preference_vector": {"harmlessness": 1.0},
    "search": {"strategy": "best_of_n", "n": 4},
}
# No candidate ever passes: the config resamples as many as it may, then refuses.
UNREACHABLE = SafetyConfig(text="Be kind.", thresholds={"harmlessness": 0.9}, action="resample", max_resamples=8)


class DeadRewardModel(FakeRewardModel):
    """A reward model that fails every call, after the candidates were generated."""

    async def score(self, conversation, responses):
        raise RuntimeError("the reward model died")


class HangingGenerator(FakeGenerator):
    """Generates `tokens` (counted like the engine counts a request cut short), then never finishes."""

    def __init__(self, tokens: int):
        super().__init__()
        self.tokens = tokens
        self.started = asyncio.Event()

    async def generate(self, prompt_ids, spec, *, n=1, prefix_ids=()):
        self._count(prompt_ids, prefix_ids, n, spec)
        usage = ENGINE_USAGE.get()
        if usage is not None:
            usage.generated_tokens += self.tokens
        self.started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def server_over(generator, catalog, store: TenantStore | None = None) -> AlignerServer:
    aligner = Aligner(generator, catalog, profile=ModelProfile())
    return AlignerServer.sync_init({}, aligner=aligner, store=store)


def test_a_failure_after_engine_work_carries_what_the_search_generated():
    generator = FakeGenerator()
    server = server_over(generator, ObjectiveCatalog([DeadRewardModel(["harmlessness"], [0.5])]))
    result = asyncio.run(server.generate(AlignRequest.parse(BEST_OF_4), TenantContext(tenant="acme")))
    assert result.response is None and isinstance(result.error, ErrorInfo) and result.error.code == "internal"
    spent = result.error.usage
    assert spent is not None
    assert (spent.engine_requests, spent.reward_calls, spent.completion_tokens, spent.candidates) == (1, 4, 0, 0)
    assert spent.generated_tokens == spent.candidate_tokens > 0 and spent.prompt_tokens > 0
    assert "usage" not in result.error.to_dict()  # the client's error payload is unchanged


def test_a_refusal_before_any_engine_work_carries_no_usage():
    server = server_over(FakeGenerator(), ObjectiveCatalog([FakeRewardModel(["harmlessness"], [0.5])]))
    unknown = AlignRequest.parse({**BEST_OF_4, "preference_vector": {"nope": 1.0}})
    result = asyncio.run(server.generate(unknown, TenantContext(tenant="acme")))
    assert result.error is not None and result.error.code == "invalid_argument" and result.error.usage is None


def cancelled_rows(store: TenantStore) -> dict[str, UsageCounts]:
    return {row.key.status: row.counts for row in store.usage("acme")}


@pytest.mark.parametrize("streamed", [False, True])
def test_a_cancelled_search_is_metered_by_the_replica_tokens_only(store, streamed):
    generator = HangingGenerator(tokens=4 * 500)
    server = server_over(generator, ObjectiveCatalog([FakeRewardModel(["harmlessness"], [0.5])]), store)
    request = AlignRequest.parse({**BEST_OF_4, "stream": streamed})

    async def cancel_mid_search() -> None:
        if streamed:
            items = server.stream(request, TenantContext(tenant="acme"))
            assert isinstance(await anext(items), Accepted)
            waiting = asyncio.ensure_future(anext(items))
        else:
            waiting = asyncio.ensure_future(server.generate(request, TenantContext(tenant="acme")))
        await generator.started.wait()
        waiting.cancel()  # what Ray Serve does when the client goes away
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        if streamed:
            await items.aclose()
        assert server.usage is not None
        await server.usage.close()

    asyncio.run(cancel_mid_search())
    counts = cancelled_rows(store)["cancelled"]
    # The ingress counts the request (it saw the cancellation); the replica adds what the search generated.
    assert (counts.requests, counts.generated_tokens, counts.engine_requests) == (0, 2000, 1)
    assert counts.prompt_tokens > 0 and counts.completion_tokens == 0


def test_an_answered_or_unmetered_request_is_not_metered_by_the_replica(store):
    server = server_over(FakeGenerator(), ObjectiveCatalog([FakeRewardModel(["harmlessness"], [0.5])]), store)

    async def answer() -> None:
        result = await server.generate(AlignRequest.parse(BEST_OF_4), TenantContext(tenant="acme"))
        assert result.response is not None
        items = [item async for item in server.stream(AlignRequest.parse({**BEST_OF_4, "stream": True}))]
        assert items[-1].response.usage.generated_tokens > 0
        assert server.usage is not None
        await server.usage.close()

    asyncio.run(answer())
    assert store.usage() == []  # the ingress meters answers: counted once


def resampled(limits: SearchLimits | None) -> int:
    """How many candidates the safety config's resample drew for BEST_OF_4 under a tenant's `limits`."""
    generator = FakeGenerator()
    server = server_over(generator, ObjectiveCatalog([FakeRewardModel(["harmlessness"], [0.1])]))
    tenant = TenantContext(version=1, config=UNREACHABLE, tenant="acme", limits=limits)
    result = asyncio.run(server.generate(AlignRequest.parse(BEST_OF_4), tenant))
    assert result.response is not None and result.response.safety.verdict == "refused"
    return sum(n for n, _ in generator.requests[1:])  # the search's own request first


def test_the_tenants_caps_bound_the_resamples_of_its_safety_config():
    assert resampled(None) == 8  # the server's limits leave the config its own maximum
    assert resampled(SearchLimits(max_candidates=6)) == 2  # 4 candidates + 2 resamples
    assert resampled(SearchLimits(max_search_tokens=4 * 8 + 3 * 8)) == 3
    assert resampled(SearchLimits(max_reward_calls=5)) == 1
    assert resampled(SearchLimits(max_engine_requests=1)) == 0  # the resample is an engine request too
