"""Every search strategy on the real engine with the embedded objectives."""

import asyncio
import re
import statistics
import time

import pytest

from aligner.bench.search import measure
from aligner.contract import AlignRequest
from aligner.core import Aligner
from aligner.events import Chunk, Delta, Done
from aligner.prompting import ModelProfile
from aligner.search.base import DeadlineExceeded

QUESTION = "Give me one tip for learning to cook."


def request(strategy, **fields):
    search = {"strategy": strategy, **fields.pop("search", {})}
    data = {
        "prompt": QUESTION,
        "seed": 3,
        "temperature": 1.0,
        "max_tokens": 32,
        "preference_vector": {"relevance": 1, "verbosity": -0.5},
        "return_candidates": True,
        "search": search,
        **fields,
    }
    return AlignRequest.parse(data)


def test_best_of_n_usage_adds_up(aligner, run):
    response = run(aligner.generate(request("best_of_n", search={"n": 4})))
    usage = response.usage
    assert usage.engine_requests == 1 and usage.reward_calls == 4 and usage.rounds == 1
    assert usage.generated_tokens == sum(c.tokens for c in response.candidates)
    assert len(response.candidates) == 4 and response.text == response.candidates[0].text
    combined = [c.combined_score for c in response.candidates]
    assert combined == sorted(combined, reverse=True)
    assert set(usage.stage_seconds) == {"generate", "score", "select"} and usage.stopped_by is None


def test_rejection_stops_at_the_threshold_or_after_its_rounds(aligner, run):
    easy = run(aligner.generate(request("rejection", search={"batch": 2, "threshold": -10})))
    assert easy.threshold_met is True and easy.usage.rounds == 1 and easy.usage.reward_calls == 2
    hard = run(aligner.generate(request("rejection", search={"batch": 2, "threshold": 10, "max_rounds": 3})))
    assert hard.threshold_met is False and hard.usage.rounds == 3
    assert hard.usage.reward_calls == 6 and hard.usage.engine_requests == 3
    assert hard.usage.generated_tokens == sum(c.tokens for c in hard.candidates)
    assert hard.text == hard.candidates[0].text


def test_beam_builds_the_response_from_chunks(aligner, run):
    response = run(
        aligner.generate(request("beam", max_tokens=40, search={"beam_width": 2, "expansions": 2, "chunk_tokens": 8}))
    )
    usage = response.usage
    assert 1 <= usage.rounds <= 5
    assert usage.reward_calls <= usage.rounds * 4 and usage.engine_requests <= usage.rounds * 2
    assert len(response.candidates) <= 2 and response.text == response.candidates[0].text
    assert response.candidates[0].tokens <= 40 and response.text.strip()


def test_beam_stream_chunks_concatenate_to_the_final_text(aligner, run):
    req = request("beam", max_tokens=40, search={"beam_width": 2, "expansions": 3, "chunk_tokens": 8})

    async def collect():
        return [e async for e in aligner.stream(req)]

    events = run(collect())
    chunks = [e for e in events if e.kind == "chunk"]
    done = events[-1]
    assert done.kind == "done" and chunks
    assert all(type(e) is Chunk for e in events[:-1]) and type(done) is Done  # beam commits, it never samples
    assert "".join(c.text for c in chunks) == done.response.text
    assert all(c.scores is None or set(c.scores) == {"relevance", "verbosity"} for c in chunks)


def test_rps_samples_neighbours_and_picks_by_the_original_direction(aligner, run):
    response = run(aligner.generate(request("rps", search={"neighbors": 3, "n": 2, "spread": 20})))
    assert response.usage.engine_requests == 1 and response.usage.reward_calls == 6
    assert 1 <= len(response.candidates) <= 3  # the neighbour winners
    assert response.combined_score == max(c.combined_score for c in response.candidates)


