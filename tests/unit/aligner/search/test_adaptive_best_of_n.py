"""Adaptive best-of-N (issue 20, item 4): rounds of `batch` up to `n`, stopping by the stated rule on the
observed scores (`converged`) or once every check passes (`checks_passed`); reproducible by seed.

The generator is the deterministic fake and the scores are a fake by text (named as such): what is under
test is when the search stops and what it keeps, not what a model says."""

import asyncio
import zlib

import numpy as np
import pytest

from aligner.contract import AlignRequest
from aligner.core import Aligner
from aligner.errors import InvalidRequest
from aligner.prompting import ModelProfile
from aligner.rewards import Objective, ObjectiveCatalog, RewardModel
from aligner.rewards.checks import RequestChecks
from aligner.search.best_of_n import gain_probability
from aligner.search.params.best_of_n import Params
from aligner.search.params.cost import RequestShape
from tests.fakes import FakeGenerator, fake_text


class FakeScoresByText(RewardModel):
    """`quality`: a fixed score per text, spread over [0, 1] by a hash of the text (or a constant)."""

    objectives = (Objective("quality", "quality"),)

    def __init__(self, constant=None):
        self.constant = constant

    async def score(self, conversation, responses):
        def one(text):
            return self.constant if self.constant is not None else (zlib.crc32(text.encode()) % 1000) / 1000

        return np.array([[one(r)] for r in responses], dtype=float)


def aligner_with(scores, text_of=fake_text):
    generator = FakeGenerator(text_of)
    return Aligner(generator, ObjectiveCatalog([scores, RequestChecks()]), profile=ModelProfile()), generator


def request(**search):
    return AlignRequest.parse(
        {
            "prompt": "Say something.",
            "max_tokens": 64,
            "seed": 11,
            "preference_vector": {"quality": 1},
            "return_candidates": True,
            "search": {"strategy": "best_of_n", "adaptive": True, **search},
        }
    )


def test_equal_scores_converge_after_the_first_round():
    aligner, generator = aligner_with(FakeScoresByText(constant=0.5))
    response = asyncio.run(aligner.generate(request(n=16, batch=4)))
    assert response.usage.stopped_by == "converged" and response.usage.rounds == 1
    assert len(generator.requests) == 1 and response.usage.candidates == 4


def test_widely_spread_scores_keep_drawing_until_the_rule_says_stop_or_n_is_reached():
    aligner, generator = aligner_with(FakeScoresByText())
    response = asyncio.run(aligner.generate(request(n=16, batch=2, stop_probability=0.01)))
    assert response.usage.rounds > 1 and len(generator.requests) == response.usage.rounds
    kept = [c.combined_score for c in response.candidates]
    assert response.combined_score == max(kept) and len(kept) == 2 * response.usage.rounds


def test_the_same_request_and_seed_give_the_same_answer():
    first = asyncio.run(aligner_with(FakeScoresByText())[0].generate(request(n=12, batch=3)))
    again = asyncio.run(aligner_with(FakeScoresByText())[0].generate(request(n=12, batch=3)))
    assert (first.text, first.usage.rounds, first.usage.stopped_by) == (
        again.text,
        again.usage.rounds,
        again.usage.stopped_by,
    )


def test_a_round_whose_best_passes_every_check_stops_the_search():
    aligner, generator = aligner_with(FakeScoresByText(), text_of=lambda seed, i: "plain text." if i else "a, b.")
    response = asyncio.run(aligner.generate(_with_checks()))
    assert response.usage.stopped_by == "checks_passed" and response.usage.rounds == 1
    assert response.text == "plain text." and response.checks == [True]


def _with_checks():
    data = request(n=16, batch=2).model_dump(exclude_none=True, exclude_unset=True)
    data["checks"] = [{"id": "punctuation:no_comma"}]
    return AlignRequest.parse(data)


def test_no_feasible_candidate_yet_means_drawing_on_to_n():
    aligner, generator = aligner_with(FakeScoresByText(constant=0.5), text_of=lambda seed, i: "a, b.")
    response = asyncio.run(aligner.generate(_with_checks()))
    assert response.usage.rounds == 8 and response.usage.stopped_by is None and response.feasible is False


