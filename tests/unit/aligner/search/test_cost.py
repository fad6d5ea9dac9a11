"""Each strategy's declared worst case (aligner/search/params/), its caps in `SearchLimits`, and the
run code spending no more than it declares (fakes stand in for the engine and the reward model)."""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aligner.contract import DEFAULT_LIMITS, AlignRequest, SearchLimits
from aligner.core import Aligner
from aligner.errors import InvalidRequest
from aligner.prompting import ModelProfile
from aligner.rewards import ObjectiveCatalog
from aligner.search import registry
from aligner.search.params import beam, best_of_n, rejection, rps, sample
from aligner.search.params.cost import RequestShape, SearchCost
from tests.fakes import FakeGenerator, FakeRewardModel

VECTOR = {"relevance": 1.0}
# The issue's request: it passed the old check as "256 candidates" and ran for hours.
ISSUE_BEAM = {"strategy": "beam", "beam_width": 16, "expansions": 16, "chunk_tokens": 1}


def cost(requests, candidates, tokens, rounds, calls) -> SearchCost:
    return SearchCost(
        engine_requests=requests,
        candidates=candidates,
        candidate_tokens=tokens,
        scoring_rounds=rounds,
        reward_calls=calls,
    )


def shape(max_tokens, objectives=1, scored=None) -> RequestShape:
    return RequestShape(max_tokens=max_tokens, objectives=objectives, scored=objectives if scored is None else scored)


# --- each strategy's cost, by hand ---


def test_sample_costs_one_request_and_one_reward_call_when_it_is_scored():
    assert sample.Params().cost(shape(256, 0)) == cost(1, 1, 256, 0, 0)
    assert sample.Params().cost(shape(256, 0, scored=2)) == cost(1, 1, 256, 1, 1)  # constraints are scored too


def test_best_of_n_costs_one_request_of_n_scored_once():
    assert best_of_n.Params(n=8).cost(shape(100)) == cost(1, 8, 800, 1, 8)


def test_rejection_costs_one_request_and_one_scoring_round_per_round():
    assert rejection.Params(batch=4, max_rounds=3, threshold=0.5).cost(shape(50)) == cost(3, 12, 600, 3, 12)


def test_rps_costs_one_request_per_direction_and_none_without_neighbours():
    params = rps.Params(n=2, neighbors=4)
    assert params.cost(shape(10, objectives=2)) == cost(4, 8, 80, 1, 8)
    assert params.cost(shape(10, objectives=1)) == cost(1, 2, 20, 1, 2)


def test_beam_costs_every_step_of_its_running_beams():
    # max_tokens 40 in chunks of 16: steps of 16, 16 and 8 tokens. Step 1 expands the empty beam into
    # 4 children (1 request); steps 2 and 3 expand the 2 kept beams into 8 (2 requests each).
    params = beam.Params(beam_width=2, expansions=4, chunk_tokens=16)
    assert params.cost(shape(40)) == cost(1 + 2 + 2, 8, 4 * 16 + 8 * 16 + 8 * 8, 3, 4 + 8 + 8)


def test_beam_prune_shrinks_the_width_it_pays_for():
    # Width 4, halved after each step (4 -> 2 -> 1); 4 steps of 8 tokens. Running beams per step: 1, 2, 2, 1.
    params = beam.Params(beam_width=4, expansions=2, chunk_tokens=8, prune=0.5)
    assert params.cost(shape(32)) == cost(1 + 2 + 2 + 1, 4, 8 * (2 + 4 + 4 + 2), 4, 2 + 4 + 4 + 2)


def test_the_issues_beam_costs_a_quarter_million_reward_calls():
    # 1024 one-token steps: 16 children of the empty beam, then 16 beams x 16 expansions for 1023 steps.
    assert beam.Params(**ISSUE_BEAM).cost(shape(1024)) == cost(
        1 + 16 * 1023, 256, 16 + 256 * 1023, 1024, 16 + 256 * 1023
    )


def beam_step_by_step(width: int, expansions: int, chunk: int, prune: float, max_tokens: int) -> SearchCost:
    """The beam's cost by walking every step (what `beam.Params.cost` shortcuts once the steps repeat).

    The width is carried as a fraction (issue: a prune below 1/width, rounded each step, never narrowed it)."""
    kept, requests, calls, tokens, widest = 1, 0, 0, 0, 0
    fraction = float(width)
    for step in range(math.ceil(max_tokens / chunk)):
        children = kept * expansions
        requests, calls, widest = requests + kept, calls + children, max(widest, children)
        tokens += children * min(chunk, max_tokens - step * chunk)
        kept = min(max(1, math.ceil(fraction - 1e-9)), children)
        fraction *= 1 - prune
    return cost(requests, widest, tokens, math.ceil(max_tokens / chunk), calls)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 16),
    st.integers(1, 16),
    st.integers(1, 512),
    st.sampled_from([0.0, 0.1, 0.5, 0.9]),
    st.integers(1, 4096),
)
def test_beams_cost_is_its_step_by_step_walk(width, expansions, chunk, prune, max_tokens):
    params = beam.Params(beam_width=width, expansions=expansions, chunk_tokens=chunk, prune=prune)
    assert params.cost(shape(max_tokens)) == beam_step_by_step(width, expansions, chunk, prune, max_tokens)


# --- the caps ---


def parse(search: dict, limits: SearchLimits = DEFAULT_LIMITS, **fields) -> AlignRequest:
    data = {"prompt": "hi", "preference_vector": VECTOR, "temperature": 1.0, "search": search, **fields}
    return AlignRequest.parse(data, limits)


