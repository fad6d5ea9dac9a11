import math
import time

import numpy as np
import pytest

from aligner.search.base import Meter
from aligner.search.beam import common_prefix
from aligner.search.rps import neighbour_directions


def meter(**limits):
    return Meter(started=time.monotonic(), **limits)


def test_unlimited_meter_affords_everything():
    assert meter().affordable(8, 64, scored=True) == (8, 64)


def test_token_budget_prefers_fewer_full_candidates_then_one_shorter():
    m = meter(max_candidate_tokens=100)
    assert m.affordable(4, 32, scored=False) == (3, 32) and m.stopped_by == "max_candidate_tokens"
    m = meter(max_candidate_tokens=100)
    m.generated(90)
    assert m.affordable(4, 32, scored=False) == (1, 10) and m.stopped_by is None
    m.generated(4)  # the shortened candidate stopped on its own: the budget did not bind
    assert m.stopped_by is None
    m.generated(6)
    assert m.stopped_by == "max_candidate_tokens"
    assert m.affordable(4, 32, scored=False) == (0, 0)


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


def test_every_strategy_name_in_the_contract_has_exactly_one_implementation():
    """types.STRATEGIES (the validated contract) and the search registry must not drift apart."""
    from aligner import types
    from aligner.search import STRATEGIES

    assert list(STRATEGIES) == list(types.STRATEGIES)
    assert set(types.RANKED_STRATEGIES) == set(types.STRATEGIES) - {"sample"}
