"""The HTTP API on the real app: OpenAI client, native route, every strategy, streaming, errors."""

from __future__ import annotations

import json

import pytest

VECTOR = {"relevance": 1.0, "verbosity": -0.5}
QUESTION = "In one sentence, what is the capital of France?"


def sse_events(response) -> list[tuple[str | None, str]]:
    events, name = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            events.append((name, line[6:]))
            name = None
    return events


@pytest.fixture(scope="module")
def openai_client(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server.url}/v1", api_key=server.key, timeout=300, max_retries=0)


def test_openai_client_chat_completion(openai_client, server):
    completion = openai_client.chat.completions.create(
        model=server.model, messages=[{"role": "user", "content": QUESTION}], max_tokens=32, temperature=0, seed=1
    )
    assert completion.object == "chat.completion"
    assert "Paris" in completion.choices[0].message.content
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert completion.model_extra["alignment"]["strategy"] == "sample"


def test_openai_client_streams_chunks_that_add_up(openai_client, server):
    stream = openai_client.chat.completions.create(
        model=server.model,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=32,
        temperature=0,
        seed=1,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].model_extra["alignment"]["strategy"] == "sample"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    whole = openai_client.chat.completions.create(
        model=server.model, messages=[{"role": "user", "content": QUESTION}], max_tokens=32, temperature=0, seed=1
    )
    assert text == whole.choices[0].message.content


def test_preference_vector_and_best_of_n_change_the_chosen_response(openai_client, server):
    messages = [{"role": "user", "content": "Describe the sea."}]
    common = dict(model=server.model, messages=messages, max_tokens=48, temperature=1.0, seed=3)
    plain = openai_client.chat.completions.create(**common)
    steered = openai_client.chat.completions.create(
        **common,
        extra_body={
            "preference_vector": {"verbosity": -1.0},
            "search": {"strategy": "best_of_n", "n": 6},
            "return_candidates": True,
        },
    )
    alignment = steered.model_extra["alignment"]
    assert alignment["strategy"] == "best_of_n"
    assert set(alignment["scores"]) == {"verbosity"}
    candidates = alignment["candidates"]
    assert len(candidates) == 6 and alignment["usage"]["candidates"] == 6
    # The chosen response is the least verbose candidate, and not what plain sampling returned.
    assert steered.choices[0].message.content == candidates[0]["text"]
    assert alignment["scores"]["verbosity"] == min(c["scores"]["verbosity"] for c in candidates)
    assert steered.choices[0].message.content != plain.choices[0].message.content


STRATEGY_REQUESTS = {
    "sample": {},
    "best_of_n": {"search": {"strategy": "best_of_n", "n": 3}},
    "rejection": {"search": {"strategy": "rejection", "batch": 2, "threshold": 0.99, "max_rounds": 2}},
    "beam": {"search": {"strategy": "beam", "beam_width": 2, "expansions": 2, "chunk_tokens": 8}},
    "rps": {"search": {"strategy": "rps", "neighbors": 2, "n": 2}},
}


@pytest.mark.parametrize("strategy", list(STRATEGY_REQUESTS))
def test_native_generate_every_strategy_and_its_stream(server, strategy):
    body = {"prompt": QUESTION, "max_tokens": 24, "seed": 5, "temperature": 0.8, **STRATEGY_REQUESTS[strategy]}
    if strategy != "sample":
        body["preference_vector"] = VECTOR
    with server.client() as client:
        response = client.post("/v1/generate", json=body, headers=server.headers())
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["text"] and result["usage"]["generated_tokens"] > 0
        assert response.headers["x-aligner-replica"]
        if strategy != "sample":
            assert set(result["scores"]) == set(VECTOR)
        with client.stream("POST", "/v1/generate", json={**body, "stream": True}, headers=server.headers()) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = sse_events(stream)
    names = [name for name, _ in events]
    assert names[-1] == "done" and set(names[:-1]) <= {"delta", "chunk"}
    payloads = [json.loads(data) for _, data in events]
    final = payloads[-1]["response"]
    assert "".join(p["text"] for p in payloads[:-1]) == final["text"]
    if strategy == "beam":
        assert any(name == "chunk" for name in names)
        assert all("scores" in p for p in payloads[:-1] if p["type"] == "chunk")


