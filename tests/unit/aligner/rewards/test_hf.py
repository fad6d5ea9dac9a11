import asyncio
import random

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from aligner.contract import ChatMessage
from aligner.errors import InvalidRequest, ModelUnavailable
from aligner.rewards import ObjectiveCatalog
from aligner.rewards.hf import HFRewardModel, HFRewardModelConfig, pooled_forward
from kernels.buckets import BucketSpec
from kernels.scorer import BatchedScorer
from tests.chat_templates import ALTERNATING_ROLES, REFUSAL, with_chat_template

CONVERSATION = [ChatMessage(role="user", content="How do I boil an egg?")]
RESPONSES = [
    "Put it in boiling water for nine minutes.",
    "",
    "Eggs.",
    "Place the egg in a pot, cover with cold water, bring to a boil, simmer for 9 minutes, then cool it in ice water. "
    * 3,
    "I don't know.",
    "Boil water, add the egg, wait, peel.",
]


@pytest.fixture(scope="module")
def reward_model(tiny_reward_model_dir):
    return HFRewardModel(
        HFRewardModelConfig(path=str(tiny_reward_model_dir), device="cpu"),
        bucket_spec=BucketSpec(batch_sizes=(1, 2, 4), seq_lens=(32, 64, 128)),
    )


def one_at_a_time(model_dir, sequences):
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        return np.stack([model(input_ids=torch.tensor([s])).logits[0].numpy() for s in sequences])


def test_objective_names_come_from_id2label(reward_model):
    assert [o.name for o in reward_model.objectives] == [
        "helpsteer-helpfulness",
        "helpsteer-verbosity",
        "beavertails-is_safe",
    ]


def test_conversation_is_formatted_with_the_reward_model_chat_template(reward_model):
    text = reward_model.tokenizer.decode(reward_model.token_ids(CONVERSATION, "Nine minutes."))
    assert "<|im_start|>user\nHow do I boil an egg?<|im_end|>" in text
    assert "<|im_start|>assistant\nNine minutes.<|im_end|>" in text


def test_bucketed_scores_equal_one_at_a_time_in_any_order(reward_model, tiny_reward_model_dir):
    sequences = [reward_model.token_ids(CONVERSATION, r) for r in RESPONSES]
    expected = one_at_a_time(tiny_reward_model_dir, sequences)
    np.testing.assert_allclose(reward_model.score_now(CONVERSATION, RESPONSES), expected, atol=1e-4)
    order = list(range(len(RESPONSES)))
    random.Random(3).shuffle(order)
    shuffled = reward_model.score_now(CONVERSATION, [RESPONSES[i] for i in order])
    np.testing.assert_allclose(shuffled, expected[order], atol=1e-4)
    stats = reward_model.scorer.stats
    assert stats.batches >= 2 and stats.eager_runs == stats.batches and stats.graph_replays == 0
    assert 0 < stats.padding_waste < 1


@pytest.mark.parametrize("left", [False, True])
def test_left_and_right_padding_agree_with_unpadded(tiny_reward_model_dir, left):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_reward_model_dir, dtype=torch.float32).eval()
    rng = random.Random(1)
    sequences = [[rng.randrange(3, 1000) for _ in range(n)] for n in (1, 5, 17, 31, 32, 33, 70, 150)]
    scorer = BatchedScorer(
        pooled_forward(model, 2, left_padding=left),
        num_outputs=3,
        pad_id=2,
        spec=BucketSpec(batch_sizes=(1, 4), seq_lens=(8, 32, 64)),
        left_padding=left,
    )
    np.testing.assert_allclose(scorer.score(sequences), one_at_a_time(tiny_reward_model_dir, sequences), atol=1e-4)
    assert scorer.stats.padded_tokens > scorer.stats.real_tokens


def test_pad_ids_inside_real_text_pool_like_the_unpadded_model(tiny_reward_model_dir):
    """The pad id (= eos here) inside or at the end of real text pools exactly as transformers does unpadded."""
    model = AutoModelForSequenceClassification.from_pretrained(tiny_reward_model_dir, dtype=torch.float32).eval()
    sequences = [[5, 6, 2, 7, 8], [9, 2], [2, 2, 2]]
    scorer = BatchedScorer(
        pooled_forward(model, 2), num_outputs=3, pad_id=2, spec=BucketSpec(batch_sizes=(4,), seq_lens=(8,))
    )
    np.testing.assert_allclose(scorer.score(sequences), one_at_a_time(tiny_reward_model_dir, sequences), atol=1e-4)