@pytest.mark.parametrize("strategy", ["best_of_n", "rejection", "beam", "rps", "particle_filter"])
def test_candidate_token_budget_is_never_exceeded(aligner, run, strategy):
    search = {
        "best_of_n": {"n": 4},
        "rejection": {"threshold": 10},
        "beam": {"chunk_tokens": 8},
        "rps": {"neighbors": 2},
        "particle_filter": {"particles": 3, "chunk_tokens": 8},
    }
    response = run(aligner.generate(request(strategy, search=search[strategy], budget={"max_candidate_tokens": 40})))
    assert response.usage.candidate_tokens <= 40
    assert response.usage.stopped_by == "max_candidate_tokens"


@pytest.mark.parametrize("strategy", ["best_of_n", "rejection", "beam", "rps", "particle_filter"])
def test_reward_call_budget_is_never_exceeded(aligner, run, strategy):
    search = {
        "best_of_n": {"n": 6},
        "rejection": {"threshold": 10},
        "beam": {"chunk_tokens": 8},
        "rps": {"neighbors": 4},
        "particle_filter": {"particles": 4, "chunk_tokens": 8},
    }
    response = run(aligner.generate(request(strategy, search=search[strategy], budget={"max_reward_calls": 3})))
    assert 1 <= response.usage.reward_calls <= 3
    assert response.usage.stopped_by == "max_reward_calls"


def test_deadline_stops_a_long_beam_cleanly(aligner, run, engine):
    req = request(
        "beam",
        max_tokens=400,
        search={"beam_width": 2, "expansions": 2, "chunk_tokens": 4},
        budget={"deadline_ms": 4000},
    )
    started = time.monotonic()
    try:
        response = run(aligner.generate(req))
    except DeadlineExceeded:
        response = None
    assert time.monotonic() - started < 4 + 5  # the deadline plus scoring of the last step
    if response is not None:
        assert response.usage.stopped_by == "deadline_ms"
    assert engine.unfinished_requests() == 0


def test_same_request_and_seed_give_the_same_output(aligner, run):
    for strategy, search in [("best_of_n", {"n": 3}), ("beam", {"chunk_tokens": 8, "expansions": 2})]:
        req = request(strategy, search=search)
        first, second = run(aligner.generate(req)), run(aligner.generate(req))
        assert first.text == second.text and first.combined_score == second.combined_score


def assert_closing_after_the_first_chunk_aborts_every_engine_request(aligner, run, engine, req):
    """The stream of `req` closed after its first event, a chunk: no engine request is left running."""

    async def first_chunk_then_close():
        stream = aligner.stream(req)
        event = await anext(stream)
        await stream.aclose()
        return event

    assert run(first_chunk_then_close()).kind == "chunk"
    deadline = time.monotonic() + 10
    while engine.unfinished_requests() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.unfinished_requests() == 0


def test_closing_a_beam_stream_aborts_its_engine_requests(aligner, run, engine):
    req = request("beam", max_tokens=400, search={"beam_width": 3, "expansions": 3, "chunk_tokens": 8})

    assert_closing_after_the_first_chunk_aborts_every_engine_request(aligner, run, engine, req)


OPEN_PROMPTS = ["Tell me about the moon.", "How do plants grow?", "What is a computer?"]
SHORT_ANSWER_PROMPTS = ["What is 2 + 2?", "Name a primary color.", "What is the capital of Italy?"]


STRATEGIES = {"sample": {}, "best_of_n": {"n": 6}, "beam": {"beam_width": 2, "expansions": 3, "chunk_tokens": 16}}


def means_over_prompts(aligner, run, vector, measure, prompts=OPEN_PROMPTS) -> dict[str, float]:
    """Each strategy's mean `measure` over the prompts (seeded), every request sent at once: the engine
    batches them, a third of the time one after the other took."""
    requests = [
        AlignRequest.parse(
            {
                "prompt": prompt,
                "seed": seed,
                "temperature": 1.0,
                "max_tokens": 64,
                "preference_vector": vector,
                "search": {"strategy": strategy, **params},
            }
        )
        for strategy, params in STRATEGIES.items()
        for seed, prompt in enumerate(prompts)
    ]

    async def answer_all():
        return await asyncio.gather(*(aligner.generate(r) for r in requests))

    values = [measure(response) for response in run(answer_all())]
    return {s: statistics.mean(values[i * len(prompts) : (i + 1) * len(prompts)]) for i, s in enumerate(STRATEGIES)}