def test_models_and_objectives(server):
    with server.client() as client:
        models = client.get("/v1/models", headers=server.headers()).json()
        objectives = client.get("/v1/objectives", headers=server.headers()).json()["objectives"]
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
    assert [m["id"] for m in models["data"]] == [server.model]
    names = {o["name"] for o in objectives}
    assert {
        "relevance",
        "verbosity",
        "readability",
        "harmlessness",
        "positivity",
        "helpfulness",
        "policy_compliance",
        "topic_safety",
    } <= names
    assert all({"low", "high", "description"} <= set(o) for o in objectives)
    assert ready.status_code == 200 and ready.json()["ready"] is True


BAD_BODIES = [
    ("/v1/generate", b"{not json", "body"),
    ("/v1/generate", b"[1, 2]", "body"),
    ("/v1/generate", b'{"prompt": "hi", "max_tokens": "many"}', "max_tokens"),
    ("/v1/generate", b'{"prompt": "hi", "bogus": 1}', "bogus"),
    ("/v1/generate", b'{"prompt": "hi", "max_tokens": 100000}', "max_tokens"),
    (
        "/v1/generate",
        b'{"prompt": "hi", "preference_vector": {"nope": 1}, "search": {"strategy": "best_of_n"}}',
        "preference_vector",
    ),
    ("/v1/generate", b'{"prompt": "hi", "search": {"strategy": "magic"}}', "search.strategy"),
    ("/v1/generate", b'{"prompt": "hi \\ud800"}', "body"),
    ("/v1/chat/completions", b'{"model": "M", "messages": [{"role": "user", "content": "hi"}], "tools": []}', "tools"),
    ("/v1/chat/completions", b'{"model": "M", "messages": [{"role": "user", "content": "hi"}], "n": 2}', "n"),
    (
        "/v1/chat/completions",
        b'{"model": "M", "messages": [{"role": "user", "content": "hi"}], "logprobs": true}',
        "logprobs",
    ),
    (
        "/v1/chat/completions",
        b'{"model": "M", "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}}',
        "response_format",
    ),
    ("/v1/chat/completions", b'{"model": "M", "messages": [{"role": "tool", "content": "hi"}]}', "messages[0].role"),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "hi"}]}', "model"),
]


@pytest.mark.parametrize(("route", "raw", "field"), BAD_BODIES)
def test_bad_input_gets_a_4xx_naming_the_field(server, route, raw, field):
    raw = raw.replace(b'"M"', json.dumps(server.model).encode())
    with server.client() as client:
        response = client.post(route, content=raw, headers={**server.headers(), "content-type": "application/json"})
        assert 400 <= response.status_code < 500, response.text
        error = response.json()["error"]
        assert (error["param"] if route.endswith("completions") else error["field"]) == field
        assert client.get("/healthz").status_code == 200


def test_unknown_model_is_404_in_openai_format(server):
    with server.client() as client:
        response = client.post(
            "/v1/chat/completions",
            headers=server.headers(),
            json={"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert response.status_code == 404
    assert response.json()["error"]["param"] is None and response.json()["error"]["code"] == "not_found"


def test_oversize_body_is_413(server):
    huge = json.dumps({"prompt": "x" * (2 << 20)})
    with server.client() as client:
        response = client.post(
            "/v1/generate", content=huge, headers={**server.headers(), "content-type": "application/json"}
        )
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
        assert client.get("/healthz").status_code == 200


def test_prompt_too_long_is_400_before_any_stream(server):
    body = {"prompt": "word " * 1500, "max_tokens": 16, "stream": True}
    with server.client() as client:
        response = client.post("/v1/generate", json=body, headers=server.headers())
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "prompt_too_long"


def test_openai_null_fields_mean_unset(server):
    body = {
        "model": server.model,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,
        "temperature": None,
        "top_p": None,
        "seed": None,
        "stop": None,
        "preference_vector": None,
        "search": None,
        "n": None,
        "logprobs": None,
        "user": None,
        "stream_options": None,
    }
    with server.client() as client:
        response = client.post("/v1/chat/completions", json=body, headers=server.headers())
    assert response.status_code == 200, response.text
    assert response.json()["alignment"]["strategy"] == "sample"
