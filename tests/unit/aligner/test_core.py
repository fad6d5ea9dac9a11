"""`Aligner.start`, the first phase: a conversation some template refuses is refused before any engine work.

The generator is the deterministic fake (what is under test is where the refusal happens, not what the
engine says); the templates and the reward model are real.
"""

import asyncio

import pytest
from transformers import AutoTokenizer

from aligner.contract import AlignRequest
from aligner.core import Aligner
from aligner.errors import InvalidRequest
from aligner.prompting import ModelProfile
from aligner.rewards import ObjectiveCatalog
from aligner.rewards.hf import HFRewardModel, HFRewardModelConfig
from kernels.buckets import BucketSpec
from tests.chat_templates import ALTERNATING_ROLES, REFUSAL, with_chat_template
from tests.fakes import FakeGenerator, FakeRewardModel

REPEATED_USER = [{"role": "user", "content": "Hi."}, {"role": "user", "content": "How do I boil an egg?"}]


@pytest.fixture(scope="module")
def strict_reward_model(tiny_reward_model_dir, tmp_path_factory):
    """The tiny 3-head reward model with a Mistral-style template: roles must alternate user/assistant."""
    path = with_chat_template(tiny_reward_model_dir, ALTERNATING_ROLES, tmp_path_factory.mktemp("strict-reward"))
    return HFRewardModel(
        HFRewardModelConfig(path=str(path), name="strict", device="cpu"),
        bucket_spec=BucketSpec(batch_sizes=(1, 2, 4), seq_lens=(32, 64, 128)),
    )


def request(messages, objective):
    return AlignRequest.parse(
        {
            "messages": messages,
            "max_tokens": 8,
            "seed": 1,
            "preference_vector": {objective: 1},
            "search": {"strategy": "best_of_n", "n": 2},
        }
    )


def test_a_conversation_a_reward_template_refuses_is_refused_before_the_engine_is_asked(strict_reward_model):
    generator = FakeGenerator()
    catalog = ObjectiveCatalog([strict_reward_model, FakeRewardModel(["plain"], [0.5])])
    aligner = Aligner(generator, catalog, profile=ModelProfile())
    with pytest.raises(InvalidRequest) as err:
        asyncio.run(aligner.start(request(REPEATED_USER, "beavertails-is_safe")))
    assert err.value.field == "messages"
    assert err.value.reason == f"the reward model 'strict''s chat template refuses this conversation: {REFUSAL}"
    assert generator.requests == []
    # Only the models that score the request's objectives are asked: this one never reads the conversation.
    response = asyncio.run(aligner.generate(request(REPEATED_USER, "plain")))
    assert response.scores == {"plain": 0.5}
    good = asyncio.run(aligner.generate(request(REPEATED_USER[1:], "beavertails-is_safe")))
    assert set(good.scores) == {"beavertails-is_safe"} and good.usage.candidates == 2


def test_a_conversation_the_policy_template_refuses_is_refused_before_the_engine_is_asked(model_dir, tmp_path):
    generator = FakeGenerator()
    strict = with_chat_template(model_dir, ALTERNATING_ROLES, tmp_path, tokenizer_only=True)
    generator.tokenizer = AutoTokenizer.from_pretrained(strict)  # the policy model's own (real) template
    aligner = Aligner(generator, ObjectiveCatalog([FakeRewardModel(["plain"], [0.5])]), profile=ModelProfile())
    with pytest.raises(InvalidRequest) as err:
        asyncio.run(aligner.start(request(REPEATED_USER, "plain")))
    assert err.value.field == "messages" and err.value.reason.endswith(REFUSAL)
    assert generator.requests == []


def test_prompts_for_other_directions_carry_the_tenant_config_versions_marker():
    """Failed before: `rps`'s neighbour prompts were marked for no tenant and no version, one marker for
    every tenant (and a prefix-cache key shared by all of them)."""
    import re

    from aligner.prompting_guard import operator_marker
    from aligner.safety.config import SafetyConfig

    prompts: list[str] = []

    class RecordingFakeGenerator(FakeGenerator):
        async def generate(self, prompt_ids, spec, *, n=1, prefix_ids=()):
            prompts.append("".join(chr(i) for i in prompt_ids))
            return await super().generate(prompt_ids, spec, n=n, prefix_ids=prefix_ids)

    secret = b"s" * 32
    aligner = Aligner(
        RecordingFakeGenerator(),
        ObjectiveCatalog([FakeRewardModel(["relevance", "verbosity"], [0.5, 0.5])]),
        profile=ModelProfile(reads_directions=True),
        operator_secret=secret,
    )
    request = AlignRequest.parse(
        {
            "prompt": "hi",
            "temperature": 1.0,
            "seed": 3,
            "max_tokens": 8,
            "preference_vector": {"relevance": 1.0, "verbosity": 0.5},
            "search": {"strategy": "rps", "n": 1, "neighbors": 3},
        }
    )

    async def run():
        search = await aligner.start(request, safety=SafetyConfig(text="Be polite."), safety_version=7, tenant="acme")
        await search.result()

    asyncio.run(run())
    markers = {m for p in prompts for m in re.findall(r"\[operator section (\w+)\]", p)}
    assert prompts and markers == {operator_marker(secret, "acme", 7)}