def test_the_rule_is_the_stated_one():
    class Item:
        def __init__(self, combined):
            self.combined = combined

    search = Params(adaptive=True, n=8, batch=2, margin=0.0)
    # Two draws at 0 and 1: mean 0.5, sd 0.707; one more beats 1 with 1 - Φ(0.707) = 0.24; a round of 2, 0.42.
    assert gain_probability([Item(1.0), Item(0.0)], search) == pytest.approx(1 - (1 - 0.2398) ** 2, abs=1e-3)
    assert gain_probability([Item(0.5)], search) == 1.0  # one draw says nothing of the spread


@pytest.mark.parametrize(
    ("search", "field"),
    [
        ({"strategy": "best_of_n", "adaptive": True, "margin": 2.0}, "search.margin"),
        ({"strategy": "best_of_n", "adaptive": True, "stop_probability": 1.0}, "search.stop_probability"),
        ({"strategy": "best_of_n", "adaptive": "yes"}, "search.adaptive"),
    ],
)
def test_adaptive_parameters_are_checked_naming_the_field(search, field):
    with pytest.raises(InvalidRequest) as err:
        AlignRequest.parse({"prompt": "hi", "preference_vector": {"quality": 1}, "search": search})
    assert err.value.field == field, err.value.message


def test_its_worst_case_is_one_engine_request_and_one_scoring_round_per_round():
    cost = Params(adaptive=True, n=64, batch=1).cost(RequestShape(max_tokens=100, objectives=1, scored=1))
    assert (cost.engine_requests, cost.scoring_rounds, cost.candidates, cost.reward_calls) == (64, 64, 64, 64)
    assert Params(adaptive=True, n=10, batch=4).rounds() == 3


def test_a_plain_best_of_n_is_served_under_a_batch_limit_below_the_default():
    """Found by review: a server or tenant batch limit below 4 lowered the default batch, which then read as
    sent and was refused ("applies only with adaptive") on every plain best_of_n request."""
    from aligner.contract import SearchLimits

    limits = SearchLimits(batch=2)
    plain = AlignRequest.parse(
        {"prompt": "hi", "preference_vector": {"quality": 1}, "search": {"strategy": "best_of_n"}}, limits
    )
    assert plain.search.round_size() == plain.search.n == 4
    adaptive = AlignRequest.parse(
        {
            "prompt": "hi",
            "preference_vector": {"quality": 1},
            "search": {"strategy": "best_of_n", "n": 2, "adaptive": True},
        }
    )
    assert adaptive.search.round_size() == 2  # a batch above n is one round of n, not an error


class FakeQualityAndSafety(RewardModel):
    """A fake reward: (quality, safe) by the candidate's first letter; "A" scores high but is unsafe."""

    objectives = (Objective("quality", "quality"), Objective("safe", "safe"))
    TABLE = {"A": (1.0, 0.0), "B": (0.10, 1.0), "C": (0.12, 1.0), "D": (0.11, 1.0)}

    async def score(self, conversation, responses):
        return np.array([self.TABLE.get(r[:1], (0.9, 1.0)) for r in responses], dtype=float)


def test_an_infeasible_high_scorer_is_not_the_bar_the_next_round_must_beat():
    # Failed before: the rule measured the gain against max(combined) of all candidates (1.0, infeasible),
    # stopped as converged after round 1 and returned 0.12; later rounds score 0.9.
    rounds: list[int] = []

    def text_of(seed, index):
        if seed not in rounds:
            rounds.append(seed)
        return "ABCD"[index] + " text" if rounds.index(seed) == 0 else "E later round text"

    request = AlignRequest.parse(
        {
            "prompt": "hi",
            "temperature": 1.0,
            "seed": 1,
            "max_tokens": 32,
            "preference_vector": {"quality": 1.0},
            "constraints": {"safe": {"min": 0.5}},
            "search": {"strategy": "best_of_n", "adaptive": True, "n": 16, "batch": 4, "stop_probability": 0.5},
        }
    )
    aligner = Aligner(FakeGenerator(text_of), ObjectiveCatalog([FakeQualityAndSafety()]), profile=ModelProfile())
    response = asyncio.run(aligner.generate(request))
    assert response.text == "E later round text" and response.usage.rounds > 1