def test_empty_inputs(reward_model):
    assert reward_model.score_now(CONVERSATION, []).shape == (0, 3)


def test_single_head_model_takes_the_configured_name(tmp_path, tokenizer):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_labels=1,
        pad_token_id=2,
    )
    LlamaForSequenceClassification(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model = HFRewardModel(HFRewardModelConfig(path=str(tmp_path), name="quality", device="cpu"))
    assert [o.name for o in model.objectives] == ["quality"]
    assert model.score_now(CONVERSATION, ["a", "b"]).shape == (2, 1)


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelUnavailable, match="no config.json"):
        HFRewardModel(HFRewardModelConfig(path=str(tmp_path)))


def test_catalog_merges_builtins_and_hf_heads_and_rejects_a_second_copy(tiny_reward_model_dir, tokenizer):
    from aligner.errors import ConfigError
    from aligner.rewards import RewardsConfig, build_catalog

    config = RewardsConfig(judge=False, models=[{"path": str(tiny_reward_model_dir), "device": "cpu"}])
    catalog = build_catalog(config, tokenizer=tokenizer)
    assert {"verbosity", "relevance", "helpsteer-helpfulness", "beavertails-is_safe"} <= set(catalog.names)
    scores = asyncio.run(catalog.score(CONVERSATION, RESPONSES[:2], ["beavertails-is_safe", "verbosity"]))
    assert scores.shape == (2, 2)
    twice = RewardsConfig(judge=False, builtin=False, models=[config.models[0], config.models[0]])
    with pytest.raises(ConfigError, match="'helpsteer-helpfulness' is declared by two reward models"):
        build_catalog(twice, tokenizer=tokenizer)


