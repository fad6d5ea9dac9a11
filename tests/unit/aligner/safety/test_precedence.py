"""The tenant's thresholds outrank everything a request asks (issue 19, item 1), and an undecided judge
passes no threshold (item 7): the ranking and enforcement logic with fake scores, through the real core.

The generator is the deterministic fake (with the real policy tokenizer, which composes the prompt) and the
scores are a table by text: what is under test is which candidate the ranking and enforcement keep, not
what a model says.
"""

import asyncio
import math

import numpy as np
import pytest

from aligner.contract import AlignRequest
from aligner.core import Aligner
from aligner.preference import Combiner
from aligner.prompting import ModelProfile
from aligner.rewards import Objective, ObjectiveCatalog, RewardModel
from aligner.rewards.base import RewardError
from aligner.safety.config import SafetyConfig
from aligner.safety.enforce import enforce, resample, with_thresholds
from aligner.search.base import Meter, Scored, SearchContext, SearchResult
from tests.fakes import FakeGenerator

SEED = 7
SAFE = "Short and safe."
UNSAFE = "A long answer that the tenant's threshold refuses."
# Resampled candidates (another seed stream): one passes the threshold only, one passes everything.
RESAMPLED = ("Safe but short again.", "Safe and long enough to meet the request's constraint.")
TABLE = {
    # text: (verbosity, harmlessness)
    SAFE: (0.2, 0.9),
    UNSAFE: (0.95, 0.1),
    RESAMPLED[0]: (0.3, 0.8),
    RESAMPLED[1]: (0.92, 0.7),
}


class TableScores(RewardModel):
    """Scores looked up by the response's text; NaN rows stand for an undecided judge."""

    def __init__(self, names, table, *, abstains=False):
        self.objectives = tuple(Objective(n, n) for n in names)
        self.table = table
        self.abstains = abstains

    async def score(self, conversation, responses):
        return np.array([self.table[r] for r in responses], dtype=float)


def texts(*originals, resampled=RESAMPLED):
    """`text_of` for the fake generator: the request's seed gives `originals`, any other seed `resampled`."""
    return lambda seed, i: (originals if seed == SEED else resampled)[i]


@pytest.fixture
def aligner(tokenizer):
    def build(text_of, table=TABLE, names=("verbosity", "harmlessness"), abstains=False):
        generator = FakeGenerator(text_of)
        generator.tokenizer = tokenizer
        catalog = ObjectiveCatalog([TableScores(names, table, abstains=abstains)])
        return Aligner(generator, catalog, profile=ModelProfile())

    return build


def issue_request(**fields):
    """Issue 19's case: the user wants long answers (vector and constraint); the tenant wants harmless ones."""
    return AlignRequest.parse(
        {
            "prompt": "Tell me about it.",
            "seed": SEED,
            "max_tokens": 200,
            "preference_vector": {"verbosity": 1},
            "constraints": {"verbosity": {"min": 0.9}},
            "search": {"strategy": "best_of_n", "n": 2},
            "return_candidates": True,
            **fields,
        }
    )


def config(action, **fields):
    return SafetyConfig(text="Be harmless.", thresholds={"harmlessness": 0.5}, action=action, **fields)


@pytest.mark.parametrize("action", ["flag", "refuse", "resample"])
def test_a_requests_constraint_never_lifts_a_candidate_that_fails_a_threshold(aligner, action):
    """Failed before this fix: `flag` served UNSAFE (both candidates failed some constraint, UNSAFE scored
    higher), `refuse` and `resample` refused although SAFE passes the tenant's threshold."""
    response = asyncio.run(aligner(texts(UNSAFE, SAFE)).generate(issue_request(), safety=config(action)))
    assert response.text == SAFE and response.safety.verdict == "passed"
    assert response.safety.scores == {"harmlessness": 0.9}
    assert response.feasible is False  # the request's own constraint is not met, and it says so
    assert response.usage.engine_requests == 1  # nothing was resampled: a passing candidate existed
    shown = [c.text for c in response.candidates]
    assert shown[0] == SAFE and (UNSAFE in shown) == (action == "flag")


def test_among_candidates_that_pass_the_thresholds_the_requests_constraints_then_the_score_decide(aligner):
    both = {**TABLE, "Long and safe enough.": (0.91, 0.6), "Longer, safe, unconstrained.": (0.99, 0.55)}
    request = issue_request(constraints={"verbosity": {"min": 0.9}}, search={"strategy": "best_of_n", "n": 4})
    candidates = (UNSAFE, SAFE, "Long and safe enough.", "Longer, safe, unconstrained.")
    response = asyncio.run(aligner(texts(*candidates), both).generate(request, safety=config("refuse")))
    # Both long safe answers pass the threshold and the constraint; the higher verbosity wins.
    assert response.text == "Longer, safe, unconstrained." and response.feasible is True
    assert [c.text for c in response.candidates] == [
        "Longer, safe, unconstrained.",
        "Long and safe enough.",
        SAFE,
    ]


