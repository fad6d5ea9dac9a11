"""A conversation that a chat template refuses, on the real engine: the request that sent it gets a 400
naming `messages` before any engine work, and the requests it would have shared a reward batch with get
their answers.

The reward model is the tiny HF model of tests/conftest.py with a Mistral-style template (roles must
alternate); the policy model is the shared engine's, its prompt rendered by the same kind of template.
"""

import asyncio

import pytest

from aligner.contract import AlignRequest
from aligner.core import Aligner
from aligner.engine.vllm import Engine
from aligner.errors import ErrorInfo
from aligner.rewards import RewardsConfig, build_catalog
from serve.deployments.aligner_server import AlignerServer
from serve.errors import http_status
from tests.chat_templates import ALTERNATING_ROLES, REFUSAL, with_chat_template

GOOD = [{"role": "user", "content": "Give me a tip for studying."}]
REPEATED_USER = [{"role": "user", "content": "Hi."}, {"role": "user", "content": "Give me a tip for studying."}]


def ranked(messages, objectives, seed):
    return AlignRequest.parse(
        {
            "messages": messages,
            "max_tokens": 16,
            "seed": seed,
            "preference_vector": dict.fromkeys(objectives, 1),
            "search": {"strategy": "best_of_n", "n": 3},
        }
    )


@pytest.fixture(scope="module")
def strict_reward_dir(tiny_reward_model_dir, tmp_path_factory):
    return with_chat_template(tiny_reward_model_dir, ALTERNATING_ROLES, tmp_path_factory.mktemp("strict-reward"))


@pytest.fixture(scope="module")
def strict_replica(engine, strict_reward_dir, loop_thread):
    """A model replica (without Ray) whose catalog holds the strict reward model and the built-ins; a wide
    batch window so concurrent requests' scoring is merged."""
    config = RewardsConfig(
        judge=False, batch_window_ms=300, models=[{"path": str(strict_reward_dir), "name": "strict", "device": "cpu"}]
    )
    catalog = build_catalog(config, tokenizer=engine.tokenizer, engine=engine)
    server = AlignerServer.sync_init({}, aligner=Aligner(engine, catalog))
    loop_thread.run(server.start())
    return server


def test_a_refused_conversation_is_a_400_and_the_requests_beside_it_are_answered(strict_replica, run):
    """Failed before this fix: the refused conversation's TemplateError failed every request merged into
    its reward batch (500 for all)."""
    passes = []
    strict_replica.catalog.add_batch_observer(lambda model, requests, *_: passes.append((model, requests)))
    objectives = ["helpsteer-helpfulness", "verbosity"]

    async def together():
        return await asyncio.gather(
            *(strict_replica.generate(ranked(GOOD, objectives, seed)) for seed in (1, 2)),
            strict_replica.generate(ranked(REPEATED_USER, objectives, 3)),
        )

    first, second, refused = run(together())
    assert refused.response is None and isinstance(refused.error, ErrorInfo)
    assert (refused.error.code, refused.error.field) == ("invalid_argument", "messages")
    assert http_status(refused.error.code) == 400
    assert (
        refused.error.message
        == f"messages: the reward model 'strict''s chat template refuses this conversation: {REFUSAL}"
    )
    for result in (first, second):
        response = result.unwrap()
        assert set(response.scores) == set(objectives) and response.usage.candidates == 3
    # Each good request scored its candidates once on the strict model; the refused one never reached it.
    assert sum(requests for model, requests in passes if model == "strict") == 2


def test_a_refused_conversation_is_refused_only_by_the_models_that_read_it(strict_replica, run):
    # verbosity reads only the responses: the strict template is not asked, the conversation is served.
    response = run(strict_replica.generate(ranked(REPEATED_USER, ["verbosity"], 4))).unwrap()
    assert set(response.scores) == {"verbosity"}


@pytest.fixture(scope="module")
def strict_policy_replica(engine, model_dir, tmp_path_factory, loop_thread):
    """The shared vLLM engine with its prompts rendered by a template that refuses non-alternating roles
    (a second `Engine` over the same running vLLM: only the tokenizer differs, and it is never shut down)."""
    tokenizer_dir = with_chat_template(
        model_dir, ALTERNATING_ROLES, tmp_path_factory.mktemp("strict-policy"), tokenizer_only=True
    )
    strict = Engine(engine._llm, engine.config, tokenizer_dir, engine.scheduler, engine.cores)
    server = AlignerServer.sync_init(
        {}, aligner=Aligner(strict, build_catalog(RewardsConfig(judge=False), tokenizer=strict.tokenizer))
    )
    loop_thread.run(server.start())
    return server


@pytest.mark.parametrize("stream", [False, True], ids=["generate", "stream"])
def test_a_conversation_the_policy_template_refuses_is_a_400_naming_messages(strict_policy_replica, run, stream):
    """Failed before this fix: the policy template's TemplateError was a 500 `internal`."""
    request = AlignRequest.parse({"messages": REPEATED_USER, "max_tokens": 8, "stream": stream})
    if stream:

        async def items():
            return [item async for item in strict_policy_replica.stream(request)]

        (error,) = run(items())  # refused in the first phase: no acknowledgement, no event
    else:
        error = run(strict_policy_replica.generate(request)).error
    assert isinstance(error, ErrorInfo) and (error.code, error.field) == ("invalid_argument", "messages")
    assert http_status(error.code) == 400
    assert error.message == f"messages: the policy model's chat template refuses this conversation: {REFUSAL}"
    assert strict_policy_replica.engine.unfinished_requests() == 0


def test_the_policy_template_that_refuses_some_conversations_serves_the_others(strict_policy_replica, run):
    request = AlignRequest.parse({"messages": GOOD, "max_tokens": 8, "temperature": 0})
    response = run(strict_policy_replica.generate(request)).unwrap()
    assert response.text and response.usage.generated_tokens > 0