def test_direction_matters_for_verbosity(aligner, run):
    tokens = lambda r: len(aligner.engine.tokenizer(r.text)["input_ids"])  # noqa: E731
    means = means_over_prompts(aligner, run, {"verbosity": -1}, tokens, SHORT_ANSWER_PROMPTS)
    assert means["best_of_n"] < means["sample"] and means["beam"] < means["sample"], means


def test_direction_matters_for_relevance(aligner, run):
    means = means_over_prompts(aligner, run, {"relevance": 1}, lambda r: r.scores["relevance"])
    assert means["best_of_n"] > means["sample"] and means["beam"] > means["sample"], means


def test_beam_steps_reuse_the_cached_prompt_and_prefix(aligner, run, engine):
    before_queries, before_hits = engine.scheduler.prefix_cache_queries, engine.scheduler.prefix_cache_hits
    run(aligner.generate(request("beam", max_tokens=48, search={"beam_width": 2, "expansions": 2, "chunk_tokens": 8})))
    queries = engine.scheduler.prefix_cache_queries - before_queries
    hits = engine.scheduler.prefix_cache_hits - before_hits
    assert queries > 0 and hits / queries > 0.3


def test_ranked_strategies_stream_their_final_text(aligner, run):
    req = request("best_of_n", search={"n": 2})

    async def collect():
        return [e async for e in aligner.stream(req)]

    events = run(collect())
    assert [e.kind for e in events] == ["delta", "done"]
    assert [type(e) for e in events] == [Delta, Done]  # known only at the end: sent whole, as one Delta
    assert events[0].text == events[1].response.text and events[0].scores == events[1].response.scores


def test_rps_renders_each_neighbour_for_models_that_read_directions(engine, catalog, run):
    dpa = Aligner(engine, catalog, profile=ModelProfile(reads_directions=True))
    req = request("rps", return_prompt=True, search={"neighbors": 3, "n": 1, "spread": 30})
    response = run(dpa.generate(req))
    assert response.usage.engine_requests == 3 and response.usage.reward_calls == 3
    assert "maximize weighted rating = relevance*89 + verbosity*-45" in response.prompt[0].content
    assert response.combined_score == max(c.combined_score for c in response.candidates)


def test_beam_prune_narrows_the_beam_each_step(aligner, run):
    req = request("beam", max_tokens=48, search={"beam_width": 4, "expansions": 2, "chunk_tokens": 8, "prune": 0.5})
    response = run(aligner.generate(req))
    assert response.usage.rounds >= 3  # widths 4 -> 2 -> 1
    assert len(response.candidates) == 1
    assert response.usage.reward_calls <= 2 + 4 * 2 + 2 * 2 + (response.usage.rounds - 3) * 2


def test_the_search_bench_measures_a_strategy_on_the_shared_engine(aligner, run):
    # `aligner bench search` starts its own engine; its measurement runs here on the shared one.
    row = run(measure(aligner, "beam", ["Name a fruit."], 8))
    assert row["strategy"] == "beam" and row["generated_tokens"] > 0
    assert row["mean_engine_requests"] >= 1 and 0 <= row["prefix_cache_hit_rate"] <= 1


def test_checks_rank_candidates_that_fail_below_those_that_pass_on_the_real_engine(aligner, run):
    """best_of_n ranked by a direction that prefers long answers, with a word-count check most of its long
    candidates fail: every candidate passing the check comes before every one failing it, the response
    passes it, and each candidate's result is the verifier's on its own text."""
    check = {"id": "length_constraints:number_words", "relation": "less than", "num_words": 17}
    response = run(
        aligner.generate(
            request("best_of_n", search={"n": 6}, preference_vector={"verbosity": 1.0}, checks=[check], max_tokens=24)
        )
    )
    passing = [c.checks[0] for c in response.candidates]
    assert passing == sorted(passing, reverse=True), passing  # all that pass, then all that fail
    assert passing == [len(re.findall(r"\w+", c.text)) < 17 for c in response.candidates]
    assert response.checks == [passing[0]] and response.feasible is passing[0]
    assert response.scores["checks"] == (1.0 if passing[0] else 0.0)
    assert response.text == response.candidates[0].text


