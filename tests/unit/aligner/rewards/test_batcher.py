"""The cross-request scoring micro-batcher: merging logic on a fake model, equality on real ones."""

import asyncio
import re
import threading
import time

import numpy as np
import pytest

from aligner.contract import ChatMessage
from aligner.errors import InvalidRequest
from aligner.rewards import Objective, ObjectiveCatalog, RewardError, RewardsConfig
from aligner.rewards.base import BlockingRewardModel
from aligner.rewards.batcher import ScoringBatcher


class FakeRecordingModel(BlockingRewardModel):
    """Scores response "c<i>-r<j>" of conversation "<i>" as [i, j]; records each score_many call's item sizes.

    A fake: the batcher's merging logic is under test, not a model.
    """

    objectives = (Objective("fake-conversation", "i"), Objective("fake-response", "j"))

    def __init__(self, delay: float = 0.0, error: Exception | None = None, refuses: frozenset[int] = frozenset()):
        self.calls: list[list[int]] = []
        self.threads: set[int] = set()
        self.delay = delay
        self.error = error
        self.refuses = refuses  # conversations "<i>" its "chat template" refuses: any batch holding one raises

    def score_now(self, conversation, responses):
        return np.array([[float(conversation[0].content), float(r.split("-r")[1])] for r in responses]).reshape(-1, 2)

    def score_many(self, items):
        self.calls.append([len(responses) for _, responses in items])
        self.threads.add(threading.get_ident())
        if self.delay:
            time.sleep(self.delay)
        if self.error is not None:
            raise self.error
        for conversation, _ in items:
            if int(conversation[0].content) in self.refuses:
                raise InvalidRequest(
                    "messages", f"the fake's chat template refuses conversation {conversation[0].content}"
                )
        return super().score_many(items)


def conv(i):
    return [ChatMessage(role="user", content=str(i))]


def responses(i, n):
    return [f"c{i}-r{j}" for j in range(n)]


def expected(i, n):
    return np.array([[i, j] for j in range(n)], dtype=float).reshape(-1, 2)


def test_concurrent_callers_within_the_window_share_one_call_and_get_their_own_rows():
    model = FakeRecordingModel()
    batcher = ScoringBatcher(model, window_ms=50)
    sizes = [2, 3, 1, 4, 2]

    async def main():
        return await asyncio.gather(*(batcher.score(conv(i), responses(i, n)) for i, n in enumerate(sizes)))

    results = asyncio.run(main())
    assert model.calls == [sizes]
    for i, (n, rows) in enumerate(zip(sizes, results)):
        np.testing.assert_array_equal(rows, expected(i, n))


def test_callers_staggered_within_the_window_are_merged():
    model = FakeRecordingModel()
    batcher = ScoringBatcher(model, window_ms=200)

    async def late(i, delay):
        await asyncio.sleep(delay)
        return await batcher.score(conv(i), responses(i, 2))

    async def main():
        return await asyncio.gather(late(0, 0), late(1, 0.02), late(2, 0.05))

    results = asyncio.run(main())
    assert model.calls == [[2, 2, 2]]
    for i, rows in enumerate(results):
        np.testing.assert_array_equal(rows, expected(i, 2))


def test_calls_after_the_window_make_separate_batches():
    model = FakeRecordingModel()
    batcher = ScoringBatcher(model, window_ms=5)

    async def main():
        first = await batcher.score(conv(0), responses(0, 2))
        await asyncio.sleep(0.05)
        second = await batcher.score(conv(1), responses(1, 3))
        return first, second

    first, second = asyncio.run(main())
    assert model.calls == [[2], [3]]
    np.testing.assert_array_equal(first, expected(0, 2))
    np.testing.assert_array_equal(second, expected(1, 3))


