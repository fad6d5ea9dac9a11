import gc
import time
from typing import get_args

import pytest

from aligner.contract import AlignRequest, AlignResponse
from aligner.core import FINISH_REASONS, Search
from aligner.errors import InvalidRequest, PromptTooLong
from aligner.events import Delta, Done
from aligner.prompting import OPERATOR_HEADING
from aligner.prompting_guard import MARKER_SHOWN
from aligner.safety.config import SafetyConfig

SAFETY = "Do not discuss weapons."


def test_generate_answers_and_accounts_usage(aligner, run):
    request = AlignRequest.parse({"prompt": "What is the capital of France?", "temperature": 0, "max_tokens": 48})
    response = run(aligner.generate(request))
    assert "Paris" in response.text
    assert response.finish_reason == "stop"
    assert response.usage.prompt_tokens == len(aligner.prepare(request).token_ids)
    assert 0 < response.usage.generated_tokens <= 48
    assert response.usage.wall_time_s > 0
    assert response.prompt is None


def test_return_prompt_shows_the_composed_conversation(aligner, run):
    request = AlignRequest.parse(
        {
            "messages": [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hi"}],
            "preferences": "concise",
            "max_tokens": 8,
            "return_prompt": True,
            "seed": 1,
        }
    )
    response = run(aligner.generate(request, safety=SafetyConfig(text=SAFETY)))
    system, user = response.prompt
    assert system.role == "system" and system.content.startswith(
        f"{OPERATOR_HEADING.format(marker=MARKER_SHOWN)}\n{SAFETY}"
    )
    assert system.content.index("concise") < system.content.index("Answer in French.")
    assert user.content == "Hi"


def test_same_request_and_seed_give_the_same_text(aligner, run):
    request = AlignRequest.parse({"prompt": "Tell me a joke.", "seed": 11, "temperature": 1.0, "max_tokens": 32})
    assert run(aligner.generate(request)).text == run(aligner.generate(request)).text


def test_stream_events_end_with_the_full_response(aligner, run):
    request = AlignRequest.parse({"prompt": "What is the capital of France?", "temperature": 0, "max_tokens": 48})

    async def collect():
        return [e async for e in aligner.stream(request)]

    events = run(collect())
    assert events[-1].kind == "done"
    deltas = "".join(e.text for e in events[:-1])
    assert deltas == events[-1].response.text == run(aligner.generate(request)).text
    assert events[-1].to_dict()["response"]["usage"]["generated_tokens"] == events[-1].response.usage.generated_tokens


def test_prompt_too_long_for_the_engine(aligner):
    request = AlignRequest.parse({"prompt": "word " * 2000, "max_tokens": 100})
    with pytest.raises(PromptTooLong, match="max_model_len 2048 - max_tokens 100"):
        aligner.prepare(request)


def test_start_refuses_an_unknown_objective_before_the_engine_is_asked(aligner, engine, run, monkeypatch):
    def no_engine_work(*args, **kwargs):
        raise AssertionError("phase 1 must not reach the engine")

    monkeypatch.setattr(engine, "generate", no_engine_work)
    monkeypatch.setattr(engine, "stream", no_engine_work)
    request = AlignRequest.parse({"prompt": "Hi", "preference_vector": {"wit": 1.0}, "max_tokens": 8})
    with pytest.raises(InvalidRequest, match="unknown objective 'wit'; valid objectives: ") as raised:
        run(aligner.start(request))
    assert raised.value.field == "preference_vector"

    async def events_of_stream():
        return [e async for e in aligner.stream(request)]

    with pytest.raises(InvalidRequest, match="unknown objective 'wit'"):
        run(events_of_stream())  # raised at the first step: no event comes before the error


def test_an_objective_that_reads_the_tenants_config_needs_one(aligner, engine, run, monkeypatch):
    assert aligner.catalog.needs_safety_config(["helpfulness", "topic_safety", "policy_compliance"]) == [
        "topic_safety",
        "policy_compliance",
    ]
    request = AlignRequest.parse({"prompt": "Hi", "constraints": {"policy_compliance": {"min": 0.5}}, "max_tokens": 8})
    with pytest.raises(
        InvalidRequest,
        match="policy_compliance judges against the tenant's safety config, and this request is served under none",
    ) as raised:
        run(aligner.start(request))
    assert raised.value.field == "constraints"
    # Under a config it is accepted; the search it returns has not started (nothing reaches the engine).
    monkeypatch.setattr(engine, "generate", lambda *a, **k: pytest.fail("the search started before it was asked"))
    search = run(aligner.start(request, safety=SafetyConfig(text=SAFETY)))
    assert isinstance(search, Search)


def test_events_are_typed_deltas_then_done_and_a_search_runs_once(aligner, run):
    request = AlignRequest.parse({"prompt": "What is the capital of France?", "temperature": 0, "max_tokens": 24})
    search = run(aligner.start(request))

    async def collect():
        return [e async for e in search.events()]

    events = run(collect())
    *deltas, done = events
    assert deltas and all(type(e) is Delta for e in deltas) and type(done) is Done
    assert "".join(e.text for e in deltas) == done.response.text
    assert deltas[0].to_dict() == {"type": "delta", "text": deltas[0].text}
    with pytest.raises(RuntimeError, match="runs once"):
        run(search.result())
    assert run(run(aligner.start(request)).result()).text == done.response.text


def test_a_caller_who_may_not_read_the_config_sees_a_placeholder(aligner, run):
    request = AlignRequest.parse(
        {
            "messages": [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hi"}],
            "max_tokens": 4,
            "return_prompt": True,
            "seed": 1,
        }
    )
    config = SafetyConfig(text=SAFETY)
    hidden = run(aligner.generate(request, safety=config, safety_version=7, reveal_safety=False))
    revealed = run(aligner.generate(request, safety=config, safety_version=7))
    placeholder = "[tenant safety config, version 7]"
    assert hidden.prompt[0].content.startswith(f"{OPERATOR_HEADING.format(marker=MARKER_SHOWN)}\n{placeholder}\n\n")
    assert SAFETY not in hidden.model_dump_json()
    # Exactly the revealed prompt with the text replaced; the engine read the real text in both.
    assert [m.content.replace(SAFETY, placeholder) for m in revealed.prompt] == [m.content for m in hidden.prompt]
    assert (
        hidden.usage.prompt_tokens
        == revealed.usage.prompt_tokens
        == len(aligner.prepare(request, safety=config, safety_version=7).token_ids)
    )
    assert hidden.safety.version == revealed.safety.version == 7
    assert run(aligner.generate(request, safety=config)).safety is None  # no store, no version (and no thresholds)


def test_closing_or_abandoning_the_events_cancels_the_search(aligner, run, engine):
    request = AlignRequest.parse(
        {"prompt": "Write a very long story about the sea.", "temperature": 1.0, "max_tokens": 1000, "seed": 3}
    )

    def drained():
        deadline = time.monotonic() + 10
        while engine.unfinished_requests() and time.monotonic() < deadline:
            time.sleep(0.05)
        return engine.unfinished_requests() == 0

    async def first_delta_then_close():
        events = (await aligner.start(request)).events()
        first = await anext(events)
        await events.aclose()
        return first

    assert type(run(first_delta_then_close())) is Delta
    assert drained()

    async def first_delta_then_drop():
        events = (await aligner.start(request)).events()
        first = await anext(events)
        assert engine.unfinished_requests() == 1
        del events  # never closed: the event loop finalises the generator, which cancels the search
        gc.collect()
        return first

    assert type(run(first_delta_then_drop())) is Delta
    assert drained()


def test_the_cores_finish_reasons_are_the_contracts():
    assert get_args(AlignResponse.model_fields["finish_reason"].annotation) == FINISH_REASONS
