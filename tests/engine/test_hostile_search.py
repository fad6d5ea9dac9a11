"""Stop strings, usage accounting, deadlines and the server's limits on the real engine (issues: hostile input
and faults; a cost model that bounds every request)."""

import asyncio
import time

import pytest

from aligner.contract import AlignRequest, SearchLimits
from aligner.core import Aligner
from aligner.errors import InvalidRequest, PromptTooLong
from aligner.safety.config import SafetyConfig
from aligner.search.admission import admit
from aligner.search.base import DeadlineExceeded

QUESTION = "Write a short story about a cat who learns to fly."


def parse(**fields):
    return AlignRequest.parse({"prompt": QUESTION, "seed": 11, "max_tokens": 48, **fields})


def streamed_text(aligner, run, request):
    async def collect():
        return [e async for e in aligner.stream(request)]

    events = run(collect())
    assert events[-1].kind == "done"
    return "".join(e.text for e in events if e.kind in ("delta", "chunk")), events[-1].response


def test_sample_text_ends_before_the_stop_string_streamed_or_not(aligner, run):
    free = run(aligner.generate(parse(temperature=0)))
    words = free.text.split()
    assert len(words) > 6, free.text
    stop = f"{words[3]} {words[4]}"  # a stop string in the middle of the free text
    request = parse(temperature=0, stop=[stop])
    plain = run(aligner.generate(request))
    text, streamed = streamed_text(aligner, run, request)
    assert stop not in plain.text and plain.text == free.text[: free.text.index(stop)]
    assert text == streamed.text == plain.text
    assert plain.finish_reason == "stop"


def test_beam_cuts_at_a_stop_string_that_straddles_a_chunk_boundary(aligner, run, engine):
    # One beam, one continuation per step: the same seeded path with and without the stop string,
    # so the cut text is known exactly (wider beams may rank differently once texts are cut).
    search = {"strategy": "beam", "beam_width": 1, "expansions": 1, "chunk_tokens": 4}
    fields = {"temperature": 1.0, "preference_vector": {"relevance": 1.0}, "search": search}
    free = run(aligner.generate(parse(**fields)))
    ids = engine.tokenizer(free.text, add_special_tokens=False)["input_ids"]
    assert len(ids) > 8, free.text
    # Characters around the end of the first 4-token chunk: the stop string spans two engine requests.
    boundary = len(engine.tokenizer.decode(ids[:4]))
    stop = free.text[boundary - 2 : boundary + 2]
    assert len(stop.strip()) >= 2, (free.text, boundary)
    request = parse(**fields, stop=[stop])
    cut = run(aligner.generate(request))
    text, streamed = streamed_text(aligner, run, request)
    expected = free.text[: free.text.index(stop)]
    assert cut.text == expected and stop not in cut.text and cut.finish_reason == "stop"
    assert text == streamed.text == expected  # nothing past the stop string was ever streamed


def test_usage_counts_the_judges_engine_requests(aligner, run):
    request = parse(
        temperature=1.0, max_tokens=16, preference_vector={"helpfulness": 1.0}, search={"strategy": "best_of_n", "n": 4}
    )
    response = run(aligner.generate(request))
    usage = response.usage
    assert usage.engine_requests == 1 + 4  # the candidates' request, then one judge prefill per candidate
    assert usage.generated_tokens == usage.candidate_tokens + 4  # each judge request generates one token
    assert usage.prefill_tokens > 5 * usage.prompt_tokens // 2


def test_a_deadline_cuts_scoring_by_the_judge_short(aligner, run):
    request = parse(
        temperature=1.0,
        max_tokens=16,
        preference_vector={"helpfulness": 1.0},
        search={"strategy": "rejection", "batch": 4, "threshold": 2.0, "max_rounds": 8},
        budget={"deadline_ms": 1500},
    )
    started = time.monotonic()
    try:
        response = run(aligner.generate(request))
    except DeadlineExceeded:
        response = None
    elapsed = time.monotonic() - started
    assert elapsed < 1.5 + 1.0, elapsed  # the deadline, plus prompt preparation and the last abort
    if response is not None:
        assert response.usage.stopped_by == "deadline_ms"
    assert aligner.engine.unfinished_requests() == 0


def test_a_streamed_sample_that_misses_its_deadline_is_an_error(aligner, run):
    request = parse(temperature=1.0, max_tokens=1000, budget={"deadline_ms": 40})

    async def collect():
        return [e async for e in aligner.stream(request)]

    with pytest.raises(DeadlineExceeded):
        run(collect())


def test_a_huge_prompt_does_not_block_the_event_loop(aligner, run):
    """Rendering, scanning and tokenizing a maximal prompt run off the loop: a ticker keeps ticking."""
    huge = AlignRequest.parse({"prompt": "lorem ipsum dolor sit amet " * 7000, "max_tokens": 16})  # 189k chars

    async def race():
        gaps = []

        async def ticker():
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        tick = asyncio.ensure_future(ticker())
        started = time.monotonic()
        try:
            with pytest.raises(PromptTooLong):
                await aligner.generate(huge)
        finally:
            tick.cancel()
        return max(gaps), time.monotonic() - started

    worst_gap, took = run(race())
    assert worst_gap < 0.25, (worst_gap, took)