def test_calls_arriving_while_a_batch_runs_go_together_in_the_next_one():
    model = FakeRecordingModel(delay=0.4)
    batcher = ScoringBatcher(model, window_ms=0)

    async def main():
        first = asyncio.ensure_future(batcher.score(conv(0), responses(0, 1)))
        await asyncio.sleep(0.05)  # the first batch is running in its thread now
        rest = [batcher.score(conv(i), responses(i, 2)) for i in (1, 2, 3)]
        return await asyncio.gather(first, *rest)

    results = asyncio.run(main())
    assert model.calls == [[1], [2, 2, 2]]
    for i, rows in enumerate(results):
        np.testing.assert_array_equal(rows, expected(i, 1 if i == 0 else 2))


def test_max_batch_sequences_splits_batches_in_arrival_order():
    model = FakeRecordingModel()
    batcher = ScoringBatcher(model, window_ms=20, max_batch_sequences=4)
    sizes = [3, 2, 2, 1, 6]

    async def main():
        return await asyncio.gather(*(batcher.score(conv(i), responses(i, n)) for i, n in enumerate(sizes)))

    results = asyncio.run(main())
    # [3] (3 + 2 > 4), [2, 2], [1] (1 + 6 > 4), [6] (bigger than the bound: alone)
    assert model.calls == [[3], [2, 2], [1], [6]]
    for i, (n, rows) in enumerate(zip(sizes, results)):
        np.testing.assert_array_equal(rows, expected(i, n))


def test_a_full_batch_closes_before_its_window_ends():
    model = FakeRecordingModel()
    batcher = ScoringBatcher(model, window_ms=30_000, max_batch_sequences=4)

    async def main():
        started = time.monotonic()
        await asyncio.wait_for(
            asyncio.gather(batcher.score(conv(0), responses(0, 2)), batcher.score(conv(1), responses(1, 2))), timeout=10
        )
        return time.monotonic() - started

    assert asyncio.run(main()) < 5
    assert model.calls == [[2, 2]]


@pytest.mark.parametrize("error", [RewardError("reward head exploded"), ValueError("bad input")])
def test_a_model_that_always_fails_fails_every_caller_each_after_scoring_alone(error):
    model = FakeRecordingModel(error=error)
    batcher = ScoringBatcher(model, window_ms=50)

    async def main():
        return await asyncio.gather(
            *(batcher.score(conv(i), responses(i, 2)) for i in range(3)), return_exceptions=True
        )

    outcomes = asyncio.run(main())
    # The merged pass, then halves until each call is alone: [0] | [1, 2] -> [1], [2].
    assert model.calls == [[2, 2, 2], [2], [2, 2], [2], [2]]
    assert [type(o) for o in outcomes] == [type(error)] * 3
    assert all(str(o) == str(error) for o in outcomes)


def test_a_model_that_is_down_is_not_rescored_once_per_call():
    """Failed before this fix: 64 calls on a model that fails every batch ran 127 passes (2k - 1)."""
    model = FakeRecordingModel(error=RewardError("reward model unreachable"))
    batcher = ScoringBatcher(model, window_ms=50)

    async def main():
        return await asyncio.gather(
            *(batcher.score(conv(i), responses(i, 1)) for i in range(64)), return_exceptions=True
        )

    outcomes = asyncio.run(main())
    assert all(isinstance(o, RewardError) for o in outcomes)
    assert sum("unreachable" in str(o) for o in outcomes) >= 1  # those scored alone get the model's own error
    assert all("unreachable" in str(o) or "failed every pass of a merged batch" in str(o) for o in outcomes)
    assert len(model.calls) <= 1 + 4 * 6  # the merged pass, then at most 4 * log2(64) rescoring passes


def test_two_bad_calls_in_a_large_batch_are_still_isolated_within_the_pass_cap():
    model = FakeRecordingModel(refuses=frozenset({3, 50}))
    batcher = ScoringBatcher(model, window_ms=50)

    async def main():
        return await asyncio.gather(
            *(batcher.score(conv(i), responses(i, 1)) for i in range(64)), return_exceptions=True
        )

    outcomes = asyncio.run(main())
    for i, outcome in enumerate(outcomes):
        if i in (3, 50):
            assert isinstance(outcome, InvalidRequest)
        else:
            np.testing.assert_array_equal(outcome, expected(i, 1))
    assert len(model.calls) <= 1 + 4 * 6