def test_rejection_with_checks_and_no_threshold_stops_once_a_candidate_passes(aligner, run):
    easy = {"id": "punctuation:no_comma"}
    impossible = {"id": "keywords:existence", "keywords": ["xylophone-quartz-zebra"]}
    stopped = run(
        aligner.generate(
            request("rejection", search={"batch": 2, "max_rounds": 4}, checks=[easy], preference_vector=None)
        )
    )
    assert stopped.threshold_met is True and stopped.checks == [True] and stopped.usage.rounds < 4
    exhausted = run(
        aligner.generate(
            request("rejection", search={"batch": 2, "max_rounds": 2}, checks=[impossible], preference_vector=None)
        )
    )
    assert exhausted.threshold_met is False and exhausted.usage.rounds == 2 and exhausted.checks == [False]


def test_particle_filter_extends_resamples_and_streams_its_answer_on_the_real_engine(aligner, run):
    search = {"particles": 3, "chunk_tokens": 8, "weight_temperature": 0.2}
    response = run(aligner.generate(request("particle_filter", search=search, max_tokens=24)))
    assert 1 <= response.usage.rounds <= 3 and response.usage.reward_calls <= 3 * response.usage.rounds
    assert response.combined_score == max(c.combined_score for c in response.candidates)
    again = run(aligner.generate(request("particle_filter", search=search, max_tokens=24)))
    assert again.text == response.text  # one seed, one answer

    async def collect():
        return [e async for e in aligner.stream(request("particle_filter", search=search, max_tokens=24, stream=True))]

    events = run(collect())
    streamed = "".join(e.text for e in events if isinstance(e, (Chunk, Delta)))
    assert isinstance(events[-1], Done) and streamed == events[-1].response.text == response.text


def test_adaptive_best_of_n_draws_in_rounds_and_says_why_it_stopped_on_the_real_engine(aligner, run):
    response = run(aligner.generate(request("best_of_n", search={"n": 8, "adaptive": True, "batch": 2})))
    usage = response.usage
    assert 1 <= usage.rounds <= 4 and len(response.candidates) == 2 * usage.rounds
    # Each round is one engine request (the objectives here are not judges).
    assert usage.engine_requests == usage.rounds
    assert usage.stopped_by == ("converged" if usage.rounds < 4 else None)


def test_adaptive_best_of_n_stops_early_on_an_easy_check_and_draws_all_n_on_a_hard_one(aligner, run):
    adaptive = {"n": 8, "adaptive": True, "batch": 2}
    easy = run(aligner.generate(request("best_of_n", search=adaptive, checks=[{"id": "punctuation:no_comma"}])))
    assert easy.checks == [True] and easy.usage.stopped_by == "checks_passed" and easy.usage.rounds < 4
    impossible = {"id": "keywords:existence", "keywords": ["xylophone-quartz-zebra"]}
    hard = run(aligner.generate(request("best_of_n", search=adaptive, checks=[impossible])))
    assert hard.checks == [False] and hard.usage.rounds == 4 and len(hard.candidates) == 8


def test_closing_a_particle_filter_stream_aborts_its_engine_requests(aligner, run, engine):
    # A cold filter: every particle is a copy of the best after step 1, so that step commits a chunk.
    req = request(
        "particle_filter", max_tokens=400, search={"particles": 4, "chunk_tokens": 8, "weight_temperature": 0.001}
    )

    assert_closing_after_the_first_chunk_aborts_every_engine_request(aligner, run, engine, req)


def test_preferences_in_words_alone_rank_best_of_n_by_the_judge_on_the_real_engine(aligner, run):
    response = run(
        aligner.generate(
            request("best_of_n", search={"n": 3}, preference_vector=None, preferences="Answer in one short sentence.")
        )
    )
    following = [c.scores.get("preference_following") for c in response.candidates]
    decided = [f for f in following if f is not None]
    assert decided and all(0.0 <= f <= 1.0 for f in decided)
    assert decided == sorted(decided, reverse=True) and response.text == response.candidates[0].text
    assert response.usage.engine_requests == 1 + 3  # the candidates' request, and one judge prefill each
