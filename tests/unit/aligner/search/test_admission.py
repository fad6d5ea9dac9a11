"""aligner/search/admission.py: the judges' prefills and a tenant's resamples priced against the server's
caps once the prompt is composed (a real judge class over a fake tokenizer and engine)."""

from __future__ import annotations

import asyncio

import pytest

from aligner.contract import AlignRequest, SearchLimits
from aligner.core import Aligner
from aligner.errors import InvalidRequest
from aligner.prompting import ModelProfile
from aligner.rewards import ObjectiveCatalog
from aligner.rewards.judge import HelpfulnessJudge
from aligner.safety.config import SafetyConfig
from aligner.safety.enforce import with_thresholds
from aligner.search.admission import JUDGE_TEMPLATE_TOKENS, admit
from aligner.search.base import DeadlineExceeded
from tests.fakes import FakeCharTokenizer, FakeGenerator, FakeRewardModel

UNREACHABLE = SafetyConfig(text="Be kind.", thresholds={"verbosity": 0.99}, action="resample", max_resamples=8)


def catalog(max_model_len: int = 100_000) -> ObjectiveCatalog:
    judge = HelpfulnessJudge(FakeCharTokenizer(), FakeGenerator(max_model_len=max_model_len))
    return ObjectiveCatalog([judge, FakeRewardModel(["relevance", "verbosity"], [0.5, 0.1])])


def request(vector: dict[str, float], **fields) -> AlignRequest:
    data = {"prompt": "hi", "preference_vector": vector, "temperature": 1.0, "max_tokens": 100, **fields}
    return AlignRequest.parse(data)


BEST_OF_4 = {"strategy": "best_of_n", "n": 4}


def test_a_judge_on_the_policy_model_prefills_once_per_reward_call():
    admitted = admit(
        request({"helpfulness": 1.0}, search=BEST_OF_4), catalog(), None, prompt_tokens=50, limits=SearchLimits()
    )
    # 4 reward calls x (template + the composed prompt + the whole 100-token response).
    assert admitted.cost.judge_prefill_tokens == 4 * (JUDGE_TEMPLATE_TOKENS + 50 + 100)
    assert admitted.cost.reward_calls == 4 and admitted.resamples == 0


def test_objectives_scored_without_the_policy_model_prefill_nothing():
    admitted = admit(
        request({"relevance": 1.0}, search=BEST_OF_4), catalog(), None, prompt_tokens=50, limits=SearchLimits()
    )
    assert admitted.cost.judge_prefill_tokens == 0


def test_a_judges_prefill_is_at_most_the_models_context():
    admitted = admit(
        request({"helpfulness": 1.0}, search=BEST_OF_4),
        catalog(max_model_len=200),
        None,
        prompt_tokens=50,
        limits=SearchLimits(),
    )
    assert admitted.cost.judge_prefill_tokens == 4 * 199


def test_too_much_judging_is_refused_naming_the_limit():
    limits = SearchLimits(max_judge_prefill_tokens=4 * (JUDGE_TEMPLATE_TOKENS + 150) - 1)
    with pytest.raises(InvalidRequest) as err:
        admit(request({"helpfulness": 1.0}, search=BEST_OF_4), catalog(), None, prompt_tokens=50, limits=limits)
    assert err.value.field == "search" and "search_limits.max_judge_prefill_tokens" in err.value.reason
    assert f"may prefill up to {4 * (JUDGE_TEMPLATE_TOKENS + 150)} prompt tokens" in err.value.reason


def admitted_resamples(search: dict, limits: SearchLimits, config: SafetyConfig = UNREACHABLE, **fields) -> int:
    merged = with_thresholds(request({"relevance": 1.0}, search=search, **fields), config)
    return admit(merged, catalog(), config, prompt_tokens=10, limits=limits).resamples


def test_resamples_are_capped_by_what_the_servers_limits_leave():
    assert admitted_resamples(BEST_OF_4, SearchLimits()) == 8  # the config's own maximum
    assert admitted_resamples(BEST_OF_4, SearchLimits(max_candidates=10)) == 6
    assert admitted_resamples(BEST_OF_4, SearchLimits(max_search_tokens=4 * 100 + 250)) == 2
    assert admitted_resamples(BEST_OF_4, SearchLimits(max_reward_calls=5)) == 1
    assert admitted_resamples(BEST_OF_4, SearchLimits(max_engine_requests=1)) == 0  # the resample is a request too
    assert admitted_resamples(BEST_OF_4, SearchLimits(max_candidates=4)) == 0


def test_only_a_resample_config_with_thresholds_gets_resamples():
    refuse = SafetyConfig(text="Be kind.", thresholds={"verbosity": 0.99}, max_resamples=8)
    assert admitted_resamples(BEST_OF_4, SearchLimits(), refuse) == 0


def generate(limits: SearchLimits, config: SafetyConfig, search: dict = BEST_OF_4, **fields):
    merged_catalog = ObjectiveCatalog([FakeRewardModel(["relevance", "verbosity"], [0.5, 0.1])])
    aligner = Aligner(FakeGenerator(), merged_catalog, profile=ModelProfile(), limits=limits)
    return asyncio.run(aligner.generate(request({"relevance": 1.0}, search=search, **fields), safety=config))


def test_a_resample_stays_within_the_servers_candidate_limit():
    """Failed before this fix: 4 + 8 = 12 candidates, past a limit of 10 (the issue measured 320 past 256)."""
    response = generate(SearchLimits(max_candidates=10), UNREACHABLE)
    assert response.safety.verdict == "refused" and response.usage.candidates == 10


def test_a_resample_stays_within_the_servers_token_limit():
    """Failed before this fix: 8 more candidates of up to 100 tokens were drawn, past max_search_tokens."""
    limits = SearchLimits(max_search_tokens=4 * 100 + 250)
    response = generate(limits, UNREACHABLE, max_tokens=100)
    assert response.usage.candidate_tokens <= limits.max_search_tokens and response.usage.candidates == 4 + 2


def test_a_search_at_the_limits_is_refused_without_resampling():
    response = generate(SearchLimits(max_candidates=4), UNREACHABLE)
    assert response.safety.verdict == "refused" and response.usage.candidates == 4
    assert response.usage.engine_requests == 1


def test_the_server_deadline_without_any_result_is_deadline_exceeded():
    aligner = Aligner(FakeGenerator(), profile=ModelProfile(), limits=SearchLimits(max_request_s=1e-9))
    with pytest.raises(DeadlineExceeded):
        asyncio.run(aligner.generate(AlignRequest.parse({"prompt": "hi", "max_tokens": 10})))