def test_past_the_pass_cap_no_call_gets_another_request_s_error():
    """Found by review: with the cap spent, a lone call of a second half got its parent group's error,
    whose message quoted another request's conversation."""
    model = FakeRecordingModel(refuses=frozenset({0, 4, 10}))
    batcher = ScoringBatcher(model, window_ms=50)

    async def main():
        return await asyncio.gather(
            *(batcher.score(conv(i), responses(i, 1)) for i in range(16)), return_exceptions=True
        )

    outcomes = asyncio.run(main())
    for i, outcome in enumerate(outcomes):
        if isinstance(outcome, Exception):
            quoted = [int(n) for n in re.findall(r"conversation (\d+)", str(outcome))]
            assert quoted in ([], [i]), (i, str(outcome))  # its own conversation or none
        else:
            np.testing.assert_array_equal(outcome, expected(i, 1))
    assert len(model.calls) <= 1 + 4 * 4


def test_a_call_that_fails_a_merged_batch_fails_only_its_own_caller():
    """Failed before this fix: every caller of the batch got the refused conversation's error."""
    model = FakeRecordingModel(refuses=frozenset({2}))
    batcher = ScoringBatcher(model, window_ms=50)
    seen = []
    batcher.on_batch = lambda *args: seen.append(args[1:3])

    async def main():
        return await asyncio.gather(
            *(batcher.score(conv(i), responses(i, 2)) for i in range(4)), return_exceptions=True
        )

    outcomes = asyncio.run(main())
    assert isinstance(outcomes[2], InvalidRequest) and outcomes[2].field == "messages"
    assert "refuses conversation 2" in outcomes[2].message
    for i in (0, 1, 3):
        np.testing.assert_array_equal(outcomes[i], expected(i, 2))
    # One merged pass; [0, 1] scores, [2, 3] fails again and is halved: [2] fails, [3] scores.
    assert model.calls == [[2, 2, 2, 2], [2, 2], [2, 2], [2], [2]]
    assert seen == [(4, 8), (2, 4), (2, 4), (1, 2), (1, 2)]  # every pass is reported


def test_several_failing_calls_each_get_their_own_error_and_the_rest_their_rows():
    model = FakeRecordingModel(refuses=frozenset({0, 5}))
    batcher = ScoringBatcher(model, window_ms=50)
    sizes = [1, 2, 3, 1, 2, 2, 1]

    async def main():
        return await asyncio.gather(
            *(batcher.score(conv(i), responses(i, n)) for i, n in enumerate(sizes)), return_exceptions=True
        )

    outcomes = asyncio.run(main())
    for i, (n, outcome) in enumerate(zip(sizes, outcomes)):
        if i in (0, 5):
            assert isinstance(outcome, InvalidRequest) and f"conversation {i}" in outcome.message
        else:
            np.testing.assert_array_equal(outcome, expected(i, n))
    # Each failing half is halved again (left first) until its failing calls are alone.
    assert model.calls == [sizes, [1, 2, 3], [1], [2, 3], [1, 2, 2, 1], [1, 2], [2, 1], [2], [1]]


def test_a_batch_that_succeeds_is_one_pass():
    model = FakeRecordingModel(refuses=frozenset({9}))
    batcher = ScoringBatcher(model, window_ms=50)

    async def main():
        return await asyncio.gather(*(batcher.score(conv(i), responses(i, 2)) for i in range(4)))

    for i, rows in enumerate(asyncio.run(main())):
        np.testing.assert_array_equal(rows, expected(i, 2))
    assert model.calls == [[2, 2, 2, 2]]


