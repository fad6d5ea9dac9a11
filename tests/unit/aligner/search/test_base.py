import asyncio
import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aligner.concurrency import gather_all
from aligner.contract import MAX_SEED, AlignRequest, SearchLimits
from aligner.engine.base import Candidate, derive_seed
from aligner.search import registry
from aligner.search.base import Meter, SearchContext, cut_at_stop, to_scored
from aligner.search.beam import Committer, common_prefix
from aligner.search.rps import neighbour_directions
from aligner.search.strategies import strategy_for
from tests.fakes import FakeGenerator


def meter(**limits):
    return Meter(started=time.monotonic(), **limits)


def test_unlimited_meter_affords_everything():
    assert meter().affordable(8, 64, scored=True) == (8, 64)


def test_token_budget_prefers_fewer_full_candidates_then_one_shorter():
    m = meter(max_candidate_tokens=100)
    assert m.affordable(4, 32, scored=False) == (3, 32) and m.stopped_by == "max_candidate_tokens"
    m = meter(max_candidate_tokens=100)
    m.generated(90)
    assert m.affordable(1, 32, scored=False) == (1, 10) and m.stopped_by is None
    m.generated(4)  # the shortened candidate stopped on its own: the budget did not bind
    assert m.stopped_by is None
    m.generated(6)
    assert m.stopped_by == "max_candidate_tokens"
    assert m.affordable(4, 32, scored=False) == (0, 0)


def test_a_budget_that_leaves_one_short_candidate_of_several_stops_the_search():
    """Found by review: best-of-4 under 20 tokens drew one candidate of 20 and, when it ended early, said
    nothing had stopped it."""
    m = meter(max_candidate_tokens=20)
    assert m.affordable(4, 32, scored=True) == (1, 20) and m.stopped_by == "max_candidate_tokens"
    m.generated(10)
    assert m.stopped_by == "max_candidate_tokens"


def test_a_budget_that_is_exactly_enough_stops_nothing():
    """Failed before this fix: best-of-4 of 32 tokens under a budget of 128 said `max_candidate_tokens`."""
    m = meter(max_candidate_tokens=128)
    assert m.affordable(4, 32, scored=False) == (4, 32)
    m.generated(128)
    assert m.stopped_by is None
    assert m.affordable(1, 32, scored=False) == (0, 0)  # a search that wants more is stopped by it
    assert m.stopped_by == "max_candidate_tokens"


def test_reward_call_budget_caps_scored_candidates_only():
    m = meter(max_reward_calls=5)
    assert m.affordable(4, 10, scored=False) == (4, 10) and m.stopped_by is None
    m.reward_calls = 3
    assert m.affordable(4, 10, scored=True) == (2, 10) and m.stopped_by == "max_reward_calls"


def test_first_limit_is_the_one_reported():
    m = meter(max_reward_calls=1, max_candidate_tokens=5)
    m.affordable(4, 10, scored=True)
    assert m.stopped_by == "max_reward_calls"


def test_deadline():
    m = Meter(started=time.monotonic() - 1.0, deadline_ms=500)
    assert m.affordable(1, 10, scored=False) == (0, 0) and m.stopped_by == "deadline_ms"
    assert meter(deadline_ms=10_000).time_left() > 9


def test_the_servers_time_limit_is_a_deadline_of_every_request():
    m = Meter(started=time.monotonic() - 1.0, max_request_s=0.5)
    assert m.affordable(1, 10, scored=False) == (0, 0) and m.stopped_by == "max_request_s"
    assert meter(max_request_s=300).time_left() > 299


@pytest.mark.parametrize(
    ("deadline_ms", "max_request_s", "named"), [(500, 2.0, "deadline_ms"), (5000, 2.0, "max_request_s")]
)
def test_the_nearer_of_the_two_deadlines_holds_and_is_named(deadline_ms, max_request_s, named):
    m = Meter(started=time.monotonic(), deadline_ms=deadline_ms, max_request_s=max_request_s)
    assert m.time_left() <= min(deadline_ms / 1000, max_request_s)
    m.timed_out()
    assert m.stopped_by == named


