"""`particle_filter` (issue 20, item 3) on the deterministic fake generator: resampling follows the weights,
copies of one prefix share one engine request, one seed gives one answer, the stream is the answer, the
budget binds and the cost model prices the worst case.

The engine is the fake of tests/fakes.py (one token per character; child i of every request continues with
one letter repeated) and the reward model is a fake that scores by text: what is under test is the filter's
own logic."""

import asyncio

import numpy as np
import pytest

from aligner.contract import AlignRequest
from aligner.core import Aligner
from aligner.prompting import ModelProfile
from aligner.rewards import Objective, ObjectiveCatalog, RewardModel
from aligner.rewards.checks import RequestChecks
from aligner.search.base import Scored
from aligner.search.params.cost import RequestShape
from aligner.search.params.particle_filter import Params
from aligner.search.particle_filter import weights
from tests.fakes import FakeGenerator


class ShareOfA(RewardModel):
    """A fake reward: the share of the text's characters that are "a"."""

    objectives = (Objective("a_share", "share of a"),)

    async def score(self, conversation, responses):
        return np.array([[t.count("a") / len(t) if t else 0.0] for t in responses])


def letters(seed, index):
    return chr(ord("a") + index) * 600


def filter_request(max_tokens=12, stream=False, seed=5, **search):
    return AlignRequest.parse(
        {
            "prompt": "hi",
            "seed": seed,
            "max_tokens": max_tokens,
            "stream": stream,
            "preference_vector": {"a_share": 1.0},
            "return_candidates": True,
            "search": {"strategy": "particle_filter", **search},
        }
    )


def run_filter(request, text_of=letters, **extra):
    generator = FakeGenerator(text_of)
    aligner = Aligner(generator, ObjectiveCatalog([ShareOfA(), RequestChecks()]), profile=ModelProfile())
    if not request.stream:
        return asyncio.run(aligner.generate(request, **extra)), generator, None

    async def collect():
        return [event async for event in aligner.stream(request, **extra)]

    events = asyncio.run(collect())
    return events[-1].response, generator, "".join(e.text for e in events if e.kind in ("delta", "chunk"))


def test_a_cold_filter_follows_the_best_particle_and_its_copies_share_one_request_per_step():
    response, generator, _ = run_filter(filter_request(particles=4, chunk_tokens=4, weight_temperature=0.01))
    assert response.text == "a" * 12 and response.usage.rounds == 3
    # Step 1: one empty prefix, n=4. Then every particle is a copy of "aaaa...": again one request, n=4.
    assert [n for n, _ in generator.requests] == [4, 4, 4]


def test_a_hot_filter_keeps_several_prefixes_alive():
    response, generator, _ = run_filter(filter_request(particles=4, chunk_tokens=4, weight_temperature=100.0))
    assert len(generator.requests) > 3  # after step 1, particles of different prefixes each ask on their own
    assert sum(n for n, _ in generator.requests[1:]) <= 4 * 2
    assert response.combined_score == max(c.combined_score for c in response.candidates)  # the best particle


def test_one_seed_gives_one_answer_and_another_seed_may_give_another():
    first = run_filter(filter_request(particles=4, chunk_tokens=3, weight_temperature=1.0))[0]
    again = run_filter(filter_request(particles=4, chunk_tokens=3, weight_temperature=1.0))[0]
    assert (first.text, [c.text for c in first.candidates]) == (again.text, [c.text for c in again.candidates])


def test_the_stream_is_the_answer():
    response, _, streamed = run_filter(filter_request(stream=True, particles=3, chunk_tokens=4, weight_temperature=0.5))
    assert streamed == response.text and len(response.text) == 12


def test_the_reward_call_budget_ends_the_search_with_the_best_so_far():
    request = AlignRequest.parse(
        {
            **filter_request(particles=4, chunk_tokens=2).model_dump(exclude_unset=True, exclude_none=True),
            "budget": {"max_reward_calls": 6},
        }
    )
    response, _, _ = run_filter(request)
    assert response.usage.reward_calls <= 6 and response.usage.stopped_by == "max_reward_calls"
    assert response.text  # the best partial particle, not an error


def test_particles_failing_the_tenants_thresholds_are_drawn_only_when_none_passes():
    def item(combined, passes):
        return Scored((1,), "x", "length", False, combined=combined, passes_thresholds=passes)

    mixed = weights([item(0.9, False), item(0.1, True), item(0.2, True)], temperature=0.5)
    assert mixed[0] == 0.0 and mixed.sum() == pytest.approx(1.0) and mixed[2] > mixed[1]
    none_pass = weights([item(0.9, False), item(0.1, False)], temperature=0.5)
    assert none_pass[0] > none_pass[1] > 0.0


def test_its_worst_case_is_every_particle_extended_every_step():
    cost = Params(particles=8, chunk_tokens=16).cost(RequestShape(max_tokens=100, objectives=1, scored=1))
    assert (cost.engine_requests, cost.scoring_rounds, cost.reward_calls, cost.candidates) == (56, 7, 56, 8)
    assert cost.candidate_tokens == 800


def test_a_tiny_temperature_is_refused_and_extreme_scores_still_give_finite_weights():
    """Found by review: weight_temperature 1e-310 overflowed the softmax to NaN, and resampling raised (500)."""
    from aligner.errors import InvalidRequest

    with pytest.raises(InvalidRequest) as err:
        filter_request(weight_temperature=1e-310)
    assert err.value.field == "search.weight_temperature"

    def item(combined):
        return Scored((1,), "x", "length", False, combined=combined, feasible=True)

    got = weights([item(1e300), item(-1e300), item(0.5)], temperature=0.001)
    assert np.isfinite(got).all() and got.sum() == pytest.approx(1.0) and got[0] == pytest.approx(1.0)


def test_feasible_particles_are_drawn_before_infeasible_ones():
    """Found by review: with checks alone every combined score ties, so resampling was uniform and most seeds
    returned a particle that had already failed a check (a comma) although a comma-free lineage existed."""

    def comma_first(seed, index):
        return "a," * 300 if index == 0 else "b" * 600

    data = filter_request(particles=2, chunk_tokens=4, weight_temperature=0.01).model_dump(
        exclude_unset=True, exclude_none=True
    )
    data.pop("preference_vector")
    data["checks"] = [{"id": "punctuation:no_comma"}]
    for seed in range(10):
        response, _, _ = run_filter(AlignRequest.parse({**data, "seed": seed}), text_of=comma_first)
        assert response.checks == [True] and "," not in response.text
