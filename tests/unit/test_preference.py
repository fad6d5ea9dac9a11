import asyncio
import math

import numpy as np
import pytest

from aligner.contract import AlignRequest, ChatMessage
from aligner.core import Aligner
from aligner.errors import ConfigError, InvalidRequest
from aligner.preference import Combiner
from aligner.rewards import Objective, ObjectiveCatalog, RewardError, RewardModel
from aligner.rewards.base import TenantPolicyObjective
from aligner.safety.config import SafetyConfig

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


class FakeRewardModel(RewardModel):
    """A fake with fixed scores: the catalog logic is under test, not a model."""

    def __init__(self, names, values):
        self.objectives = tuple(Objective(n, n) for n in names)
        self.values = values
        self.calls = 0

    async def score(self, conversation, responses):
        self.calls += 1
        return np.array([self.values] * len(responses), dtype=float)


CONV = [ChatMessage(role="user", content="q")]


def test_catalog_scores_only_requested_objectives_once_per_model():
    a, b = FakeRewardModel(["x", "y"], [0.1, 0.2]), FakeRewardModel(["z"], [0.3])
    catalog = ObjectiveCatalog([a, b])
    out = asyncio.run(catalog.score(CONV, ["r1", "r2"], ["y", "x"]))
    np.testing.assert_allclose(out, [[0.2, 0.1], [0.2, 0.1]])
    assert (a.calls, b.calls) == (1, 0)


def test_a_failing_reward_model_cancels_the_others_scoring():
    cancelled = []

    class FakeSlowModel(FakeRewardModel):
        async def score(self, conversation, responses):
            try:
                await asyncio.sleep(10)  # e.g. the judge waiting on its engine requests
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

    class FakeFailingModel(FakeRewardModel):
        async def score(self, conversation, responses):
            await asyncio.sleep(0.05)
            raise RewardError("the reward model failed")

    async def main():
        catalog = ObjectiveCatalog([FakeSlowModel(["slow"], [0]), FakeFailingModel(["bad"], [0])])
        with pytest.raises(RewardError, match="failed"):
            await catalog.score(CONV, ["r"], ["slow", "bad"])
        return list(cancelled)  # before asyncio.run's own clean-up could cancel a leftover

    assert asyncio.run(main()) == [True]


def test_unknown_objective_error_lists_valid_names():
    catalog = ObjectiveCatalog([FakeRewardModel(["x", "y"], [0, 0])])
    with pytest.raises(InvalidRequest) as err:
        catalog.check_names(["x", "helpfulness"], "preference_vector")
    assert err.value.field == "preference_vector"
    assert "unknown objective 'helpfulness'; valid objectives: x, y" in err.value.message


class FakePolicyModel(FakeRewardModel):
    """A fake whose objectives judge against the tenant's config, as policy_compliance and topic_safety do."""

    def __init__(self, names, values):
        super().__init__(names, values)
        self.objectives = tuple(TenantPolicyObjective(n, n) for n in names)


def test_the_catalog_says_which_objectives_read_the_tenants_config():
    catalog = ObjectiveCatalog([FakeRewardModel(["x"], [0]), FakePolicyModel(["rule", "topic"], [0, 0])])
    assert catalog.needs_safety_config(["topic", "x", "rule"]) == ["topic", "rule"]
    assert catalog.needs_safety_config(["x"]) == []
    # The flag is the objective's, not a field: what the catalog describes is unchanged.
    assert [sorted(row) for row in catalog.describe()] == [["description", "high", "low", "name", "reference"]] * 3


def test_a_request_naming_an_objective_that_reads_the_config_needs_one():
    catalog = ObjectiveCatalog([FakeRewardModel(["x"], [0]), FakePolicyModel(["rule"], [0])])
    for data, field in (
        ({"preference_vector": {"x": 1, "rule": 1}}, "preference_vector"),
        ({"constraints": {"rule": {"min": 0.5}}}, "constraints"),
    ):
        request = AlignRequest.parse({"prompt": "q", **data})
        with pytest.raises(InvalidRequest) as err:
            Aligner.check_objectives_of(request, catalog)
        assert err.value.field == field
        assert err.value.message == (
            f"{field}: rule judges against the tenant's safety config, and this request is served under none"
        )
        Aligner.check_objectives_of(request, catalog, SafetyConfig(text="Be kind."))
    with pytest.raises(
        ConfigError,
        match="^the tenant's safety config: safety.thresholds: unknown objective 'gone'; valid objectives: rule, x$",
    ):
        Aligner.check_objectives_of(
            AlignRequest.parse({"prompt": "q"}), catalog, SafetyConfig(text="Be kind.", thresholds={"gone": 0.5})
        )


def test_duplicate_objective_names_across_models_are_rejected():
    with pytest.raises(ConfigError, match="'x' is declared by two reward models"):
        ObjectiveCatalog([FakeRewardModel(["x"], [0]), FakeRewardModel(["y", "x"], [0, 0])])


def test_nan_from_a_reward_model_is_an_error_not_a_rank():
    catalog = ObjectiveCatalog([FakeRewardModel(["x"], [float("nan")])])
    with pytest.raises(RewardError, match="'x' returned a non-finite score for candidate 0"):
        asyncio.run(catalog.score(CONV, ["r"], ["x"]))


def test_wrong_shape_from_a_reward_model_is_an_error():
    class FakeBrokenModel(FakeRewardModel):
        async def score(self, conversation, responses):
            return np.zeros((len(responses) + 1, 1))

    with pytest.raises(RewardError, match="shape"):
        asyncio.run(ObjectiveCatalog([FakeBrokenModel(["x"], [0])]).score(CONV, ["r"], ["x"]))


def test_request_validation_for_ranked_strategies():
    with pytest.raises(InvalidRequest) as err:
        AlignRequest.parse({"prompt": "x", "search": {"strategy": "best_of_n", "n": 4}})
    assert err.value.field == "preference_vector"
    with pytest.raises(InvalidRequest) as err:
        AlignRequest.parse({"prompt": "x", "preference_vector": {"a": 1}, "search": {"strategy": "best_of_n", "n": 65}})
    assert err.value.field == "search.n" and "64" in err.value.message
    with pytest.raises(InvalidRequest) as err:
        AlignRequest.parse({"prompt": "x", "constraints": {"a": {"min": float("nan")}}})
    assert err.value.field == "constraints.a.min"
    request = AlignRequest.parse(
        {"prompt": "x", "preference_vector": {"a": 1, "b": 1}, "constraints": {"c": {"min": 0.5}, "a": {"min": 0}}}
    )
    assert request.scored_objectives() == ["a", "b", "c"]
