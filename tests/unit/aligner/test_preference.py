"""Combining objective scores into one ranking: linear, and, constraints, ties."""

import math

import numpy as np
import pytest

from aligner.contract import AlignRequest
from aligner.preference import Combiner
from aligner.rewards import Objective

HELP = Objective("helpfulness", "h")
SAFE = Objective("harmlessness", "s")
VERB = Objective("verbosity", "v")
WIDE = Objective("rm", "raw range [-5, 5]", low=-5, high=5)


def test_linear_is_the_dot_product_with_the_unit_direction():
    direction = AlignRequest.parse(
        {"prompt": "x", "preference_vector": {"helpfulness": 3, "verbosity": -4}}
    ).preference_vector
    combiner = Combiner((HELP, VERB), direction)
    raw = np.array([[1.0, 1.0], [0.5, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(combiner.combine(raw), [0.6 - 0.8, 0.3, 0.0])
    assert combiner.rank(raw).order == [1, 2, 0]


def test_scores_are_compared_on_the_unit_scale():
    combiner = Combiner((HELP, WIDE), {"helpfulness": 2**-0.5, "rm": 2**-0.5})
    # rm = 5 is the top of its range, as helpfulness = 1 is: both contribute equally.
    np.testing.assert_allclose(combiner.combine(np.array([[1.0, -5.0], [0.0, 5.0]])), [2**-0.5, 2**-0.5])


def test_and_punishes_a_candidate_that_is_terrible_on_one_objective():
    direction = {"helpfulness": 2**-0.5, "harmlessness": 2**-0.5}
    balanced = [0.7, 0.7]
    lopsided = [1.0, 0.45]  # higher sum, but fails harmlessness
    raw = np.array([lopsided, balanced])
    assert Combiner((HELP, SAFE), direction, "linear").rank(raw).best == 0
    assert Combiner((HELP, SAFE), direction, "and").rank(raw).best == 1


def test_and_is_a_sum_of_log_sigmoids_and_respects_negative_weights():
    combiner = Combiner((VERB,), {"verbosity": -1.0}, "and", references={"verbosity": 0.3})
    value = combiner.combine(np.array([[0.1]]))[0]
    assert value == pytest.approx(math.log(1 / (1 + math.exp(-(-1.0 * 10 * (0.1 - 0.3))))))
    short, long = combiner.combine(np.array([[0.1], [0.9]]))
    assert short > long


def test_constraint_violators_rank_below_every_feasible_candidate():
    combiner = Combiner((HELP, SAFE), {"helpfulness": 1.0}, minimums={"harmlessness": 0.9})
    raw = np.array([[0.99, 0.2], [0.3, 0.95], [0.5, 0.91], [0.9, 0.5]])
    ranking = combiner.rank(raw)
    assert ranking.order == [2, 1, 0, 3]
    assert ranking.feasible.tolist() == [False, True, True, False]


def test_ties_break_on_the_lower_index():
    combiner = Combiner((HELP,), {"helpfulness": 1.0})
    assert combiner.rank(np.array([[0.5], [0.7], [0.7], [0.5]])).order == [1, 2, 0, 3]


def test_combiner_rejects_objectives_it_does_not_score():
    with pytest.raises(ValueError, match="not among the scored columns"):
        Combiner((HELP,), {"verbosity": 1.0})


@pytest.mark.parametrize("method", ["linear", "and"])
def test_a_candidate_with_an_undecided_directed_objective_is_marked_undecided(method):
    """An undecided judge ranks at the middle (no evidence either way), and the ranking says which
    candidates lack a directed score: their middle score must not meet a search's score threshold."""
    helpful, short = Objective("helpfulness", "j"), Objective("verbosity", "v")
    combiner = Combiner((helpful, short), {"helpfulness": 1.0}, method=method)
    ranking = combiner.rank(np.array([[math.nan, 0.9], [0.45, 0.1], [0.2, 0.5]]))
    assert ranking.decided.tolist() == [False, True, True]
    # An undirected objective's NaN leaves a candidate decided.
    only_short = Combiner((helpful, short), {"verbosity": 1.0}, method=method)
    assert only_short.rank(np.array([[math.nan, 0.9], [0.45, 0.1]])).decided.tolist() == [True, True]