def test_a_model_without_a_pad_id_pools_its_last_token_like_transformers(tmp_path, tokenizer):
    """No pad id in the config: transformers pools the last token, even one equal to the tokenizer's pad id."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(1)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_labels=1,
        pad_token_id=None,
    )
    LlamaForSequenceClassification(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model = HFRewardModel(
        HFRewardModelConfig(path=str(tmp_path), name="quality", device="cpu"),
        bucket_spec=BucketSpec(batch_sizes=(1, 4), seq_lens=(16, 64)),
    )
    assert model.model.config.pad_token_id is None
    pad = model.scorer.pad_id
    sequences = [[5, 6, 7, pad], [9, pad, pad], [11, 12]]  # trailing tokens equal to the padding id
    np.testing.assert_allclose(model.scorer.score(sequences), one_at_a_time(tmp_path, sequences), atol=1e-4)


@pytest.fixture(scope="module")
def tiny_guard_model_dir(tmp_path_factory, tokenizer):
    """A randomly initialised 2-layer LlamaForCausalLM with the policy tokenizer: a stand-in guard model."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
    )
    path = tmp_path_factory.mktemp("tiny-guard")
    LlamaForCausalLM(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_a_guard_model_judges_policy_compliance_as_p_yes_under_the_tenants_policy(tiny_guard_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from aligner.contract import ChatMessage
    from aligner.prompting import prompt_token_ids
    from aligner.rewards import RewardsConfig, build_catalog
    from aligner.rewards.base import CURRENT_SAFETY, RewardError
    from aligner.rewards.judge import GuardModelJudge, policy_messages, verdict
    from aligner.safety.config import SafetyConfig

    tokenizer = AutoTokenizer.from_pretrained(tiny_guard_model_dir)
    catalog = build_catalog(
        RewardsConfig(builtin=False, judge=False, guard_model=str(tiny_guard_model_dir)), tokenizer=tokenizer
    )
    assert catalog.names == ["policy_compliance", "checks"]
    judge = GuardModelJudge(str(tiny_guard_model_dir))
    conversation = [ChatMessage(role="user", content="Any betting tips?")]
    with pytest.raises(RewardError, match="safety config"):
        asyncio.run(judge.score(conversation, ["No."]))
    token = CURRENT_SAFETY.set(SafetyConfig(text="Never discuss gambling."))
    try:
        got = asyncio.run(judge.score(conversation, ["Bet on red.", "I can't help with that."]))
        ids = prompt_token_ids(tokenizer, policy_messages(tokenizer, "Any betting tips?", "Bet on red."))
    finally:
        CURRENT_SAFETY.reset(token)
    model = AutoModelForCausalLM.from_pretrained(tiny_guard_model_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        probs = torch.softmax(model(torch.tensor([ids])).logits[0, -1], -1)
    yes, no = float(probs[judge.yes_ids].sum()), float(probs[judge.no_ids].sum())
    # A random model puts little mass on Yes and No: its verdict may be undecided (NaN), never a bare 0.5.
    assert got.shape == (2, 1) and (np.isnan(got) | ((got >= 0) & (got <= 1))).all()
    assert got[0, 0] == pytest.approx(verdict(yes, no), rel=1e-5, nan_ok=True)


# --- a reward model whose chat template refuses a conversation (roles that do not alternate) ---

ALTERNATING = [
    ChatMessage(role="user", content="Hi."),
    ChatMessage(role="assistant", content="Hello! What do you need?"),
]
REPEATED_USER = [ChatMessage(role="user", content="Hi."), ChatMessage(role="user", content="How do I boil an egg?")]


@pytest.fixture(scope="module")
def strict_reward_model(tiny_reward_model_dir, tmp_path_factory):
    """The tiny reward model with a Mistral-style template: roles must alternate user/assistant."""
    path = with_chat_template(tiny_reward_model_dir, ALTERNATING_ROLES, tmp_path_factory.mktemp("strict-reward"))
    return HFRewardModel(
        HFRewardModelConfig(path=str(path), name="strict", device="cpu"),
        bucket_spec=BucketSpec(batch_sizes=(1, 2, 4), seq_lens=(32, 64, 128)),
    )


def test_a_conversation_the_reward_template_refuses_is_the_requests_error(strict_reward_model):
    strict_reward_model.check_conversation(CONVERSATION)
    for refused in (REPEATED_USER, ALTERNATING):  # the response makes ALTERNATING end assistant, assistant
        with pytest.raises(InvalidRequest) as err:
            strict_reward_model.check_conversation(refused)
        assert err.value.field == "messages"
        assert err.value.reason == f"the reward model 'strict''s chat template refuses this conversation: {REFUSAL}"
        with pytest.raises(InvalidRequest):  # scoring it is refused the same way
            strict_reward_model.score_now(refused, ["Boil it."])


def test_the_catalog_checks_only_the_models_that_score_the_requests_objectives(strict_reward_model, tokenizer):
    from aligner.rewards.builtin import Verbosity

    catalog = ObjectiveCatalog([Verbosity(tokenizer), strict_reward_model])
    catalog.check_conversation(REPEATED_USER, ["verbosity"])
    with pytest.raises(InvalidRequest) as err:
        catalog.check_conversation(REPEATED_USER, ["verbosity", "beavertails-is_safe"])
    assert err.value.field == "messages" and "'strict'" in err.value.reason


def test_a_refused_conversation_merged_with_others_fails_only_its_own_request(strict_reward_model):
    """Failed before this fix: the template's TemplateError reached every request merged into the batch."""
    catalog = ObjectiveCatalog([strict_reward_model], batch_window_ms=200)
    names = [o.name for o in strict_reward_model.objectives]
    answers = ["Put it in boiling water for nine minutes.", "Eggs."]

    async def main():
        return await asyncio.gather(
            catalog.score(CONVERSATION, answers, names),
            catalog.score(REPEATED_USER, answers, names),  # bypasses the first-phase check, as a bug might
            catalog.score([ChatMessage(role="user", content="Say hi.")], ["Hi!"], names),
            return_exceptions=True,
        )

    good, refused, other = asyncio.run(main())
    assert isinstance(refused, InvalidRequest) and refused.field == "messages"
    np.testing.assert_allclose(good, strict_reward_model.score_now(CONVERSATION, answers), atol=1e-5)
    np.testing.assert_allclose(
        other, strict_reward_model.score_now([ChatMessage(role="user", content="Say hi.")], ["Hi!"]), atol=1e-5
    )