def test_common_prefix():
    assert common_prefix([(1, 2, 3), (1, 2, 4), (1, 2)]) == (1, 2)
    assert common_prefix([(5,), (6,)]) == ()
    assert common_prefix([(1, 2)]) == (1, 2)
    assert common_prefix([]) == ()


@pytest.mark.parametrize("spread", [5, 15, 45, 90])
def test_neighbours_are_unit_vectors_at_the_requested_angle(spread):
    v = {"a": 0.6, "b": -0.8, "c": 0.0}
    neighbours = neighbour_directions(v, 5, spread, seed=1)
    assert len(neighbours) == 5
    base = np.array(list(v.values()))
    for n in neighbours:
        w = np.array([n[k] for k in v])
        assert math.isclose(np.linalg.norm(w), 1.0, abs_tol=1e-9)
        assert math.isclose(math.degrees(math.acos(np.clip(w @ base, -1, 1))), spread, abs_tol=1e-6)
    assert neighbours == neighbour_directions(v, 5, spread, seed=1)


def test_a_single_objective_has_no_neighbours():
    assert neighbour_directions({"a": 1.0}, 4, 15, seed=0) == []


def test_every_registered_strategy_has_run_code_that_reads_its_parameters():
    """The registry the contract validates against and the run code the core looks up must not drift apart."""
    assert registry.names() == ("sample", "best_of_n", "rejection", "beam", "rps", "particle_filter")
    for name in registry.names():
        assert strategy_for(name).params is registry.params_of(name) and strategy_for(name).name == name
    assert [n for n in registry.names() if registry.params_of(n).ranked] == [
        "best_of_n",
        "rejection",
        "beam",
        "rps",
        "particle_filter",
    ]


def test_the_configurable_limits_default_to_the_maxima_the_strategies_declare():
    declared = {f: m for n in registry.names() for f, m in registry.params_of(n).maxima().items()}
    configurable = {f: v for f, v in SearchLimits().model_dump().items() if f in declared}
    assert configurable == declared


# --- stop strings, deadlines on scoring, sibling cancellation (fakes stand in for engine and models) ---


def ids(text):
    return tuple(ord(c) for c in text)


def context(stop=(), deadline_ms=None, catalog=None, emit=None):
    request = AlignRequest.parse(
        {
            "prompt": "hi",
            "stop": list(stop),
            "max_tokens": 100,
            **({"budget": {"deadline_ms": deadline_ms}} if deadline_ms else {}),
        }
    )
    return SearchContext(
        engine=FakeGenerator(),
        catalog=catalog,
        request=request,
        prompt_ids=[1],
        meter=Meter(started=time.monotonic(), deadline_ms=deadline_ms),
        emit=emit,
    )


def test_cut_at_stop_takes_the_earliest_of_any_stop_string():
    assert cut_at_stop("abc END def STOP", ["STOP", "END"]) == ("abc ", True)
    assert cut_at_stop("abc", ["x"]) == ("abc", False)
    assert cut_at_stop("abc", []) == ("abc", False)


def test_a_stop_string_across_the_prefix_and_the_continuation_ends_the_candidate():
    ctx = context(stop=["END"])
    scored = to_scored(Candidate(0, ids("ND and more"), "ND and more", "length"), ctx, ids("so it is E"))
    assert scored.text == "so it is " and scored.finish_reason == "stop" and scored.finished


def test_a_fresh_candidate_keeps_vllms_text_and_is_cut_again_only_if_needed():
    ctx = context(stop=["END"])
    scored = to_scored(Candidate(0, ids("abcEND"), "abc", "stop"), ctx)
    assert scored.text == "abc" and scored.finished


