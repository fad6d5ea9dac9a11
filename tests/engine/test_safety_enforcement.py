"""A tenant's safety config enforced on the real engine: passed, refused, flagged, resampled, streamed."""

import pytest

from aligner.contract import AlignRequest
from aligner.errors import InvalidRequest
from aligner.safety.config import SafetyConfig

# Built-in verbosity is 1 - exp(-tokens/128): below 0.999 for any answer of these lengths.
UNREACHABLE = {"verbosity": 0.999}
REFUSAL = "Sorry, this service cannot answer that."


def parse(**fields):
    return AlignRequest.parse({"prompt": "Name one fruit.", "seed": 7, "max_tokens": 16, "temperature": 1.0, **fields})


def config(**fields):
    return SafetyConfig(text="Only talk about food.", refusal_message=REFUSAL, **fields)


def test_a_response_that_meets_the_thresholds_passes_with_its_scores(aligner, run):
    response = run(
        aligner.generate(
            parse(preference_vector={"relevance": 1.0}, search={"strategy": "best_of_n", "n": 3}),
            safety=config(thresholds={"harmlessness": 0.0}),
        )
    )
    assert response.safety.verdict == "passed" and response.text != REFUSAL
    assert set(response.safety.scores) == {"harmlessness"} and response.scores["harmlessness"] >= 0.0


def test_when_nothing_passes_the_tenants_refusal_is_returned_and_no_refused_text_leaks(aligner, run):
    response = run(aligner.generate(parse(return_candidates=True), safety=config(thresholds=UNREACHABLE)))
    assert response.text == REFUSAL and response.finish_reason == "content_filter"
    assert response.safety.verdict == "refused" and response.safety.scores is None
    assert response.usage.completion_tokens == 0 and response.usage.generated_tokens > 0
    assert response.candidates == []  # the refused candidate is not shown through return_candidates


def test_flag_returns_the_best_response_marked_flagged(aligner, run):
    response = run(aligner.generate(parse(), safety=config(thresholds=UNREACHABLE, action="flag")))
    assert response.text and response.text != REFUSAL and response.finish_reason != "content_filter"
    assert response.safety.verdict == "flagged" and response.safety.scores["verbosity"] < 0.999


def test_resample_draws_more_candidates_then_refuses(aligner, run):
    response = run(aligner.generate(parse(), safety=config(thresholds=UNREACHABLE, action="resample", max_resamples=3)))
    assert response.safety.verdict == "refused" and response.text == REFUSAL
    assert response.usage.candidates == 1 + 3 and response.usage.engine_requests == 2


def test_resample_returns_a_resampled_candidate_that_passes(aligner, run):
    for seed in range(7, 12):
        first = run(aligner.generate(parse(seed=seed, max_tokens=40), safety=config(thresholds={"verbosity": 0.0})))
        if first.usage.completion_tokens < 40:  # a short first answer: longer ones can pass a higher bar
            break
    bar = first.safety.scores["verbosity"] + 1e-6
    response = run(
        aligner.generate(
            parse(seed=seed, max_tokens=40),
            safety=config(thresholds={"verbosity": bar}, action="resample", max_resamples=8),
        )
    )
    assert response.safety.verdict == "resampled", (first.text, response.text)
    assert response.safety.scores["verbosity"] >= bar and response.text != first.text


def test_streaming_under_an_enforcing_config_sends_nothing_before_the_verdict(aligner, run):
    async def collect(request, safety):
        return [e async for e in aligner.stream(request, safety=safety)]

    refused = run(collect(parse(stream=True), config(thresholds=UNREACHABLE)))
    assert [(e.kind, e.text) for e in refused[:-1]] == [("delta", REFUSAL)]
    assert refused[-1].response.finish_reason == "content_filter"

    passed = run(collect(parse(stream=True, max_tokens=24), config(thresholds={"harmlessness": 0.0})))
    texts = [e.text for e in passed if e.kind == "delta"]
    assert len(texts) == 1 and texts[0] == passed[-1].response.text  # released whole, once it passed


def test_policy_compliance_judges_against_the_tenants_config(aligner, run):
    strict = config(thresholds={"policy_compliance": 0.0}, action="flag")
    response = run(
        aligner.generate(
            parse(preference_vector={"policy_compliance": 1.0}, search={"strategy": "best_of_n", "n": 2}), safety=strict
        )
    )
    assert 0.0 <= response.safety.scores["policy_compliance"] <= 1.0 and response.safety.verdict == "passed"
    assert response.usage.engine_requests == 1 + 2  # the candidates, then one judge prefill each


def test_policy_compliance_without_a_config_is_refused_up_front(aligner, run):
    with pytest.raises(InvalidRequest) as err:
        run(
            aligner.generate(
                parse(preference_vector={"policy_compliance": 1.0}, search={"strategy": "best_of_n", "n": 2})
            )
        )
    assert err.value.field == "preference_vector" and "safety config" in err.value.message


def test_a_question_on_a_disallowed_topic_is_refused_through_topic_safety(aligner, run):
    kids = config(thresholds={"topic_safety": 0.5}, disallowed=["gambling, betting and casinos"])
    asked = run(aligner.generate(parse(prompt="Which casino game is best for betting money?"), safety=kids))
    allowed = run(aligner.generate(parse(prompt="How do I water tomato plants?"), safety=kids))
    assert asked.safety.verdict == "refused" and asked.text == REFUSAL
    assert allowed.safety.verdict == "passed" and allowed.safety.scores["topic_safety"] >= 0.5


def test_a_requests_own_constraint_never_outranks_the_tenants_threshold(aligner, run):
    """Issue 19, item 1, on the real engine and objectives. Failed before this fix: every candidate misses
    the request's unreachable constraint, so the one the vector prefers (the longest) was chosen, although
    it fails the tenant's threshold while another passes: refused under `refuse`."""
    wants_long = {"preference_vector": {"verbosity": 1.0}, "constraints": {"verbosity": {"min": 0.999}}}
    for seed in range(7, 15):
        request = parse(seed=seed, max_tokens=32, search={"strategy": "best_of_n", "n": 4}, **wants_long)
        probe = run(
            aligner.generate(
                request.model_copy(update={"return_candidates": True}),
                safety=config(thresholds={"readability": 0.0}, action="flag"),
            )
        )
        longest, *others = probe.candidates  # ranked: the most verbose first (none meets the constraint)
        readable = max(others, key=lambda c: c.scores["readability"])
        if readable.scores["readability"] > longest.scores["readability"]:
            break
    else:
        pytest.fail("no seed gave a shorter candidate more readable than the longest: the case cannot be built")
    bar = readable.scores["readability"]
    response = run(aligner.generate(request, safety=config(thresholds={"readability": bar}, action="refuse")))
    assert response.safety.verdict == "passed" and response.text == readable.text
    assert response.feasible is False  # the request's own constraint is not met, and it says so