def test_a_wrong_number_of_results_is_isolated_like_an_exception():
    class FakeDroppingModel(FakeRecordingModel):
        """Loses the result of conversation 1 whenever it is in the batch."""

        def score_many(self, items):
            rows = super().score_many(items)
            return [r for (c, _), r in zip(items, rows) if c[0].content != "1"]

    model = FakeDroppingModel()
    batcher = ScoringBatcher(model, window_ms=50)

    async def main():
        return await asyncio.gather(
            *(batcher.score(conv(i), responses(i, 1)) for i in range(3)), return_exceptions=True
        )

    outcomes = asyncio.run(main())
    assert isinstance(outcomes[1], RewardError) and "returned 0 results for 1 requests" in str(outcomes[1])
    np.testing.assert_array_equal(outcomes[0], expected(0, 1))
    np.testing.assert_array_equal(outcomes[2], expected(2, 1))


def test_a_caller_cancelled_while_its_failing_batch_runs_is_not_rescored():
    model = FakeRecordingModel(delay=0.3, refuses=frozenset({1}))
    batcher = ScoringBatcher(model, window_ms=10)

    async def main():
        tasks = [asyncio.ensure_future(batcher.score(conv(i), responses(i, 2))) for i in range(3)]
        await asyncio.sleep(0.1)  # the merged pass is in score_many now
        tasks[0].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert isinstance(outcomes[0], asyncio.CancelledError)
    assert isinstance(outcomes[1], InvalidRequest)
    np.testing.assert_array_equal(outcomes[2], expected(2, 2))
    # The merged pass, then only the two callers still waiting, halved: [1] fails, [2] scores.
    assert model.calls == [[2, 2, 2], [2], [2]]


def test_through_the_catalog_a_refused_conversation_fails_only_its_request():
    model = FakeRecordingModel(refuses=frozenset({1}))
    catalog = ObjectiveCatalog([model], batch_window_ms=50)

    async def main():
        return await asyncio.gather(
            catalog.score(conv(0), responses(0, 3), ["fake-response"]),
            catalog.score(conv(1), responses(1, 3), ["fake-response"]),
            return_exceptions=True,
        )

    good, bad = asyncio.run(main())
    np.testing.assert_array_equal(good, expected(0, 3)[:, 1:])
    assert isinstance(bad, InvalidRequest) and bad.field == "messages"


def test_a_caller_cancelled_while_queued_is_dropped_and_the_others_are_served():
    model = FakeRecordingModel()
    batcher = ScoringBatcher(model, window_ms=300)

    async def main():
        tasks = [asyncio.ensure_future(batcher.score(conv(i), responses(i, 2))) for i in range(3)]
        await asyncio.sleep(0.01)
        tasks[1].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        again = await batcher.score(conv(5), responses(5, 1))
        return results, again

    results, again = asyncio.run(main())
    assert isinstance(results[1], asyncio.CancelledError)
    np.testing.assert_array_equal(results[0], expected(0, 2))
    np.testing.assert_array_equal(results[2], expected(2, 2))
    assert model.calls == [[2, 2], [1]]
    np.testing.assert_array_equal(again, expected(5, 1))


def test_a_caller_cancelled_while_its_batch_runs_does_not_break_the_batch():
    model = FakeRecordingModel(delay=0.4)
    batcher = ScoringBatcher(model, window_ms=10)

    async def main():
        tasks = [asyncio.ensure_future(batcher.score(conv(i), responses(i, 2))) for i in range(3)]
        await asyncio.sleep(0.08)  # the batch is in score_many now
        tasks[0].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        again = await batcher.score(conv(7), responses(7, 3))
        return results, again

    results, again = asyncio.run(main())
    assert model.calls == [[2, 2, 2], [3]]
    assert isinstance(results[0], asyncio.CancelledError)
    np.testing.assert_array_equal(results[1], expected(1, 2))
    np.testing.assert_array_equal(results[2], expected(2, 2))
    np.testing.assert_array_equal(again, expected(7, 3))