def test_resample_picks_the_best_passing_candidate_among_the_original_and_resampled_ones(aligner):
    request = issue_request(search={"strategy": "best_of_n", "n": 1})
    response = asyncio.run(aligner(texts(UNSAFE)).generate(request, safety=config("resample", max_resamples=2)))
    # RESAMPLED[0] passes the threshold only; RESAMPLED[1] also meets the request's constraint.
    assert response.text == RESAMPLED[1] and response.safety.verdict == "resampled" and response.feasible is True
    assert response.usage.candidates == 3 and response.usage.engine_requests == 2


def test_resample_still_refuses_when_no_candidate_passes(aligner):
    table = {**TABLE, RESAMPLED[0]: (0.3, 0.2), RESAMPLED[1]: (0.9, 0.4)}
    request = issue_request(search={"strategy": "best_of_n", "n": 1})
    response = asyncio.run(aligner(texts(UNSAFE), table).generate(request, safety=config("resample", max_resamples=2)))
    assert response.safety.verdict == "refused" and response.finish_reason == "content_filter"
    assert response.candidates == []  # nothing that failed the threshold is shown


def context(request, safety):
    catalog = ObjectiveCatalog([TableScores(("verbosity", "harmlessness"), TABLE)])
    return SearchContext(
        engine=FakeGenerator(texts(UNSAFE)),
        catalog=catalog,
        request=with_thresholds(request, safety),
        prompt_ids=[1],
        meter=Meter(started=0.0),
        thresholds=safety.thresholds,
    )


def test_a_resamples_seed_is_apart_from_every_rounds_seed():
    """Failed before the fix: the resample drew with round 1000's seed, the 1001st step of a beam or a
    rejection search allowed more than 1000 rounds, so it repeated that round's candidates."""
    ctx = context(issue_request(), config("resample", max_resamples=1))
    asyncio.run(resample(ctx, 1))
    ((_, spec),) = ctx.engine.requests
    assert spec.seed is not None and spec.seed not in {ctx.seed_for(r) for r in range(4096)}


@pytest.mark.parametrize("action", ["flag", "refuse"])
def test_enforcement_returns_a_passing_candidate_even_when_the_strategy_chose_another(action):
    safety = config(action)
    ctx = context(issue_request(), safety)
    raw = np.array([TABLE[UNSAFE], TABLE[SAFE], TABLE[RESAMPLED[0]]])
    scored, _ = ctx.rank([Scored((), t, "stop", True) for t in (UNSAFE, SAFE, RESAMPLED[0])], raw)
    # A strategy whose choice is not its best-ranked candidate (the first, UNSAFE).
    result, verdict = asyncio.run(enforce(ctx, safety, SearchResult(chosen=scored[0], candidates=scored)))
    # Both others pass the threshold and miss the request's constraint: the higher combined score wins.
    assert result.chosen.text == RESAMPLED[0] and verdict.verdict == "passed"
    assert result.candidates == scored  # nothing was resampled or dropped


def test_the_combiner_ranks_by_thresholds_then_constraints_then_the_combined_score():
    verbosity, harmlessness = Objective("verbosity", "v"), Objective("harmlessness", "h")
    combiner = Combiner(
        (verbosity, harmlessness),
        {"verbosity": 1.0},
        minimums={"verbosity": 0.9, "harmlessness": 0.5},  # the request's, the threshold merged in
        thresholds={"harmlessness": 0.5},
    )
    raw = np.array([[0.95, 0.1], [0.2, 0.9], [0.92, 0.6], [0.5, 0.7], [0.99, 0.4]])
    ranking = combiner.rank(raw)
    assert ranking.order == [2, 3, 1, 4, 0]
    assert ranking.passes.tolist() == [False, True, True, True, False]
    assert ranking.feasible.tolist() == [False, False, True, False, False]
    assert Combiner((verbosity,), {"verbosity": 1.0}).rank(raw[:, :1]).passes is None


# --- item 7: an undecided judge ---


def test_an_undecided_verdict_fails_every_threshold_and_constraint_and_ranks_at_the_midpoint():
    judge = Objective("policy_compliance", "j")
    combiner = Combiner((judge,), {"policy_compliance": 1.0}, minimums={"policy_compliance": 0.0}, thresholds={})
    ranking = combiner.rank(np.array([[math.nan], [0.6], [0.4], [0.0]]))
    assert ranking.feasible.tolist() == [False, True, True, True]  # even a threshold of 0 is not met
    np.testing.assert_allclose(ranking.combined, [0.5, 0.6, 0.4, 0.0])
    assert ranking.order == [1, 2, 3, 0]


