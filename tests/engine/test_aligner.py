import pytest

from aligner.errors import PromptTooLong
from aligner.prompting import SAFETY_HEADING
from aligner.safety.config import SafetyConfig
from aligner.contract import AlignRequest

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
    assert system.role == "system" and system.content.startswith(f"{SAFETY_HEADING}\n{SAFETY}")
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
