"""aligner/search/registry.py: a strategy registered by a test alone (its parameters, its cost, its run
code; nothing outside aligner/search/ edited) is parsed, priced and run like a built-in one."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import pytest
from pydantic import Field

from aligner.contract import DEFAULT_LIMITS, AlignRequest, SearchLimits, SearchSpec
from aligner.core import Aligner
from aligner.errors import InvalidRequest
from aligner.prompting import ModelProfile
from aligner.search import registry
from aligner.search.base import SearchContext, SearchResult, Strategy
from aligner.search.params.base import Maximum, SearchParams
from aligner.search.params.cost import RequestShape, SearchCost
from aligner.search.strategies import strategy_for
from tests.fakes import FakeGenerator, fake_text

NAME = "shortest_of_k"
DOCS = Path(__file__).resolve().parents[4] / "docs" / "alignment.md"


class Params(SearchParams):
    ranked: ClassVar[bool] = False

    strategy: Literal["shortest_of_k"] = "shortest_of_k"
    k: Annotated[int, Maximum(8)] = Field(3, ge=1, description="Candidates compared.")

    def cost(self, shape: RequestShape) -> SearchCost:
        k = self.k
        return SearchCost(
            engine_requests=1, candidates=k, candidate_tokens=k * shape.max_tokens, scoring_rounds=0, reward_calls=0
        )


class ShortestOfK(Strategy):
    """Keeps the shortest of `k` candidates (no scoring)."""

    params = Params

    async def run(self, ctx: SearchContext) -> SearchResult:
        count, tokens = ctx.meter.affordable(ctx.params(Params).k, ctx.request.max_tokens, scored=False)
        candidates = await ctx.scored(await ctx.generate(replace(ctx.spec, max_tokens=tokens), count))
        ranked = sorted(candidates, key=lambda c: len(c.text))
        return SearchResult(chosen=ranked[0], candidates=ranked)


@pytest.fixture
def registered():
    registry.register(Params, ShortestOfK())
    yield
    registry.unregister(NAME)


def parse(search: dict, limits: SearchLimits = DEFAULT_LIMITS, **fields) -> AlignRequest:
    return AlignRequest.parse({"prompt": "hi", "seed": 3, "max_tokens": 40, "search": search, **fields}, limits)


def refused(search: dict, limits: SearchLimits = DEFAULT_LIMITS, **fields) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as err:
        parse(search, limits, **fields)
    return err.value


def test_a_registered_strategy_is_parsed_with_its_own_parameters(registered):
    request = parse({"strategy": NAME, "k": 5})
    assert isinstance(request.search, Params) and request.search.k == 5
    assert parse({"strategy": NAME}).search.k == 3
    assert request.model_dump()["search"] == {"strategy": NAME, "k": 5}


def test_its_fields_are_checked_and_bounded_like_a_built_in_strategys(registered):
    assert str(refused({"strategy": NAME, "k": 0})) == "search.k: Input should be greater than or equal to 1"
    assert str(refused({"strategy": NAME, "k": "2"})) == "search.k: Input should be a valid integer"
    assert str(refused({"strategy": NAME, "k": 9})) == "search.k: is 9 but the configured maximum is 8"
    assert str(refused({"k": 2})) == f"search.k: does not apply to strategy 'sample' (it is read by: {NAME})"
    assert str(refused({"strategy": NAME, "n": 2})) == (
        f"search.n: does not apply to strategy '{NAME}' (it is read by: best_of_n, rps)"
    )
    assert refused({"strategy": NAME, "kk": 2}).reason == "unknown field"
    assert refused({"strategy": "nope"}).reason.endswith(
        f"allowed: sample, best_of_n, rejection, beam, rps, particle_filter, {NAME}"
    )


def test_the_total_work_check_prices_it_by_its_own_cost(registered):
    err = refused({"strategy": NAME, "k": 8}, SearchLimits(max_candidates=4))
    assert err.field == "search" and f"{NAME} may generate up to 8 candidates" in err.reason
    err = refused({"strategy": NAME, "k": 4}, SearchLimits(max_search_tokens=100))
    assert err.field == "search" and "up to 160 tokens" in err.reason
    parse({"strategy": NAME, "k": 4}, SearchLimits(max_search_tokens=100), budget={"max_candidate_tokens": 100})
    # Every dimension is its own: one engine request and no scoring fit the tightest caps.
    parse({"strategy": NAME, "k": 4}, SearchLimits(max_engine_requests=1, max_reward_calls=1, max_scoring_rounds=1))


def test_the_core_runs_it_through_the_registry(registered):
    assert strategy_for(NAME).name == NAME
    engine = FakeGenerator()
    response = asyncio.run(Aligner(engine, profile=ModelProfile()).generate(parse({"strategy": NAME, "k": 4})))
    texts = [fake_text(engine.requests[0][1].seed, i)[:40] for i in range(4)]
    assert response.text == min(texts, key=len)
    assert response.usage.candidates == 4 and response.usage.engine_requests == 1
    assert response.usage.candidate_tokens == sum(map(len, texts))


def test_the_meter_keeps_its_candidates_within_the_token_budget(registered):
    request = parse({"strategy": NAME, "k": 6}, budget={"max_candidate_tokens": 50})
    response = asyncio.run(Aligner(FakeGenerator(), profile=ModelProfile()).generate(request))
    assert response.usage.candidate_tokens <= 50 and response.usage.candidates == 1  # one full 40-token candidate
    assert response.usage.stopped_by == "max_candidate_tokens"


def test_unregistered_it_is_an_unknown_strategy_again():
    registry.register(Params, ShortestOfK())
    registry.unregister(NAME)
    assert NAME not in registry.names()
    assert refused({"strategy": NAME}).reason.startswith(f"unknown strategy '{NAME}'")


def test_the_wire_schema_holds_every_built_in_strategys_fields_described_by_their_readers():
    fields = SearchSpec.model_fields
    assert list(fields) == [
        "strategy",
        "n",
        "adaptive",
        "batch",
        "margin",
        "stop_probability",
        "threshold",
        "max_rounds",
        "beam_width",
        "expansions",
        "chunk_tokens",
        "prune",
        "neighbors",
        "spread",
        "particles",
        "weight_temperature",
    ]
    assert fields["n"].description == "best_of_n: candidates in all (adaptive: at most); rps: candidates per direction."
    assert (
        fields["strategy"].description
        == "Search strategy; one of: sample, best_of_n, rejection, beam, rps, particle_filter."
    )


@pytest.mark.parametrize("name", registry.names())
def test_every_strategys_example_is_a_valid_search(name):
    search = {"strategy": name, **registry.params_of(name).example}
    assert parse(search, preference_vector={"relevance": 1.0}).search.strategy == name


def test_the_docs_table_of_strategies_is_the_registrys():
    assert registry.markdown_table() in DOCS.read_text(), f"update the table of strategies in {DOCS.name}"
