"""`beam` on the deterministic fake generator: the width schedule `prune` sets, the cost model that prices
it, and the commit rule of streamed text under stop strings that overlap.

What is under test is the beam's own logic (which beams it keeps, what it commits, what it returns), so
the engine is the fake of tests/fakes.py (one token per character) and the reward model is a fake
that scores by text."""

import asyncio

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aligner.contract import AlignRequest
from aligner.core import Aligner
from aligner.engine.base import Candidate
from aligner.errors import InvalidRequest
from aligner.prompting import ModelProfile
from aligner.rewards import Objective, ObjectiveCatalog, RewardModel
from aligner.search.base import cut_at_stop, to_scored
from aligner.search.beam import Committer, settled_length
from aligner.search.params import beam
from aligner.search.params.cost import RequestShape
from tests.fakes import FakeGenerator, FakeRewardModel
from tests.unit.aligner.search.test_base import context, ids


class ShortestFirst(RewardModel):
    """Scores a response by its shortness: the empty text is the best."""

    objectives = (Objective("short", "shorter is better", low=-1000.0, high=0.0),)

    async def score(self, conversation, responses):
        return np.array([[-float(len(text))] for text in responses])


def letters(seed, index):
    """Child `index` of every request continues with one letter repeated: every child is distinct."""
    return chr(ord("a") + index) * 600


def beam_request(max_tokens, objective="plain", stream=False, stop=(), **search):
    return AlignRequest.parse(
        {
            "prompt": "hi",
            "seed": 3,
            "max_tokens": max_tokens,
            "stop": list(stop),
            "stream": stream,
            "preference_vector": {objective: 1.0},
            "search": {"strategy": "beam", **search},
        }
    )


def run_beam(generator, catalog, request):
    aligner = Aligner(generator, catalog, profile=ModelProfile())
    if not request.stream:
        return asyncio.run(aligner.generate(request)), None

    async def collect():
        return [event async for event in aligner.stream(request)]

    events = asyncio.run(collect())
    return events[-1].response, "".join(e.text for e in events if e.kind in ("delta", "chunk"))


# --- item: prune below 1/beam_width acts (the fractional width is carried) ---


def test_a_prune_below_one_over_the_width_narrows_the_beam():
    # Width 4, prune 0.2: 4 · 0.8 = 3.2 rounds back up to 4 every step when the width is rounded each step.
    # Carried as a fraction, the width after step k is ⌈4 · 0.8^k⌉: 4, 4, 3, 3, 2, 2, 2, 1.
    generator = FakeGenerator(letters)
    request = beam_request(9, beam_width=4, expansions=4, chunk_tokens=1, prune=0.2)
    response, _ = run_beam(generator, ObjectiveCatalog([FakeRewardModel(["plain"], [0.5])]), request)
    # One engine request per running beam and step: the beams kept after the step before.
    per_step = [1, 4, 4, 3, 3, 2, 2, 2, 1]
    assert len(generator.requests) == sum(per_step) == response.usage.engine_requests
    assert len(response.text) == 9
    params = beam.Params(beam_width=4, expansions=4, chunk_tokens=1, prune=0.2)
    assert params.cost(RequestShape(max_tokens=9, objectives=1, scored=1)).engine_requests == sum(per_step)
    assert [params.width_at(step) for step in range(9)] == [4, 4, 3, 3, 2, 2, 2, 1, 1]


@pytest.mark.parametrize("prune", [0.0, 0.01, 0.5, 0.99])
def test_the_width_never_drops_below_one_nor_grows(prune):
    params = beam.Params(beam_width=16, prune=prune)
    widths = [params.width_at(step) for step in range(2000)]
    assert widths[0] == 16 and min(widths) >= 1
    assert all(a >= b for a, b in zip(widths, widths[1:]))
    assert widths[-1] == (16 if prune == 0 else 1)


@pytest.mark.parametrize("prune", [-0.1, 1.0, 1.5, float("nan")])
def test_prune_outside_its_range_is_refused_naming_it(prune):
    with pytest.raises(InvalidRequest) as err:
        beam_request(8, prune=prune)
    assert err.value.field == "search.prune"


