import asyncio
import time

import pytest

from aligner.contract import ChatMessage
from aligner.engine.base import ENGINE_USAGE, EngineUsage
from aligner.engine.vllm import SamplingSpec
from aligner.errors import InvalidRequest
from aligner.prompting import prompt_token_ids

GREEDY = SamplingSpec(max_tokens=48, temperature=0.0)


@pytest.fixture(scope="module")
def france_ids(engine):
    return prompt_token_ids(engine.tokenizer, [ChatMessage(role="user", content="What is the capital of France?")])


@pytest.fixture(scope="module")
def story_ids(engine):
    return prompt_token_ids(engine.tokenizer, [ChatMessage(role="user", content="Write a long story about a dragon.")])


def test_the_engine_decodes_with_one_bound_thread_on_every_core_it_was_given(engine, run, france_ids):
    """The regression test of the CPU binding: vLLM's own default kept one of two cores idle and
    Ray's thread count (1 per replica CPU) leaked into the engine; every physical core this
    process may use must carry a decoding thread of its own."""
    import psutil

    from aligner.engine.cpu_binding import decoding_cores
    from tests.pinning import pinned_cores

    expected = decoding_cores(engine.config.cpu_threads)
    assert list(engine.cores) == expected and len(expected) == len(decoding_cores(None))
    run(engine.generate(france_ids, GREEDY))  # the OpenMP threads start with the first forward pass
    assert pinned_cores(psutil.Process()) == set(expected)


def test_on_cpu_the_model_runs_in_the_engine_core_process_with_no_worker_beside_it(engine):
    """vLLM's CPU platform would spawn a worker process for the model (a second import of torch and
    vLLM at every start, and a scheduler busy-waiting beside it); the engine asks for the in-process
    executor, and the binding above holds in that one process."""
    import psutil

    assert engine._llm.vllm_config.parallel_config.distributed_executor_backend == "uni"
    children = psutil.Process().children(recursive=True)
    cores = [p for p in children if "VLLM::EngineCore" in " ".join(p.cmdline())]
    assert len(cores) == 1, [p.cmdline() for p in children]
    assert cores[0].children(recursive=True) == [], "the engine core started a process of its own"


def test_greedy_answer_names_paris(engine, run, france_ids):
    (candidate,) = run(engine.generate(france_ids, GREEDY))
    assert "Paris" in candidate.text
    assert candidate.finish_reason == "stop"
    assert candidate.token_ids[-1] == engine.eos_token_id
    assert engine.tokenizer.decode(candidate.token_ids, skip_special_tokens=True) == candidate.text


def test_n_candidates_with_a_seed_are_reproducible_and_seeds_differ(engine, run, story_ids):
    spec = SamplingSpec(max_tokens=24, temperature=1.0, seed=7)
    first = run(engine.generate(story_ids, spec, n=4))
    again = run(engine.generate(story_ids, spec, n=4))
    other = run(engine.generate(story_ids, SamplingSpec(max_tokens=24, temperature=1.0, seed=8), n=4))
    assert [c.index for c in first] == [0, 1, 2, 3]
    assert [c.token_ids for c in first] == [c.token_ids for c in again]
    assert len({c.token_ids for c in first}) > 1, "the n candidates of one request should differ"
    assert [c.token_ids for c in first] != [c.token_ids for c in other]
    # vLLM seeds candidate i with seed + i; nearby request seeds must not share candidates for it.
    assert not {c.token_ids for c in first} & {c.token_ids for c in other}, "seeds 7 and 8 shared a candidate"


def test_chunked_continuation_from_a_token_prefix_equals_one_shot_greedy(engine, run, story_ids):
    """float32 on CPU: continuing chunk by chunk from token ids reproduces one-shot greedy exactly."""
    total, chunk = 64, 8
    (one_shot,) = run(engine.generate(story_ids, SamplingSpec(max_tokens=total, temperature=0.0)))
    prefix: list[int] = []
    while len(prefix) < total:
        (piece,) = run(engine.generate(story_ids, SamplingSpec(max_tokens=chunk, temperature=0.0), prefix_ids=prefix))
        prefix.extend(piece.token_ids)
        if piece.finish_reason == "stop":
            break
    assert len(one_shot.token_ids) == total
    assert tuple(prefix) == one_shot.token_ids