def test_huge_requests_do_not_hold_up_a_concurrent_small_one(aligner, run):
    """Two maximal prompts (rejected as too long after tokenization) beside a small request: the small
    one's latency grows by no more than a bound (the huge ones' work runs off the event loop)."""
    huge = AlignRequest.parse({"prompt": "lorem ipsum dolor sit amet " * 7000, "max_tokens": 16})
    small = AlignRequest.parse({"prompt": "Name a colour.", "max_tokens": 8, "temperature": 0})

    async def timed_small():
        started = time.monotonic()
        await aligner.generate(small)
        return time.monotonic() - started

    async def beside_huge():
        results = await asyncio.gather(
            aligner.generate(huge), timed_small(), aligner.generate(huge), return_exceptions=True
        )
        assert all(isinstance(r, PromptTooLong) for r in (results[0], results[2])), results
        return results[1]

    run(timed_small())  # warm-up
    alone = min(run(timed_small()) for _ in range(3))
    crowded = run(beside_huge())
    assert crowded < alone + 1.5, (alone, crowded)


# --- the server's limits (issue 18: a cost model that bounds every request) ---

UNREACHABLE_RESAMPLE = SafetyConfig(
    text="Only talk about animals.", thresholds={"verbosity": 0.999}, action="resample", max_resamples=8
)  # verbosity is below 0.999 for any answer of these lengths: nothing passes, every resample is drawn


def test_the_issues_beam_is_refused_by_the_replica_before_any_engine_work(aligner, run):
    """A request parsed under laxer limits (another ingress's) still meets the replica's own caps."""
    lax = SearchLimits(max_reward_calls=10**9, max_engine_requests=10**9, max_scoring_rounds=10**9)
    search = {"strategy": "beam", "beam_width": 16, "expansions": 16, "chunk_tokens": 1}
    request = AlignRequest.parse(
        {"prompt": QUESTION, "max_tokens": 1024, "preference_vector": {"relevance": 1.0}, "search": search}, lax
    )
    with pytest.raises(InvalidRequest) as err:
        run(aligner.start(request))  # phase 1 only: it raises before a search exists
    assert err.value.field == "search" and "261904 reward calls" in err.value.reason
    assert "search_limits.max_reward_calls" in err.value.reason


def test_a_resample_stays_within_the_servers_limits(engine, catalog, run):
    """Failed before this fix: 3 candidates + 8 resamples = 11, past a server limit of 5."""
    limited = Aligner(engine, catalog, limits=SearchLimits(max_candidates=5))
    request = parse(
        temperature=1.0, max_tokens=16, preference_vector={"relevance": 1.0}, search={"strategy": "best_of_n", "n": 3}
    )
    response = run(limited.generate(request, safety=UNREACHABLE_RESAMPLE))
    assert response.safety.verdict == "refused" and response.usage.candidates == 5
    assert response.usage.engine_requests == 2  # the search's request, then one resample of 2


def test_the_judges_prefill_is_within_what_admission_priced(aligner, run):
    request = parse(
        temperature=1.0, max_tokens=16, preference_vector={"helpfulness": 1.0}, search={"strategy": "best_of_n", "n": 4}
    )
    usage = run(aligner.generate(request)).usage
    priced = admit(request, aligner.catalog, None, prompt_tokens=usage.prompt_tokens, limits=SearchLimits())
    judged = usage.prefill_tokens - usage.prompt_tokens  # all but the candidates' one request
    assert 0 < judged <= priced.cost.judge_prefill_tokens < 4 * judged


def test_the_servers_time_limit_ends_a_long_search_streamed_or_not(engine, catalog, run):
    """`max_request_s` ends a search no budget bounds (64 rounds, a threshold no candidate reaches) with the
    best candidate so far; a request's own later deadline does not lift it. The limit is three rounds of
    the two searches side by side, as long as they take on this machine now (a fixed 8 s was less than one
    round on a loaded one: nothing was complete, so `deadline_exceeded`)."""
    search = {"strategy": "rejection", "batch": 4, "threshold": 2.0, "max_rounds": 64}
    fields = {"temperature": 1.0, "max_tokens": 64, "preference_vector": {"relevance": 1.0}, "search": search}

    async def one_round_each():
        one, unlimited = parse(**{**fields, "search": {**search, "max_rounds": 1}}), Aligner(engine, catalog)
        return await asyncio.gather(unlimited.generate(one), unlimited.generate(one))

    started = time.monotonic()
    run(one_round_each())
    limited = Aligner(engine, catalog, limits=SearchLimits(max_request_s=max(4.0, 3 * (time.monotonic() - started))))
    plain = parse(**fields)
    streamed = parse(**fields, stream=True, budget={"deadline_ms": 600_000})

    async def both():
        async def collect():
            return [e async for e in limited.stream(streamed)]

        return await asyncio.gather(limited.generate(plain), collect())

    response, events = run(both())
    for result in (response, events[-1].response):
        assert result.usage.stopped_by == "max_request_s" and result.usage.candidates >= 4
        assert 0 < result.usage.rounds < 64 and result.threshold_met is False
    assert events[-1].kind == "done" and "".join(e.text for e in events[:-1]) == events[-1].response.text
    assert engine.unfinished_requests() == 0