def test_committed_text_holds_back_a_possible_stop_string_start():
    emitted = []
    ctx = context(stop=["STOP"], emit=emitted.append)
    committer = Committer(ctx)
    committer.commit(ids("hello ST"))
    assert "".join(e.text for e in emitted) == "hello "  # "ST" may begin "STOP": held back, the rest is not
    committer.commit(ids("hello STOP and on"))  # the stop string completes across the chunk boundary
    assert "".join(e.text for e in emitted) == "hello "
    chosen = to_scored(Candidate(0, ids("OP and on"), "", "length"), ctx, ids("hello ST"))
    final = committer.finish(chosen)
    assert final.text == "hello " == "".join(e.text for e in emitted)


class FakeSlowCatalog:
    """Scores after `delay` seconds; records whether it was cancelled."""

    def __init__(self, delay):
        self.delay = delay
        self.cancelled = False

    async def score(self, conversation, texts, names):
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return np.zeros((len(texts), len(names)))


def test_the_deadline_cuts_scoring_short_and_says_so():
    catalog = FakeSlowCatalog(delay=5.0)
    ctx = context(deadline_ms=100, catalog=catalog)
    started = time.monotonic()
    assert asyncio.run(ctx.score(["a", "b"])) is None
    assert time.monotonic() - started < 1.0
    assert ctx.meter.stopped_by == "deadline_ms" and catalog.cancelled


def test_scoring_within_the_deadline_returns_scores():
    ctx = context(deadline_ms=5_000, catalog=FakeSlowCatalog(delay=0.01))
    assert asyncio.run(ctx.score(["a"])).shape == (1, 0) and ctx.meter.stopped_by is None


def test_when_one_sibling_fails_the_others_are_cancelled():
    cancelled = []

    async def slow(i):
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(i)
            raise

    async def failing():
        await asyncio.sleep(0.05)
        raise ValueError("engine said no")

    async def main():
        with pytest.raises(ValueError, match="engine said no"):
            await gather_all(slow(1), failing(), slow(2))

    started = time.monotonic()
    asyncio.run(main())
    assert sorted(cancelled) == [1, 2] and time.monotonic() - started < 2


# --- property: whatever a strategy asks, the meter never lets a budget be exceeded ---


@settings(max_examples=300, deadline=None)
@given(
    max_candidate_tokens=st.one_of(st.none(), st.integers(1, 500)),
    max_reward_calls=st.one_of(st.none(), st.integers(1, 40)),
    rounds=st.lists(st.tuples(st.integers(1, 16), st.integers(1, 64), st.booleans(), st.floats(0, 1)), max_size=12),
)
def test_budgets_are_never_exceeded(max_candidate_tokens, max_reward_calls, rounds):
    m = meter(max_candidate_tokens=max_candidate_tokens, max_reward_calls=max_reward_calls)
    for count, tokens_each, scored, used in rounds:
        granted, tokens = m.affordable(count, tokens_each, scored=scored)
        assert 0 <= granted <= count and 0 <= tokens <= tokens_each
        if granted:
            # Candidates may stop early: each uses a fraction of what it was granted.
            m.generated(sum(max(1, int(tokens * used)) if used else tokens for _ in range(granted)))
            if scored:
                m.reward_calls += granted
        if max_candidate_tokens is not None:
            assert m.candidate_tokens <= max_candidate_tokens
        if max_reward_calls is not None:
            assert m.reward_calls <= max_reward_calls
    if m.stopped_by is not None:
        assert m.stopped_by in ("max_candidate_tokens", "max_reward_calls")


def test_seeds_are_spread_so_nearby_request_seeds_share_no_candidate_seed():
    n = 64  # vLLM seeds candidate i of a request with its seed + i
    ranges = [range(derive_seed(s), derive_seed(s) + n) for s in (*range(200), MAX_SEED - 1, MAX_SEED)]
    starts = sorted(r.start for r in ranges)
    assert all(b - a >= n for a, b in zip(starts, starts[1:])), "two requests' candidate seeds overlap"
    assert all(0 <= r.start < 2**63 for r in ranges)
    assert derive_seed(5) == derive_seed(5) and derive_seed(5, "round", 1) == derive_seed(5, "round", 1)
    rounds = {derive_seed(s, "round", r) for s in range(50) for r in range(20)}
    assert len(rounds) == 50 * 20, "every (request seed, round) pair has a seed of its own"
