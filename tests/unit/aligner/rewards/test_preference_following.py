"""`preference_following` (issue 20, item 1): a ranked strategy given preferences in words and no vector
ranks by a judge that reads the request's own preferences and system message, never the tenant's config.

The policy engine is a fake that answers the judge by what its prompt holds (its tokenizer is the real
policy tokenizer, which renders the judge's prompt); the judge, the contract and the ranking are real.
"""

import asyncio

import pytest

from aligner.contract import DEFAULT_LIMITS, PREFERENCE_OBJECTIVE, AlignRequest, ChatMessage
from aligner.core import Aligner
from aligner.errors import InvalidRequest
from aligner.prompting import ModelProfile
from aligner.rewards import ObjectiveCatalog
from aligner.rewards.base import CURRENT_PREFERENCES
from aligner.rewards.judge import PreferenceFollowingJudge, PreferenceModelJudge
from aligner.safety.config import SafetyConfig
from aligner.tenants.policy import TenantPolicy
from aligner.tenants.policy_apply import parse_request
from tests.fakes import FakeGenerator, FakeRewardModel

LONG = "The capital of France is Paris, a city on the Seine with a long and storied history of art."
SHORT = "Paris."
ONE_SENTENCE = "Answer in one short sentence."


class JudgingEngine(FakeGenerator):
    """Candidates LONG then SHORT; the judge's verdict is Yes when its prompt's response is SHORT."""

    def __init__(self, tokenizer, max_model_len=1024):
        super().__init__(lambda seed, i: (LONG, SHORT)[i % 2])
        self.tokenizer = tokenizer
        self._max_model_len = max_model_len
        self.yes = tokenizer("Yes", add_special_tokens=False)["input_ids"][0]
        self.no = tokenizer("No", add_special_tokens=False)["input_ids"][0]
        self.judge_prompts: list[str] = []

    async def next_token_logprobs(self, prompt_ids, top_k=20):
        prompt = self.tokenizer.decode(prompt_ids)
        self.judge_prompts.append(prompt)
        short = f"Response:\n{SHORT}\n" in prompt
        return {self.yes: -0.05 if short else -3.0, self.no: -3.0 if short else -0.05}


def aligner_on(engine, *models):
    catalog = ObjectiveCatalog([PreferenceFollowingJudge(engine.tokenizer, engine), *models])
    return Aligner(engine, catalog, profile=ModelProfile())


def body(**extra):
    return {"prompt": "What is the capital of France?", "max_tokens": 200, "seed": 3, **extra}


def test_preferences_in_words_alone_rank_a_best_of_n_by_how_well_candidates_follow_them(tokenizer):
    """Failed before this: 400 `best_of_n ranks candidates by a direction; give a preference_vector`."""
    engine = JudgingEngine(tokenizer)
    request = AlignRequest.parse(body(preferences=ONE_SENTENCE, search={"strategy": "best_of_n", "n": 2}))
    assert request.direction() == {PREFERENCE_OBJECTIVE: 1.0} and request.preference_vector is None
    response = asyncio.run(aligner_on(engine).generate(request))
    assert response.text == SHORT and response.scores[PREFERENCE_OBJECTIVE] > 0.9
    assert len(engine.judge_prompts) == 2 and all(ONE_SENTENCE in p for p in engine.judge_prompts)


def test_the_judge_reads_the_users_system_message_and_never_the_tenants_config(tokenizer):
    engine = JudgingEngine(tokenizer)
    request = AlignRequest.parse(
        {
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "What is the capital of France?"},
            ],
            "preferences": ONE_SENTENCE,
            "max_tokens": 200,
            "search": {"strategy": "best_of_n", "n": 2},
        }
    )
    assert request.stated_preferences() == f"{ONE_SENTENCE}\n\nYou are terse."
    config = SafetyConfig(text="SECRET OPERATOR POLICY: never mention rivers.")
    response = asyncio.run(aligner_on(engine).generate(request, safety=config))
    assert response.text == SHORT
    assert all("You are terse." in p and ONE_SENTENCE in p for p in engine.judge_prompts)
    assert not any("SECRET OPERATOR POLICY" in p for p in engine.judge_prompts)


def test_a_system_message_alone_is_read_by_the_judge_but_implies_no_ranking():
    """Many clients send a stock system message: it must not turn every ranked request into a judged one
    (a request with checks alone used to be ranked by the judge, or refused where it is not served)."""
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    checks_only = AlignRequest.parse(
        {"messages": conversation, "checks": [{"id": "punctuation:no_comma"}], "search": {"strategy": "best_of_n"}}
    )
    assert checks_only.direction() is None and checks_only.scored_objectives() == ["checks"]
    named = AlignRequest.parse(
        {"messages": conversation, "preference_vector": {PREFERENCE_OBJECTIVE: 1}, "search": {"strategy": "best_of_n"}}
    )
    assert named.stated_preferences() == "Be brief."