def test_the_event_loop_stays_responsive_during_a_slow_batch():
    model = FakeRecordingModel(delay=0.3)
    batcher = ScoringBatcher(model, window_ms=1)
    ticks = 0  # the loop ticks every 10 ms while score_many sleeps 0.3 s in its thread

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def main():
        tick = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)
        rows = await batcher.score(conv(0), responses(0, 2))
        tick.cancel()
        return rows, threading.get_ident()

    rows, loop_thread = asyncio.run(main())
    np.testing.assert_array_equal(rows, expected(0, 2))
    assert model.threads and loop_thread not in model.threads
    assert ticks >= 10  # 0.3 s of scoring: about 30 ticks when the loop is free, 0 if it were blocked


def test_a_batcher_made_outside_any_loop_serves_several_loops():
    model = FakeRecordingModel()
    batcher = ScoringBatcher(model, window_ms=1)
    np.testing.assert_array_equal(asyncio.run(batcher.score(conv(1), responses(1, 2))), expected(1, 2))
    np.testing.assert_array_equal(asyncio.run(batcher.score(conv(2), responses(2, 1))), expected(2, 1))
    result = {}
    thread = threading.Thread(target=lambda: result.update(rows=asyncio.run(batcher.score(conv(3), responses(3, 2)))))
    thread.start()
    thread.join(10)
    np.testing.assert_array_equal(result["rows"], expected(3, 2))
    assert model.calls == [[2], [1], [2]]


def test_no_responses_need_no_batch():
    model = FakeRecordingModel()
    rows = asyncio.run(ScoringBatcher(model).score(conv(0), []))
    assert rows.shape == (0, 2) and model.calls == []


def test_default_score_many_equals_score_now_item_by_item():
    model = FakeRecordingModel()
    items = [(conv(i), responses(i, n)) for i, n in enumerate([2, 0, 3])]
    out = BlockingRewardModel.score_many(model, items)
    assert [o.shape for o in out] == [(2, 2), (0, 2), (3, 2)]
    for i, (o, n) in enumerate(zip(out, [2, 0, 3])):
        np.testing.assert_array_equal(o, expected(i, n))


def test_catalog_observers_see_each_merged_batch():
    model = FakeRecordingModel()
    catalog = ObjectiveCatalog([model], batch_window_ms=50)
    seen = []
    catalog.add_batch_observer(lambda *args: seen.append((args, threading.get_ident())))
    catalog.add_batch_observer(lambda *args: 1 / 0)  # a broken observer is logged, not raised

    async def main():
        scored = await asyncio.gather(
            *(
                catalog.score(conv(i), responses(i, n), ["fake-response", "fake-conversation"])
                for i, n in enumerate([2, 3, 1])
            )
        )
        return scored, threading.get_ident()

    scored, loop_thread = asyncio.run(main())
    ((model_label, requests, sequences, seconds), thread) = seen[0]
    assert len(seen) == 1 and (model_label, requests, sequences) == ("fake-conversation+fake-response", 3, 6)
    assert seconds >= 0 and thread == loop_thread
    for i, (n, rows) in enumerate(zip([2, 3, 1], scored)):
        np.testing.assert_array_equal(rows, expected(i, n)[:, ::-1])
    assert model.calls == [[2, 3, 1]]


def test_catalog_without_a_window_scores_each_call_alone_and_reports_it_as_a_batch_of_one():
    model = FakeRecordingModel()
    catalog = ObjectiveCatalog([model])
    seen = []
    catalog.add_batch_observer(lambda *args: seen.append(args))

    async def main():
        return await asyncio.gather(
            *(catalog.score(conv(i), responses(i, n), ["fake-response"]) for i, n in enumerate([2, 3]))
        )

    scored = asyncio.run(main())
    for i, (n, rows) in enumerate(zip([2, 3], scored)):
        np.testing.assert_array_equal(rows, expected(i, n)[:, 1:])
    assert model.calls == []  # never merged: score_now ran once per call, in its own thread
    assert sorted((label, requests, sequences) for label, requests, sequences, _ in seen) == [
        ("fake-conversation+fake-response", 1, 2),
        ("fake-conversation+fake-response", 1, 3),
    ]
    stats = catalog.scorer_stats()
    assert {"graph_replays", "eager_runs", "batches", "sequences", "padding_waste"} <= set(stats)
    assert all(v == 0 for v in stats.values())


