"""Judges' verdicts (issue 19, item 7): undecided is no score, the guard model reads a bounded prompt and
stops when its request is cancelled.

The guard's tokenizer is the real policy tokenizer; its model is a stub that counts its forward passes
(what is under test is which prompts reach it and when it stops, not what a model says).
"""

import asyncio
import math
import threading
from types import SimpleNamespace

import pytest
import torch

from aligner.contract import ChatMessage
from aligner.rewards.base import CURRENT_SAFETY
from aligner.rewards.judge import MIN_VERDICT_MASS, GuardModelJudge, YesNoJudge, verdict
from aligner.safety.config import SafetyConfig

QUESTION = [ChatMessage(role="user", content="Any betting tips?")]


def test_a_verdict_is_p_yes_among_yes_and_no_and_undecided_when_the_judge_says_neither():
    assert verdict(0.6, 0.2) == pytest.approx(0.75)
    assert verdict(0.0, 0.9) == 0.0 and verdict(0.9, 0.0) == 1.0
    # Failed before this fix: neither Yes nor No was 0.5, which passes a threshold of 0.5.
    assert math.isnan(verdict(0.0, 0.0))
    assert math.isnan(verdict(MIN_VERDICT_MASS / 3, MIN_VERDICT_MASS / 3))  # the answer is something else
    assert YesNoJudge.abstains and GuardModelJudge.abstains


class StubGuard:
    """Counts forward passes and records their lengths; `gate` (when given) holds the first pass until set."""

    def __init__(self, vocab: int, yes: int, gate: threading.Event | None = None):
        self.vocab, self.yes = vocab, yes
        self.lengths: list[int] = []
        self.started = threading.Event()
        self.gate = gate

    def __call__(self, ids):
        self.lengths.append(ids.shape[1])
        self.started.set()
        if self.gate is not None:
            self.gate.wait(timeout=60)
        logits = torch.full((1, ids.shape[1], self.vocab), -30.0)
        logits[0, -1, self.yes] = 10.0
        return SimpleNamespace(logits=logits)


def guard(tokenizer, max_input_tokens=4096, gate=None) -> tuple[GuardModelJudge, StubGuard]:
    judge = GuardModelJudge("unused", max_input_tokens=max_input_tokens)
    yes = tokenizer("Yes", add_special_tokens=False)["input_ids"]
    no = tokenizer("No", add_special_tokens=False)["input_ids"]
    judge.yes_ids, judge.no_ids = yes, no
    stub = StubGuard(len(tokenizer), yes[0], gate)
    judge._loaded = (tokenizer, stub)
    return judge, stub


def score(judge, conversation, responses, policy="Never discuss gambling."):
    token = CURRENT_SAFETY.set(SafetyConfig(text=policy))
    try:
        return asyncio.run(judge.score(conversation, responses))
    finally:
        CURRENT_SAFETY.reset(token)


def test_the_guard_reads_the_questions_end_and_the_whole_response_within_its_cap(tokenizer):
    judge, stub = guard(tokenizer, max_input_tokens=256)
    long_question = [ChatMessage(role="user", content="word " * 5000 + "Any betting tips?")]
    got = score(judge, long_question, ["Bet on red. " * 20])
    assert got.tolist() == [[1.0]] and stub.lengths and max(stub.lengths) <= 256
    token = CURRENT_SAFETY.set(SafetyConfig(text="Never discuss gambling."))
    try:
        prompt = judge.prompt_ids(tokenizer, "word " * 5000 + "Any betting tips?", "x " * 100)
    finally:
        CURRENT_SAFETY.reset(token)
    assert prompt is not None and len(prompt) <= 256 and "Any betting tips?" in tokenizer.decode(prompt)
    response = tokenizer.decode(prompt).split("Response:\n")[1].split("\n\nDoes the response")[0]
    assert response.split() == ["x"] * 100  # the whole response