def test_a_given_vector_ranks_as_it_did_and_sample_ranks_nothing():
    with_vector = AlignRequest.parse(
        body(preferences=ONE_SENTENCE, preference_vector={"verbosity": -1}, search={"strategy": "best_of_n"})
    )
    assert with_vector.direction() == {"verbosity": -1.0} and with_vector.scored_objectives() == ["verbosity"]
    combined = AlignRequest.parse(
        body(
            preferences=ONE_SENTENCE,
            preference_vector={"verbosity": -1, PREFERENCE_OBJECTIVE: 1},
            search={"strategy": "best_of_n"},
        )
    )
    assert combined.scored_objectives() == ["verbosity", PREFERENCE_OBJECTIVE]
    sampled = AlignRequest.parse(body(preferences=ONE_SENTENCE, search={"strategy": "sample"}))
    assert sampled.direction() is None and sampled.scored_objectives() == []


def test_without_preferences_a_ranked_strategy_still_needs_a_direction():
    with pytest.raises(InvalidRequest) as err:
        AlignRequest.parse(body(preferences="   ", search={"strategy": "best_of_n"}))
    assert err.value.field == "preference_vector"


def test_the_objective_without_stated_preferences_is_refused_naming_the_field(tokenizer):
    request = AlignRequest.parse(body(preference_vector={PREFERENCE_OBJECTIVE: 1}, search={"strategy": "best_of_n"}))
    with pytest.raises(InvalidRequest) as err:
        asyncio.run(aligner_on(JudgingEngine(tokenizer)).generate(request))
    assert err.value.field == "preference_vector" and "`preferences` or system message" in err.value.message


def test_a_server_without_the_judge_refuses_ranking_by_preferences_naming_preferences(tokenizer):
    engine = JudgingEngine(tokenizer)
    aligner = Aligner(engine, ObjectiveCatalog([FakeRewardModel(["verbosity"], [0.5])]), profile=ModelProfile())
    request = AlignRequest.parse(body(preferences=ONE_SENTENCE, search={"strategy": "best_of_n"}))
    with pytest.raises(InvalidRequest) as err:
        asyncio.run(aligner.generate(request))
    assert err.value.field == "preferences" and "give a preference_vector over: verbosity" in err.value.message


def test_a_tenant_policy_that_does_not_allow_the_objective_refuses_it_naming_preferences():
    policy = TenantPolicy.model_validate({"allowed_objectives": ["verbosity"]})
    data = body(preferences=ONE_SENTENCE, search={"strategy": "best_of_n"})
    with pytest.raises(InvalidRequest) as err:
        parse_request(data, DEFAULT_LIMITS, policy)
    assert err.value.field == "preferences" and "allowed: verbosity" in err.value.message


def test_long_preferences_are_cut_so_the_judge_still_decides(tokenizer):
    """Preferences and a system message that fill the policy prompt would leave the judge no room for the
    response: they are cut to a quarter of its window (their start kept), and the judge decides."""
    engine = JudgingEngine(tokenizer, max_model_len=2048)
    system = "Keep it short. " * 180
    request = AlignRequest.parse(
        {
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": "Capital of France?"}],
            "preferences": "Be brief, " * 390 + "and end with LAST.",
            "max_tokens": 64,
            "search": {"strategy": "best_of_n", "n": 2},
        }
    )
    response = asyncio.run(aligner_on(engine).generate(request))
    assert response.text == SHORT and PREFERENCE_OBJECTIVE in response.scores  # decided, not undecided
    assert all(len(tokenizer(p)["input_ids"]) < 2048 for p in engine.judge_prompts)
    assert all("Be brief," in p and "end with LAST" not in p for p in engine.judge_prompts)


def test_a_local_judge_model_reads_the_same_preferences(tokenizer):
    from tests.unit.aligner.rewards.test_judge_verdicts import StubGuard

    judge = PreferenceModelJudge("unused", max_input_tokens=512)
    yes = tokenizer("Yes", add_special_tokens=False)["input_ids"]
    judge.yes_ids, judge.no_ids = yes, tokenizer("No", add_special_tokens=False)["input_ids"]
    stub = StubGuard(len(tokenizer), yes[0])
    judge._loaded = (tokenizer, stub)
    token = CURRENT_PREFERENCES.set(ONE_SENTENCE)
    try:
        question = [ChatMessage(role="user", content="Capital of France?")]
        assert asyncio.run(judge.score(question, [SHORT])).tolist() == [[1.0]]
        prompt = judge.prompt_ids(tokenizer, "Capital of France?", SHORT)
    finally:
        CURRENT_PREFERENCES.reset(token)
    assert prompt is not None and ONE_SENTENCE in tokenizer.decode(prompt) and stub.lengths
