"""What a careless client or a hostile tenant sends: every input parses within the limits or names a field."""

from __future__ import annotations

import json
import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aligner.contract import DEFAULT_LIMITS, MAX_STOP_CHARS, AlignRequest, SearchLimits
from aligner.errors import InvalidRequest
from aligner.search import registry

VECTOR = {"relevance": 1.0, "verbosity": -0.5}


def refused(data, limits=DEFAULT_LIMITS) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as err:
        AlignRequest.parse(data, limits)
    return err.value


# --- vectors normalise stably (defect: 1e200 overflowed to a zero vector, 1e-200 underflowed) ---


@pytest.mark.parametrize("scale", [1e200, 1e-200, 1e308, 5e-324])
def test_huge_and_tiny_vectors_normalise_to_the_same_direction(scale):
    request = AlignRequest.parse({"prompt": "hi", "preference_vector": {"a": scale, "b": scale}})
    assert request.preference_vector == pytest.approx({"a": math.sqrt(0.5), "b": math.sqrt(0.5)})


@given(
    st.dictionaries(
        st.from_regex(r"[a-z]{1,8}", fullmatch=True),
        st.floats(allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=8,
    )
)
def test_any_finite_vector_is_a_unit_vector_or_refused_as_all_zero(weights):
    try:
        request = AlignRequest.parse({"prompt": "hi", "preference_vector": weights})
    except InvalidRequest as err:
        assert err.field == "preference_vector" and all(w == 0 for w in weights.values())
        return
    assert math.hypot(*request.preference_vector.values()) == pytest.approx(1.0)
    for name, w in weights.items():
        assert math.copysign(1, request.preference_vector[name]) == math.copysign(1, w) or w == 0


# --- empty, oversized and undecodable text ---


@pytest.mark.parametrize(
    "data, field",
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   \n\t"}, "prompt"),
        ({"messages": [{"role": "user", "content": ""}]}, "messages[0].content"),
        (
            {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "  "}]},
            "messages[1].content",
        ),
    ],
)
def test_empty_or_blank_user_text_is_refused(data, field):
    assert refused(data).field == field


@pytest.mark.parametrize(
    "data, field",
    [
        ({"prompt": "hi\ud800"}, "prompt"),
        ({"messages": [{"role": "user", "content": "a\udfffb"}]}, "messages[0].content"),
        ({"prompt": "hi", "preferences": "\ud83d"}, "preferences"),
        ({"prompt": "hi", "stop": ["x\ud800"]}, "stop[0]"),
    ],
)
def test_unpaired_surrogates_are_refused_before_tokenization(data, field):
    err = refused(data)
    assert err.field == field and "surrogate" in err.message


def test_a_paired_surrogate_from_json_is_ordinary_text():
    request = AlignRequest.parse(json.loads('{"prompt": "hi \\ud83d\\ude00"}'))
    assert request.prompt == "hi \U0001f600"


def test_an_oversized_prompt_is_refused_by_its_length_before_anything_scans_it():
    huge = "a" * 5_000_000 + "\ud800"  # the surrogate is never reached: the size check comes first
    started = time.perf_counter()
    err = refused({"prompt": huge})
    assert err.field == "prompt" and "characters" in err.message
    assert time.perf_counter() - started < 1.0
    err = refused({"messages": [{"role": "user", "content": "x" * 150_000}] * 2})
    assert err.field == "messages" and "200000" in err.message


def test_the_text_limit_is_configurable():
    assert refused({"prompt": "x" * 11}, SearchLimits(max_input_chars=10)).field == "prompt"
    assert AlignRequest.parse({"prompt": "x" * 10}, SearchLimits(max_input_chars=10)).prompt


@pytest.mark.parametrize(
    "stop, field", [(["x" * (MAX_STOP_CHARS + 1)], "stop[0]"), (["ok", "y" * 1_000_000], "stop[1]")]
)
def test_long_stop_strings_are_refused(stop, field):
    err = refused({"prompt": "hi", "stop": stop})
    assert err.field == field and str(MAX_STOP_CHARS) in err.message


def test_too_many_messages_or_objectives_are_refused():
    assert refused({"messages": [{"role": "user", "content": "hi"}] * 1025}).field == "messages"
    many = {f"o{i}": 1.0 for i in range(65)}
    assert refused({"prompt": "hi", "preference_vector": many}).field == "preference_vector"