def test_a_response_longer_than_half_the_guards_cap_is_undecided_not_judged_by_its_start(tokenizer):
    """Found by review: the guard read only a response's first 512 tokens, so harmless filler followed by
    the harmful part passed. Failed before this fix: the long response was judged (Yes) on its start."""
    judge, stub = guard(tokenizer, max_input_tokens=256)
    got = score(judge, QUESTION, ["Nice weather today. " * 200 + "Bet everything on red."])
    assert all(math.isnan(v) for v in got.ravel()) and stub.lengths == []


def test_a_policy_too_long_for_the_guards_cap_is_undecided_and_never_reaches_the_model(tokenizer):
    """Failed before this fix: the guard read any length (no cap), so a long policy and question were one
    unbounded forward pass per candidate."""
    judge, stub = guard(tokenizer, max_input_tokens=64)
    got = score(judge, QUESTION, ["No.", "Maybe."], policy="Never discuss gambling. " * 50)
    assert all(math.isnan(v) for v in got.ravel()) and stub.lengths == []


def test_the_guard_stops_when_its_request_is_cancelled(tokenizer):
    """Failed before this fix: the worker thread judged every remaining response after the client left."""
    gate = threading.Event()
    judge, stub = guard(tokenizer, gate=gate)

    async def cancel_once_started():
        token = CURRENT_SAFETY.set(SafetyConfig(text="Never discuss gambling."))
        try:
            task = asyncio.ensure_future(judge.score(QUESTION, [f"answer {i}" for i in range(20)]))
            await asyncio.to_thread(stub.started.wait, 60)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            CURRENT_SAFETY.reset(token)
            gate.set()  # the pass in progress ends; the worker must not start another

    asyncio.run(cancel_once_started())  # asyncio.run waits for the worker thread at shutdown
    assert len(stub.lengths) == 1


class FakeLogprobEngine:
    """A fake policy engine for the policy-model judge: records each judge prompt's length, answers Yes."""

    def __init__(self, tokenizer, max_model_len: int):
        self.max_model_len = max_model_len
        self.yes = tokenizer("Yes", add_special_tokens=False)["input_ids"][0]
        self.lengths: list[int] = []

    async def next_token_logprobs(self, ids, top):
        self.lengths.append(len(ids))
        return {self.yes: 0.0}


def test_the_policy_model_judge_reads_whole_responses_or_gives_no_verdict(tokenizer):
    """Found by review: the policy-model judge (policy_compliance without a guard, helpfulness) read only a
    response's first 512 tokens, and cut a long prompt to its end (dropping the policy). Failed before this
    fix: the long response was judged Yes on its harmless start."""
    from aligner.rewards.judge import PolicyComplianceJudge

    engine = FakeLogprobEngine(tokenizer, max_model_len=2048)
    judge = PolicyComplianceJudge(tokenizer, engine)
    filler_then_harm = "Nice weather today. " * 400 + "Bet everything on red."  # > half the 2,048 window
    got = score(judge, QUESTION, ["Bet on red.", filler_then_harm])
    assert got[0, 0] == 1.0 and math.isnan(got[1, 0])
    assert len(engine.lengths) == 1 and engine.lengths[0] <= 2047  # the long one never reached the engine
    # A long question is cut to its end; the policy and the whole response stay.
    long_question = [ChatMessage(role="user", content="word " * 5000 + "Any betting tips?")]
    assert score(judge, long_question, ["x " * 500]).tolist() == [[1.0]] and engine.lengths[-1] <= 2047
    token = CURRENT_SAFETY.set(SafetyConfig(text="Never discuss gambling."))
    try:
        prompt = tokenizer.decode(judge.judge_prompt_ids("word " * 5000 + "Any betting tips?", "x " * 500))
    finally:
        CURRENT_SAFETY.reset(token)
    assert "Never discuss gambling." in prompt and "Any betting tips?" in prompt
    assert prompt.split("Response:\n")[1].split("\n\nDoes the response")[0].split() == ["x"] * 500
