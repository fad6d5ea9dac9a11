"""The objective catalog: unique names, scoring each model once, errors instead of silent ranks."""

import asyncio

import numpy as np
import pytest

from aligner.contract import AlignRequest, ChatMessage
from aligner.errors import ConfigError, InvalidRequest
from aligner.objectives import check_objectives
from aligner.rewards import ObjectiveCatalog, RewardError
from aligner.safety.config import SafetyConfig
from tests.fakes import FakePolicyModel, FakeRewardModel

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
            check_objectives(request, catalog)
        assert err.value.field == field
        assert err.value.message == (
            f"{field}: rule judges against the tenant's safety config, and this request is served under none"
        )
        check_objectives(request, catalog, SafetyConfig(text="Be kind."))
    with pytest.raises(
        ConfigError,
        match="^the tenant's safety config: safety.thresholds: unknown objective 'gone'; valid objectives: rule, x$",
    ):
        check_objectives(
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