@settings(max_examples=60, deadline=None)
@given(
    beam_width=st.integers(1, 5),
    expansions=st.integers(1, 4),
    chunk_tokens=st.integers(1, 4),
    prune=st.sampled_from([0.0, 0.1, 0.2, 0.34, 0.5, 0.9]),
    max_tokens=st.integers(1, 14),
)
def test_the_cost_model_prices_exactly_what_a_beam_of_distinct_children_spends(
    beam_width, expansions, chunk_tokens, prune, max_tokens
):
    search = {"beam_width": beam_width, "expansions": expansions, "chunk_tokens": chunk_tokens, "prune": prune}
    generator = FakeGenerator(letters)
    request = beam_request(max_tokens, **search)
    response, _ = run_beam(generator, ObjectiveCatalog([FakeRewardModel(["plain"], [0.5])]), request)
    cost = beam.Params(**search).cost(RequestShape(max_tokens=max_tokens, objectives=1, scored=1))
    # Every child is distinct and runs to max_tokens: the worst case, which the cost model prices exactly.
    assert response.usage.engine_requests == cost.engine_requests
    assert response.usage.reward_calls == cost.reward_calls
    assert response.usage.candidate_tokens == cost.candidate_tokens
    assert response.usage.rounds == cost.scoring_rounds


def test_a_long_request_with_a_tiny_prune_prices_quickly():
    params = beam.Params(beam_width=16, expansions=16, chunk_tokens=1, prune=1e-9)
    cost = params.cost(RequestShape(max_tokens=2**31 - 1, objectives=1, scored=1))
    steps = 2**31 - 1
    assert cost.scoring_rounds == steps and steps < cost.engine_requests < 16 * steps


# --- item: overlapping stop strings; committed text is what every beam's scored text starts with ---


def test_settled_length_stops_where_a_stop_occurs_or_could_still_begin():
    assert settled_length("abc", ["c", "abcd"]) == 0  # "abcd" may still complete and it begins first
    assert settled_length("abc", ["c"]) == 2
    assert settled_length("hello ST", ["STOP"]) == 6
    assert settled_length("hello S", ["STOP", "SA"]) == 6
    assert settled_length("hello", ["STOP"]) == 5  # no stop can begin in it: all of it is settled
    assert settled_length("xaaa", ["aaaa"]) == 1
    assert settled_length("", ["a"]) == 0
    assert settled_length("abc", []) == 3


@settings(max_examples=400, deadline=None)
@given(
    text=st.text(alphabet="abc", max_size=12),
    more=st.text(alphabet="abc", max_size=12),
    stops=st.lists(st.text(alphabet="abc", min_size=1, max_size=4), min_size=1, max_size=3),
)
def test_no_continuation_cuts_into_the_settled_text(text, more, stops):
    settled = settled_length(text, stops)
    final, _ = cut_at_stop(text + more, stops)
    assert len(final) >= settled and final[:settled] == text[:settled]


def test_the_issues_overlapping_stops_commit_nothing_the_chosen_beam_was_not_scored_on():
    # Stops "c" and "abcd", beams "abcd" and "abce": their shared prefix "abc" holds "c", but "abcd" begins
    # before it and completes in one of them, whose scored text is "".
    emitted = []
    ctx = context(stop=["c", "abcd"], emit=emitted.append)
    committer = Committer(ctx)
    committer.commit(ids("abc"))
    chosen = committer.finish(to_scored_text(ctx, "abcd"))
    assert chosen.text == "" == "".join(e.text for e in emitted)
    other = to_scored_text(ctx, "abce")
    assert other.text == "ab"


def to_scored_text(ctx, text):
    return to_scored(Candidate(0, ids(text[1:]), "", "length"), ctx, ids(text[:1]))


def steps_of(chunks_per_step):
    """A generator whose request k (in order) continues child i with `chunks_per_step[k][i]`."""
    calls = []

    def text_of(seed, index):
        if index == 0:
            calls.append(seed)
        step = chunks_per_step[min(len(calls), len(chunks_per_step)) - 1]
        return step[index % len(step)]

    return text_of


@pytest.mark.parametrize("stream", [False, True])
def test_a_beam_under_overlapping_stops_returns_and_streams_exactly_its_scored_text(stream):
    # Step 1: one beam "ab". Step 2: "ab" + "cd" and "ab" + "ce", neither continuation holding a whole stop
    # (the engine stops at none). Under stops "bc" and "abcd", "abcd" is cut to "" and "abce" to "a";
    # the shorter scores better, so "" is chosen, although the beams' shared prefix "abc" cut at "bc" is "a".
    generator = FakeGenerator(steps_of([["ab"], ["cd", "ce"]]))
    request = beam_request(
        4, objective="short", stream=stream, stop=["bc", "abcd"], beam_width=2, expansions=2, chunk_tokens=2
    )
    response, streamed = run_beam(generator, ObjectiveCatalog([ShortestFirst()]), request)
    assert response.text == "" and response.scores == {"short": 0.0} and response.finish_reason == "stop"
    if stream:
        assert streamed == response.text