def test_an_undecided_judge_leaves_no_score_and_the_tenant_gets_no_answer_it_did_not_judge(aligner):
    """Failed before this fix: the judge's 0.5 for "neither Yes nor No" passed a threshold of 0.5."""
    table = {"Judged.": (0.1,), "Undecided.": (math.nan,)}
    core = aligner(texts("Undecided.", "Judged."), table, ("policy_compliance",), abstains=True)
    safety = SafetyConfig(text="Be careful.", thresholds={"policy_compliance": 0.5}, action="flag")
    request = AlignRequest.parse(
        {
            "prompt": "hi",
            "seed": SEED,
            "preference_vector": {"policy_compliance": 1},
            "search": {"strategy": "best_of_n", "n": 2},
            "return_candidates": True,
        }
    )
    response = asyncio.run(core.generate(request, safety=safety))
    # Undecided ranks at the midpoint (above 0.1) but fails the threshold like Judged: flagged, unscored.
    assert response.text == "Undecided." and response.safety.verdict == "flagged"
    assert response.scores == {} and response.safety.scores == {} and response.feasible is False
    assert response.candidates[1].scores == {"policy_compliance": 0.1}
    refused = asyncio.run(core.generate(request, safety=safety.model_copy(update={"action": "refuse"})))
    assert refused.safety.verdict == "refused" and refused.candidates == []


def test_only_a_judge_may_abstain_any_other_model_returning_nan_is_a_fault():
    catalog = ObjectiveCatalog([TableScores(("verbosity",), {"x": (math.nan,)})])
    with pytest.raises(RewardError, match="non-finite"):
        asyncio.run(catalog.score([], ["x"], ["verbosity"]))
    judge = ObjectiveCatalog([TableScores(("j",), {"x": (math.nan,), "y": (math.inf,)}, abstains=True)])
    assert math.isnan(asyncio.run(judge.score([], ["x"], ["j"]))[0, 0])
    with pytest.raises(RewardError, match="non-finite"):
        asyncio.run(judge.score([], ["y"], ["j"]))


def test_rejection_never_stops_at_an_undecided_judges_middle_score(aligner):
    """Found by review: with a threshold at or below 0.5, rejection stopped at the first candidate no judge
    had decided on (its middle score) and reported the threshold met."""
    table = {"Undecided.": (math.nan,), "Judged.": (0.3,)}
    core = aligner(
        texts("Undecided.", "Judged.", resampled=("Undecided.", "Judged.")), table, ("helpfulness",), abstains=True
    )
    request = AlignRequest.parse(
        {
            "prompt": "hi",
            "seed": SEED,
            "preference_vector": {"helpfulness": 1},
            "search": {"strategy": "rejection", "threshold": 0.4, "batch": 2, "max_rounds": 2},
        }
    )
    response = asyncio.run(core.generate(request))
    assert response.threshold_met is False


def test_rejection_goes_on_past_a_candidate_that_meets_its_threshold_but_fails_the_tenants(aligner):
    """Rejection stops at a candidate reaching `threshold` only if it is feasible, and the tenant's
    thresholds are among a request's constraints: one failing them does not stop it."""
    seeds: list[int] = []

    def text_of(seed, index):
        seeds.append(seed) if seed not in seeds else None
        return UNSAFE if seed == seeds[0] else RESAMPLED[1]

    request = issue_request(search={"strategy": "rejection", "batch": 1, "max_rounds": 4, "threshold": 0.9})
    response = asyncio.run(aligner(text_of).generate(request, safety=config("refuse")))
    assert response.text == RESAMPLED[1] and response.safety.verdict == "passed"
    assert response.usage.rounds == 2 and response.threshold_met is True


@pytest.mark.parametrize("objective", ["checks", "preference_following"])
def test_a_threshold_on_an_objective_of_the_requests_own_words_is_refused(objective):
    """Found by review: a tenant threshold on preference_following failed every request without preferences
    with a 500; one on checks every request without checks."""
    from aligner.errors import InvalidRequest

    config = SafetyConfig(text="Be nice.", thresholds={objective: 0.5})
    with pytest.raises(InvalidRequest) as err:
        config.check_objectives({objective: (0.0, 1.0)})
    assert err.value.field == f"thresholds.{objective}"


def test_a_stored_config_with_such_a_threshold_is_the_configs_fault_at_request_time(aligner):
    """What a config stored before the rule meets when a request is served: a config error, not a 500."""
    from aligner.errors import ConfigError
    from aligner.objectives import check_objectives

    catalog = ObjectiveCatalog([TableScores(("verbosity", "harmlessness", "checks"), TABLE)])
    config = SafetyConfig(text="Be nice.", thresholds={"checks": 1.0})
    with pytest.raises(ConfigError) as err:
        check_objectives(issue_request(), catalog, config)
    assert "thresholds.checks" in err.value.message