def test_rewards_config_batching_fields():
    config = RewardsConfig()
    assert (config.batch_window_ms, config.max_batch_sequences) == (2.0, 256)
    assert RewardsConfig(batch_window_ms=None).batch_window_ms is None  # merging off
    for bad in ({"batch_window_ms": -1}, {"batch_window_ms": 1001}, {"max_batch_sequences": 0}):
        with pytest.raises(ValueError):
            RewardsConfig(**bad)


# --- real models: a merged batch scores exactly as one conversation at a time ---

CONVERSATIONS = [
    [ChatMessage(role="user", content="How do I bake sourdough bread at home?")],
    [
        ChatMessage(role="system", content="You are terse."),
        ChatMessage(role="user", content="What is the capital of France?"),
    ],
    [
        ChatMessage(role="user", content="Tell me about egg boiling."),
        ChatMessage(role="assistant", content="Sure, what do you want to know?"),
        ChatMessage(role="user", content="How long for a soft egg?"),
    ],
]
ANSWERS = [
    ["Use a mature starter, flour, water and salt, then bake at 230°C.", "", "The stock market rallied today. " * 10],
    ["Paris.", "It is Paris, on the Seine.", "Bread needs time."],
    [
        "About six minutes in boiling water.",
        "Eggs.",
        "Put it in boiling water for six minutes, then cool it in ice water. " * 4,
    ],
]


def assert_batched_equals_one_at_a_time(model):
    items = list(zip(CONVERSATIONS, ANSWERS))
    single = [model.score_now(c, r) for c, r in items]
    merged = model.score_many(items)
    assert len(merged) == len(items)
    for s, m in zip(single, merged):
        assert m.shape == s.shape == (3, len(model.objectives))
        np.testing.assert_allclose(m, s, atol=1e-5)

    # The same through the catalog: concurrent requests end up in one merged call.
    catalog = ObjectiveCatalog([model], batch_window_ms=200)
    seen = []
    catalog.add_batch_observer(lambda *args: seen.append(args[1:3]))
    names = [o.name for o in model.objectives]

    async def main():
        return await asyncio.gather(*(catalog.score(c, r, names) for c, r in items))

    for s, m in zip(single, asyncio.run(main())):
        np.testing.assert_allclose(m, s, atol=1e-5)
    assert seen == [(3, 9)]
    return catalog


def test_relevance_merged_across_conversations_equals_one_at_a_time():
    from aligner.rewards.builtin import Relevance

    relevance = Relevance()
    catalog = assert_batched_equals_one_at_a_time(relevance)
    assert relevance.score_many([]) == []
    assert [o.shape for o in relevance.score_many([(CONVERSATIONS[0], [])])] == [(0, 1)]
    before = catalog.scorer_stats()["calls"]
    relevance.score_many(list(zip(CONVERSATIONS, ANSWERS)))
    assert catalog.scorer_stats()["calls"] == before + 1  # one scorer call for all three conversations


def test_hf_reward_model_merged_across_conversations_equals_one_at_a_time(tiny_reward_model_dir):
    from aligner.rewards.hf import HFRewardModel, HFRewardModelConfig
    from kernels.buckets import BucketSpec

    model = HFRewardModel(
        HFRewardModelConfig(path=str(tiny_reward_model_dir), device="cpu"),
        bucket_spec=BucketSpec(batch_sizes=(1, 2, 4), seq_lens=(32, 64, 128)),
    )
    catalog = assert_batched_equals_one_at_a_time(model)
    stats = catalog.scorer_stats()
    assert stats == model.scorer.stats.to_dict() and stats["sequences"] == 3 * 9  # single, merged, catalog
    model.score_many(list(zip(CONVERSATIONS, ANSWERS)))
    assert catalog.scorer_stats()["calls"] == stats["calls"] + 1