def test_stream_deltas_add_up_to_the_generated_text(engine, run, france_ids):
    async def collect():
        return [d async for d in engine.stream(france_ids, GREEDY)]

    deltas = run(collect())
    (whole,) = run(engine.generate(france_ids, GREEDY))
    assert len(deltas) > 1
    assert "".join(d.text for d in deltas) == whole.text
    assert sum((d.token_ids for d in deltas), ()) == whole.token_ids
    assert deltas[-1].finish_reason == "stop"


def test_cancelling_a_generation_leaves_no_request_in_the_engine(engine, run, loop_thread, story_ids):
    long = SamplingSpec(max_tokens=1500, temperature=1.0, seed=1)
    started = asyncio.Event()

    async def consume():
        async for _ in engine.stream(story_ids, long):
            started.set()

    async def start_then_cancel():
        task = asyncio.create_task(consume())
        await asyncio.wait_for(started.wait(), 120)
        assert engine.unfinished_requests() == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(start_then_cancel())
    deadline = time.monotonic() + 10
    while engine.unfinished_requests() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.unfinished_requests() == 0
    # The engine core agrees: while a probe request runs, it is the only running request.
    engine.scheduler.reset_peak()
    updates = engine.scheduler.updates
    run(engine.generate(story_ids, SamplingSpec(max_tokens=16, temperature=0.0)))
    assert engine.scheduler.updates > updates
    assert engine.scheduler.peak_running == 1


def test_a_cancelled_generation_counts_the_tokens_it_generated(engine, run, story_ids):
    """What a request cut short generated is in its usage (failed before this fix: a FINAL_ONLY request
    cancelled mid-way counted 0 tokens, so its tenant was not metered for them). A streamed request beside
    it shows the engine decoding both: once it has 8 tokens, the one submitted before it has tokens too."""
    long = SamplingSpec(max_tokens=1500, temperature=1.0, seed=3)
    usage, beside = EngineUsage(), EngineUsage()

    async def generate() -> None:
        ENGINE_USAGE.set(usage)
        await engine.generate(story_ids, long, n=2)

    async def stream_eight() -> None:
        ENGINE_USAGE.set(beside)
        stream = engine.stream(story_ids, long)
        for _ in range(8):
            await anext(stream)
        await stream.aclose()

    async def cancel_mid_way() -> None:
        task = asyncio.create_task(generate())
        await stream_eight()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(cancel_mid_way())
    assert usage.requests == 1 and beside.generated_tokens >= 8
    assert 2 <= usage.generated_tokens < 2 * 1500, usage  # both samples decoded, neither finished
    assert engine.unfinished_requests() == 0


def test_a_consumer_that_stops_early_aborts_the_request(engine, run, story_ids):
    async def take_two():
        stream = engine.stream(story_ids, SamplingSpec(max_tokens=1500, temperature=1.0, seed=2))
        taken = [await anext(stream), await anext(stream)]
        await stream.aclose()
        return taken

    assert len(run(take_two())) == 2
    assert engine.unfinished_requests() == 0


def test_engine_rejects_impossible_requests(engine, run, france_ids):
    with pytest.raises(InvalidRequest, match="max_model_len 2048"):
        run(engine.generate(france_ids, SamplingSpec(max_tokens=2040)))
    with pytest.raises(InvalidRequest) as err:
        run(engine.generate(france_ids, GREEDY, n=0))
    assert err.value.field == "n"


def test_health_reports_the_model(engine, run):
    health = run(engine.health())
    assert health == {"model": engine.model_name, "unfinished_requests": 0}