# --- integers have upper bounds, types are strict ---


@pytest.mark.parametrize(
    "data, field",
    [
        ({"prompt": "hi", "budget": {"deadline_ms": 10**400}}, "budget.deadline_ms"),
        ({"prompt": "hi", "budget": {"deadline_ms": 3_600_001}}, "budget.deadline_ms"),
        ({"prompt": "hi", "budget": {"max_candidate_tokens": 2**31}}, "budget.max_candidate_tokens"),
        ({"prompt": "hi", "budget": {"max_reward_calls": 2**64}}, "budget.max_reward_calls"),
        ({"prompt": "hi", "seed": 2**63}, "seed"),
        ({"prompt": "hi", "max_tokens": 10**30}, "max_tokens"),
        ({"prompt": "hi", "preference_vector": VECTOR, "search": {"strategy": "best_of_n", "n": 10**400}}, "search.n"),
    ],
)
def test_huge_integers_are_refused_with_a_field(data, field):
    assert refused(data).field == field


@pytest.mark.parametrize(
    "data, field",
    [
        ({"prompt": "hi", "seed": "5"}, "seed"),
        ({"prompt": "hi", "seed": True}, "seed"),
        ({"prompt": "hi", "max_tokens": True}, "max_tokens"),
        ({"prompt": "hi", "max_tokens": 8.0}, "max_tokens"),
        ({"prompt": "hi", "temperature": "0.5"}, "temperature"),
        ({"prompt": "hi", "stream": "yes"}, "stream"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": "hi", "preference_vector": {"relevance": "1"}}, "preference_vector.relevance"),
        ({"prompt": "hi", "budget": {"deadline_ms": "100"}}, "budget.deadline_ms"),
    ],
)
def test_types_are_not_coerced(data, field):
    assert refused(data).field == field


def test_an_integer_is_a_valid_float():
    assert AlignRequest.parse({"prompt": "hi", "temperature": 1}).temperature == 1.0


# --- combinations that cannot do what was asked ---


@pytest.mark.parametrize(
    "data, field, words",
    [
        (
            {"prompt": "hi", "preference_vector": VECTOR, "search": {"strategy": "best_of_n", "threshold": 0.5}},
            "search.threshold",
            "rejection",
        ),
        (
            {"prompt": "hi", "preference_vector": VECTOR, "search": {"strategy": "best_of_n", "beam_width": 4}},
            "search.beam_width",
            "beam",
        ),
        ({"prompt": "hi", "search": {"n": 4}}, "search.n", "best_of_n"),
        ({"prompt": "hi", "preference_vector": VECTOR, "references": {"relevance": 0.5}}, "references", "'and'"),
        (
            {"prompt": "hi", "preference_vector": VECTOR, "combination": "and", "references": {"harmlessness": 0.5}},
            "references.harmlessness",
            "names no objective",
        ),
        (
            {"prompt": "hi", "preference_vector": VECTOR, "temperature": 0, "search": {"strategy": "best_of_n"}},
            "temperature",
            "same",
        ),
    ],
)
def test_combinations_that_would_be_ignored_are_refused(data, field, words):
    err = refused(data)
    assert err.field == field and words in err.message


def test_references_for_a_constraint_objective_are_accepted():
    request = AlignRequest.parse(
        {
            "prompt": "hi",
            "preference_vector": VECTOR,
            "combination": "and",
            "constraints": {"harmlessness": {"min": 0.5}},
            "references": {"harmlessness": 0.5},
        }
    )
    assert request.references == {"harmlessness": 0.5}


# --- total work per request is capped ---


def test_total_candidates_are_capped():
    rps = {"strategy": "rps", "n": 64, "neighbors": 16}  # 1024 candidates from one request
    err = refused({"prompt": "hi", "preference_vector": VECTOR, "search": rps})
    assert err.field == "search" and "1024 candidates" in err.message and "max_candidates" in err.message
    one_objective = AlignRequest.parse({"prompt": "hi", "preference_vector": {"relevance": 1}, "search": rps})
    assert one_objective.search.cost(one_objective.shape()).candidates == 64  # no neighbours: n only


def test_total_tokens_are_capped_unless_the_budget_bounds_them():
    data = {
        "prompt": "hi",
        "preference_vector": VECTOR,
        "max_tokens": 4096,
        "search": {"strategy": "best_of_n", "n": 64},
    }  # 262144 tokens: at the limit
    AlignRequest.parse(data)
    err = refused(data, SearchLimits(max_search_tokens=100_000))
    assert err.field == "search" and "max_search_tokens" in err.message
    AlignRequest.parse({**data, "budget": {"max_candidate_tokens": 100_000}}, SearchLimits(max_search_tokens=100_000))


# --- property: anything either parses within every limit or names a field ---

JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
FIELDS = [
    "prompt",
    "messages",
    "preferences",
    "preference_vector",
    "combination",
    "references",
    "constraints",
    "search",
    "budget",
    "return_candidates",
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "stream",
]
SEARCH_FIELDS = [
    "strategy",
    "n",
    "batch",
    "threshold",
    "max_rounds",
    "beam_width",
    "expansions",
    "chunk_tokens",
    "prune",
    "neighbors",
    "spread",
]


def requests():
    vector = st.dictionaries(
        st.sampled_from(["relevance", "verbosity", "harmlessness", "bad name"]),
        st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-3, 3)),
        max_size=3,
    )
    search = st.fixed_dictionaries(
        {},
        optional={
            "strategy": st.sampled_from([*registry.names(), "nope"]),
            **{name: st.one_of(st.integers(-2, 100), JSON_LEAF) for name in SEARCH_FIELDS[1:]},
        },
    )
    message = st.fixed_dictionaries(
        {
            "role": st.sampled_from(["system", "user", "assistant", "tool"]),
            "content": st.one_of(st.text(max_size=30), JSON_LEAF),
        }
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "prompt": st.one_of(st.text(max_size=40), JSON_LEAF),
            "messages": st.lists(message, max_size=4),
            "preferences": st.one_of(st.text(max_size=20), JSON_LEAF),
            "preference_vector": st.one_of(vector, JSON_LEAF),
            "combination": st.sampled_from(["linear", "and", "or"]),
            "references": st.one_of(vector, JSON_LEAF),
            "search": st.one_of(search, JSON_LEAF),
            "budget": st.one_of(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "deadline_ms": st.integers(-5, 10**12),
                        "max_candidate_tokens": st.integers(-5, 10**12),
                        "max_reward_calls": st.integers(-5, 10**12),
                    },
                ),
                JSON_LEAF,
            ),
            "max_tokens": st.one_of(st.integers(-5, 10**6), JSON_LEAF),
            "temperature": JSON_LEAF,
            "seed": st.one_of(st.integers(-5, 2**64), JSON_LEAF),
            "stop": st.one_of(st.lists(st.text(max_size=200), max_size=10), JSON_LEAF),
        },
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_any_input_parses_within_the_limits_or_names_a_field(data):
    limits = SearchLimits(
        max_candidates=64,
        max_search_tokens=20_000,
        max_input_chars=100,
        max_reward_calls=500,
        max_engine_requests=100,
        max_scoring_rounds=50,
    )
    try:
        request = AlignRequest.parse(data, limits)
    except InvalidRequest as err:
        top = err.field.split(".")[0].split("[")[0]
        assert top in FIELDS and err.message, (err.field, err.message)
        return
    assert request.max_tokens <= limits.max_tokens
    cost = request.search.cost(request.shape())
    assert cost.candidates <= limits.max_candidates
    assert cost.engine_requests <= limits.max_engine_requests
    budget_tokens, budget_calls = request.budget.max_candidate_tokens, request.budget.max_reward_calls
    assert min(cost.candidate_tokens, budget_tokens or cost.candidate_tokens) <= limits.max_search_tokens
    assert min(cost.reward_calls, budget_calls or cost.reward_calls) <= limits.max_reward_calls
    assert min(cost.scoring_rounds, budget_calls or cost.scoring_rounds) <= limits.max_scoring_rounds
    text = request.prompt if request.prompt is not None else "".join(m.content for m in request.messages)
    assert text.strip() and len(text) <= limits.max_input_chars
    text.encode("utf-8")  # no surrogates
    assert all(0 < len(s) <= MAX_STOP_CHARS for s in request.stop)
    if request.preference_vector is not None:
        assert math.hypot(*request.preference_vector.values()) == pytest.approx(1.0)