def test_response_only_builtins_merge_into_one_flat_call(tokenizer):
    from aligner.rewards.builtin import Harmlessness, Positivity, Readability, Verbosity

    items = list(zip(CONVERSATIONS, ANSWERS)) + [(CONVERSATIONS[0], [])]
    for model in (Verbosity(tokenizer), Readability(), Harmlessness(), Positivity()):
        merged = model.score_many(items)
        assert [m.shape for m in merged] == [(3, 1), (3, 1), (3, 1), (0, 1)]
        for (c, r), m in zip(items, merged):
            if r:
                np.testing.assert_allclose(m, model.score_now(c, r), atol=1e-12)


# --- abandoned scoring stops between batches and frees the scorer ---


class FakeSlowScorerModel(BlockingRewardModel):
    """Scores through a real BatchedScorer whose forward is a fake that takes 0.1 s per one-row batch."""

    objectives = (Objective("fake-slow", "slow"),)

    def __init__(self, gate: threading.Event | None = None):
        import torch

        from kernels.buckets import BucketSpec
        from kernels.scorer import BatchedScorer

        self.entered = threading.Event()  # a forward has begun

        def slow_forward(ids, mask, positions):
            self.entered.set()
            if gate is not None:
                gate.wait()
            time.sleep(0.1)
            return torch.zeros(ids.shape[0], 1)

        self.scorer = BatchedScorer(
            slow_forward, num_outputs=1, pad_id=0, spec=BucketSpec(batch_sizes=(1,), seq_lens=(8,))
        )

    def score_now(self, conversation, responses):
        return self.scorer.score([[1, 2, 3] for _ in responses]).astype(float)

    def score_many(self, items):
        return [self.score_now(c, r) for c, r in items]


@pytest.mark.parametrize("window_ms", [2.0, None])
def test_a_caller_that_gives_up_stops_the_scoring_thread_between_batches(window_ms):
    model = FakeSlowScorerModel()
    catalog = ObjectiveCatalog([model], batch_window_ms=window_ms)

    async def main():
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(catalog.score(conv(1), [f"c1-r{j}" for j in range(30)], ["fake-slow"]), 0.25)

    started = time.monotonic()
    asyncio.run(main())
    # 30 batches would take 3 s; the thread notices within one batch and releases the scorer lock.
    assert model.scorer._lock.acquire(timeout=1.0)
    model.scorer._lock.release()
    assert time.monotonic() - started < 1.5
    assert model.scorer.stats.batches <= 5


def test_a_merged_batch_keeps_scoring_while_one_caller_still_waits():
    model = FakeSlowScorerModel()
    catalog = ObjectiveCatalog([model], batch_window_ms=50)

    async def main():
        impatient = asyncio.ensure_future(asyncio.wait_for(catalog.score(conv(1), ["c1-r0"] * 5, ["fake-slow"]), 0.2))
        patient = asyncio.ensure_future(catalog.score(conv(2), ["c2-r0"] * 5, ["fake-slow"]))
        with pytest.raises(TimeoutError):
            await impatient
        return await patient

    rows = asyncio.run(main())
    assert rows.shape == (5, 1) and model.scorer.stats.batches == 10


def test_a_merged_batch_stops_for_callers_that_left_and_scores_the_rest_without_them():
    """Failed before the fix: a tenant that gave up its 16 sequences had them all scored, 17 batches, while
    another tenant's one sequence merged with them waited for every one."""
    gate = threading.Event()
    model = FakeSlowScorerModel(gate)
    catalog = ObjectiveCatalog([model], batch_window_ms=50)

    async def main():
        heavy = asyncio.ensure_future(catalog.score(conv(1), ["c1-r0"] * 16, ["fake-slow"]))
        light = asyncio.ensure_future(catalog.score(conv(2), ["c2-r0"], ["fake-slow"]))
        await asyncio.to_thread(model.entered.wait)  # the merged pass is in its first batch
        heavy.cancel()
        await asyncio.sleep(0)
        gate.set()
        return await light

    rows = asyncio.run(main())
    # The batch in progress, then the light caller's sequence alone.
    assert rows.shape == (1, 1) and model.scorer.stats.batches == 2
