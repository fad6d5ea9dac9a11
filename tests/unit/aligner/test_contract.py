import math

import pytest

from aligner.contract import AlignRequest, AlignResponse, SearchLimits, Usage
from aligner.errors import InvalidRequest


def parse(**fields):
    return AlignRequest.parse({"prompt": "hi", **fields})


def field_of(**fields) -> tuple[str, str]:
    with pytest.raises(InvalidRequest) as err:
        AlignRequest.parse(fields)
    return err.value.field, err.value.message


def test_defaults_and_prompt_shorthand():
    request = parse()
    assert request.search.strategy == "sample"
    assert [m.model_dump() for m in request.conversation()] == [{"role": "user", "content": "hi"}]


def test_preference_vector_is_normalised_to_unit_length():
    request = parse(preference_vector={"helpfulness": 3, "verbosity": -4})
    assert request.preference_vector == pytest.approx({"helpfulness": 0.6, "verbosity": -0.8})
    assert math.isclose(sum(w * w for w in request.preference_vector.values()), 1.0)


def test_stop_accepts_a_single_string():
    assert parse(stop="\n\n").stop == ["\n\n"]


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"messages": []}, "messages", "empty"),
        ({"prompt": "hi", "messages": [{"role": "user", "content": "x"}]}, "messages", "exactly one"),
        ({}, "messages", "exactly one"),
        ({"prompt": "   "}, "prompt", "empty"),
        ({"messages": [{"role": "system", "content": "s"}]}, "messages", "user message"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role", "'system', 'user' or 'assistant'"),
        (
            {"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "s"}]},
            "messages[1].role",
            "only at the start",
        ),
        ({"prompt": "hi", "search": {"strategy": "beam_search"}}, "search.strategy", "allowed: sample"),
        ({"prompt": "hi", "preference_vector": {"helpfulness": float("nan")}}, "preference_vector", "finite"),
        ({"prompt": "hi", "preference_vector": {"helpfulness": float("inf")}}, "preference_vector", "finite"),
        ({"prompt": "hi", "preference_vector": {"a": 0.0, "b": 0.0}}, "preference_vector", "all weights are zero"),
        ({"prompt": "hi", "preference_vector": {}}, "preference_vector", "at least one"),
        ({"prompt": "hi", "preference_vector": {"bad name!": 1.0}}, "preference_vector", "must match"),
        ({"prompt": "hi", "max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ({"prompt": "hi", "max_tokens": -5}, "max_tokens", "greater than or equal to 1"),
        ({"prompt": "hi", "temperature": -0.1}, "temperature", "greater than or equal to 0"),
        ({"prompt": "hi", "top_p": 0}, "top_p", "greater than 0"),
        ({"prompt": "hi", "seed": -1}, "seed", "greater than or equal to 0"),
        ({"prompt": "hi", "stop": [""]}, "stop[0]", "non-empty"),
        ({"prompt": "hi", "tempurature": 1.0}, "tempurature", "unknown field"),
    ],
)
def test_bad_input_names_the_field(fields, field, words):
    got_field, message = field_of(**fields)
    assert got_field == field
    assert words in message
    assert message.startswith(f"{field}:")


def test_response_round_trips_through_json():
    response = AlignResponse(
        id="x",
        model="m",
        text="hello",
        finish_reason="stop",
        usage=Usage(prompt_tokens=3, generated_tokens=2, wall_time_s=0.1),
    )
    assert AlignResponse.model_validate_json(response.model_dump_json()) == response


RANKED = {"prompt": "hi", "preference_vector": {"relevance": 1}}


@pytest.mark.parametrize(
    ("search", "field", "words"),
    [
        ({"strategy": "beam", "beam_width": 17}, "search.beam_width", "configured maximum is 16"),
        ({"strategy": "beam", "expansions": 99}, "search.expansions", "configured maximum is 16"),
        ({"strategy": "best_of_n", "n": 65}, "search.n", "configured maximum is 64"),
        ({"strategy": "beam", "chunk_tokens": 0}, "search.chunk_tokens", "greater than or equal to 1"),
        ({"strategy": "beam", "chunk_tokens": 513}, "search.chunk_tokens", "configured maximum is 512"),
        ({"strategy": "beam", "prune": 1.0}, "search.prune", "less than 1"),
        ({"strategy": "beam", "prune": -0.1}, "search.prune", "greater than or equal to 0"),
        ({"strategy": "rejection"}, "search.threshold", "needs a threshold"),
        ({"strategy": "rps", "spread": 120}, "search.spread", "less than or equal to 90"),
    ],
)
def test_search_parameters_outside_their_limits(search, field, words):
    with pytest.raises(InvalidRequest) as err:
        AlignRequest.parse({**RANKED, "search": search})
    assert err.value.field == field and words in err.value.message


def test_limits_are_configurable():
    with pytest.raises(InvalidRequest, match="search.beam_width: is 3 but the configured maximum is 2"):
        AlignRequest.parse(
            {**RANKED, "search": {"strategy": "beam", "beam_width": 3}}, limits=SearchLimits(beam_width=2)
        )


@pytest.mark.parametrize("strategy", ["best_of_n", "rejection", "beam", "rps"])
def test_ranked_strategies_need_a_direction(strategy):
    with pytest.raises(InvalidRequest) as err:
        search = {"strategy": strategy, **({"threshold": 0.5} if strategy == "rejection" else {})}
        AlignRequest.parse({"prompt": "hi", "search": search})
    assert err.value.field == "preference_vector"


def test_a_threshold_outside_rejection_names_the_threshold():
    with pytest.raises(InvalidRequest) as err:
        AlignRequest.parse({"prompt": "hi", "search": {"threshold": 0.5}})
    assert err.value.field == "search.threshold" and "rejection" in err.value.message


@pytest.mark.parametrize("budget", [{"max_candidate_tokens": 0}, {"max_reward_calls": -1}, {"deadline_ms": 0}])
def test_budget_limits_must_be_positive(budget):
    with pytest.raises(InvalidRequest) as err:
        AlignRequest.parse({"prompt": "hi", "budget": budget})
    assert err.value.field == f"budget.{next(iter(budget))}"