def refused(search: dict, limits: SearchLimits = DEFAULT_LIMITS, **fields) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as err:
        parse(search, limits, **fields)
    return err.value


def test_the_issues_beam_is_refused_naming_the_reward_call_limit():
    """Failed before this fix: it was admitted (256 candidates, 261,904 tokens were within the limits)."""
    err = refused(ISSUE_BEAM, max_tokens=1024)
    assert err.field == "search"
    assert err.reason.startswith("beam may make up to 261904 reward calls; the configured maximum per request is 8192")
    assert "(search_limits.max_reward_calls)" in err.reason


def test_a_budget_on_reward_calls_leaves_the_engine_requests_to_refuse_it():
    err = refused(ISSUE_BEAM, max_tokens=1024, budget={"max_reward_calls": 100})
    assert "16369 engine requests" in err.reason and "search_limits.max_engine_requests" in err.reason


@pytest.mark.parametrize(
    ("search", "limits", "named"),
    [
        (
            {"strategy": "rejection", "batch": 2, "max_rounds": 8, "threshold": 0.5},
            {"max_engine_requests": 7},
            "8 engine",
        ),
        (
            {"strategy": "rejection", "batch": 2, "max_rounds": 8, "threshold": 0.5},
            {"max_scoring_rounds": 7},
            "8 scoring",
        ),
        ({"strategy": "best_of_n", "n": 8}, {"max_reward_calls": 7}, "8 reward calls"),
        ({"strategy": "beam", "chunk_tokens": 8}, {"max_scoring_rounds": 31}, "32 scoring rounds"),
    ],
)
def test_each_cap_refuses_naming_its_limit(search, limits, named):
    err = refused(search, SearchLimits(**limits))
    (field,) = limits
    assert err.field == "search" and named in err.reason and f"(search_limits.{field})" in err.reason
    assert f"is {limits[field]} (" in err.reason
    parse(search, SearchLimits(**{field: limits[field] + 1}))  # one more fits


def test_a_budget_on_reward_calls_bounds_the_calls_and_the_rounds():
    search = {"strategy": "rejection", "batch": 2, "max_rounds": 8, "threshold": 0.5}
    parse(search, SearchLimits(max_reward_calls=4, max_scoring_rounds=4), budget={"max_reward_calls": 4})


@pytest.mark.parametrize("name", registry.names())
def test_every_strategys_example_is_within_the_default_caps(name):
    params = registry.params_of(name)
    for max_tokens in (64, 256, 1024):
        parse({"strategy": name, **params.example}, max_tokens=max_tokens)


@pytest.mark.parametrize(
    ("search", "max_tokens"),
    [
        ({"strategy": "beam"}, 4096),  # its defaults: width 2, 4 expansions, 32-token chunks
        ({"strategy": "beam", "beam_width": 16, "expansions": 16, "chunk_tokens": 32}, 1024),
        ({"strategy": "beam", "beam_width": 4, "expansions": 4, "chunk_tokens": 8}, 2048),
        ({"strategy": "best_of_n", "n": 64}, 4096),
        ({"strategy": "rejection", "batch": 4, "max_rounds": 64, "threshold": 0.5}, 1024),
        ({"strategy": "rps", "n": 16, "neighbors": 16}, 1024),
    ],
)
def test_large_ordinary_searches_stay_within_the_default_caps(search, max_tokens):
    parse(search, max_tokens=max_tokens, preference_vector={"relevance": 1.0, "verbosity": -0.5})


# --- the run code spends what its cost declares, at worst ---


def long_text(seed: int | None, index: int) -> str:
    """Every candidate runs to its max_tokens (no stop), and no two children are the same."""
    return f"<{index}|{seed}>" * 100  # the index first: every chunk of one request differs from the start


def run(search: dict, max_tokens: int, vector: dict[str, float] = VECTOR):
    request = parse(search, max_tokens=max_tokens, seed=5, preference_vector=vector)
    catalog = ObjectiveCatalog([FakeRewardModel(["relevance", "verbosity"], [0.5, 0.5])])
    response = asyncio.run(Aligner(FakeGenerator(long_text), catalog, profile=ModelProfile()).generate(request))
    return request.search.cost(request.shape()), response.usage


@pytest.mark.parametrize(
    "search",
    [
        {"strategy": "best_of_n", "n": 3},
        {"strategy": "rejection", "batch": 2, "max_rounds": 3, "threshold": 2.0},  # never met: every round runs
        {"strategy": "beam", "beam_width": 2, "expansions": 4, "chunk_tokens": 16},
        {"strategy": "beam", "beam_width": 4, "expansions": 2, "chunk_tokens": 8, "prune": 0.5},
    ],
)
def test_a_search_that_runs_to_its_worst_case_spends_exactly_its_cost(search):
    declared, usage = run(search, max_tokens=40)
    assert usage.engine_requests == declared.engine_requests
    assert usage.candidate_tokens == declared.candidate_tokens
    assert usage.reward_calls == declared.reward_calls
    assert usage.rounds == declared.scoring_rounds


def test_rps_without_directions_in_the_prompt_spends_less_than_its_cost():
    declared, usage = run({"strategy": "rps", "n": 2, "neighbors": 3}, 20, {"relevance": 1.0, "verbosity": 0.5})
    assert declared.engine_requests == 3 and usage.engine_requests == 1  # one request: the prompt cannot vary
    assert usage.candidate_tokens == declared.candidate_tokens and usage.reward_calls == declared.reward_calls
