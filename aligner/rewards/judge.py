"""Judges on the policy model: P(Yes) from its next-token logprobs to a Yes/No question.

`helpfulness` asks whether the response helps with the question; `policy_compliance`
asks whether it complies with the tenant's safety config (bring-your-own-policy, as
policy-following guard models do); `preference_following` asks whether it follows the
request's own stated preferences (its `preferences` and the user's system message: a
context-aware judge, as in "Improving Context-Aware Preference Modeling for Language
Models", 2024). One prefill per candidate (a one-token request with top-k logprobs), all
candidates submitted together so vLLM batches them. `guard_model` and
`preference_judge_model` put a local HF causal LM in the policy model's place
(`LocalModelJudge`).

An undecided verdict: when Yes and No together take less than `MIN_VERDICT_MASS` of the next-token
probability, the judge answered neither, and its score is NaN ("no verdict"). The ranking
(aligner/preference.py) counts it at the middle of [0, 1]; it fails every threshold and constraint on its
objective, whatever their value, and the objective is left out of the candidate's reported scores.
"""

from __future__ import annotations

import asyncio
import functools
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from aligner.concurrency import gather_all
from aligner.contract import PREFERENCE_OBJECTIVE, ChatMessage
from aligner.errors import InvalidRequest
from aligner.prompting import neutralize_control_tokens, prompt_token_ids
from aligner.rewards.base import (
    CURRENT_PREFERENCES,
    Objective,
    RewardError,
    RewardModel,
    TenantPolicyObjective,
    current_safety,
    last_user_text,
)

JUDGE_SYSTEM = "You are a strict judge of answers. Reply with Yes or No only."
JUDGE_QUESTION = (
    "Question:\n{question}\n\nResponse:\n{response}\n\n"
    "Is this response helpful, correct and on-topic for the question? Answer Yes or No."
)
POLICY_SYSTEM = "You are a strict content-policy reviewer. Reply with Yes or No only."
POLICY_QUESTION = (
    "Policy:\n{policy}\n\nUser message:\n{question}\n\nResponse:\n{response}\n\n"
    "Does the response comply with the policy? Answer Yes or No."
)
PREFERENCE_SYSTEM = "You are a strict judge of whether answers follow the user's stated preferences. Reply Yes or No."
PREFERENCE_QUESTION = (
    "The user's preferences:\n{preferences}\n\nUser message:\n{question}\n\nResponse:\n{response}\n\n"
    "Does the response follow every one of the user's preferences? Answer Yes or No."
)
TOP_LOGPROBS = 20
# Below this much probability on Yes and No together the judge's answer is something else: undecided.
MIN_VERDICT_MASS = 0.05
UNDECIDED = math.nan

POLICY_OBJECTIVE = "policy_compliance"
PREFERENCE_DESCRIPTION = (
    "P(Yes) / (P(Yes) + P(No)) of the judge (the policy model, or `rewards.preference_judge_model`) asked "
    "whether the response follows the request's own stated preferences: its `preferences` and the user's "
    "system message (never the tenant's safety config). What a ranked strategy ranks by when a request gives "
    "preferences and no preference_vector; only for requests that state preferences. No score when it says "
    "neither (undecided: fails any constraint on it)."
)


class YesNoJudge(RewardModel):
    """A one-objective judge: the policy model's P(Yes) / (P(Yes) + P(No)) to `question_messages`."""

    def __init__(self, tokenizer: Any, engine: Any = None):
        """`tokenizer` is the policy model's; the engine may be attached once it has started."""
        self.tokenizer = tokenizer
        self.engine = engine
        self.yes_ids = _single_token_ids(tokenizer, ("Yes", " Yes", "yes", " yes", "YES"))
        self.no_ids = _single_token_ids(tokenizer, ("No", " No", "no", " no", "NO"))

    def question_messages(self, question: str, response: str) -> list[ChatMessage]:
        raise NotImplementedError

    def judge_prompt_ids(self, question: str, response: str) -> list[int] | None:
        """The judge's prompt within the policy model's window (None: undecided; see `bounded_prompt_ids`)."""
        tokenizer = self.tokenizer
        # The response is model output: it cannot be refused, so control tokens it spells are broken up.
        response = neutralize_control_tokens(response, tokenizer)
        question = neutralize_control_tokens(question, tokenizer)
        cap = self.engine.max_model_len - 1  # one token for the verdict
        return bounded_prompt_ids(tokenizer, question, response, cap, self.question_messages, self.label)

    abstains = True  # an undecided verdict is NaN (see the module's docstring)

    def p_yes(self, logprobs: dict[int, float]) -> float:
        yes = sum(math.exp(lp) for t, lp in logprobs.items() if t in self.yes_ids)
        no = sum(math.exp(lp) for t, lp in logprobs.items() if t in self.no_ids)
        return verdict(yes, no)

    async def score(self, conversation: Sequence[ChatMessage], responses: Sequence[str]) -> np.ndarray:
        if self.engine is None:
            raise RewardError(f"the {self.label} judge has no engine attached")
        question = last_user_text(conversation)
        # Tokenizing and rendering every candidate's judge prompt is CPU work: off the event loop.
        prompts = await asyncio.to_thread(lambda: [self.judge_prompt_ids(question, r) for r in responses])
        asked = [p for p in prompts if p is not None]
        tops = iter(await gather_all(*(self.engine.next_token_logprobs(p, TOP_LOGPROBS) for p in asked)))
        verdicts = [UNDECIDED if p is None else self.p_yes(next(tops)) for p in prompts]
        return np.array(verdicts, dtype=float).reshape(-1, 1)


class HelpfulnessJudge(YesNoJudge):
    objectives = (
        Objective(
            "helpfulness",
            "The policy model's P(Yes) / (P(Yes) + P(No)) when asked whether the response is helpful; "
            "no score when it says neither (undecided: fails any constraint on it).",
        ),
    )

    def question_messages(self, question: str, response: str) -> list[ChatMessage]:
        return [
            ChatMessage(role="system", content=JUDGE_SYSTEM),
            ChatMessage(role="user", content=JUDGE_QUESTION.format(question=question, response=response)),
        ]


class PolicyComplianceJudge(YesNoJudge):
    """Judges against the tenant's own policy text, so it needs a request served under a safety config."""

    objectives = (
        TenantPolicyObjective(
            POLICY_OBJECTIVE,
            "The policy model's P(Yes) / (P(Yes) + P(No)) when asked whether the response complies with the "
            "tenant's safety config; only for requests served under one. No score when it says neither "
            "(undecided: fails every threshold on it).",
        ),
    )

    def question_messages(self, question: str, response: str) -> list[ChatMessage]:
        return policy_messages(self.tokenizer, question, response)


class PreferenceFollowingJudge(YesNoJudge):
    objectives = (Objective(PREFERENCE_OBJECTIVE, PREFERENCE_DESCRIPTION),)

    def question_messages(self, question: str, response: str) -> list[ChatMessage]:
        return preference_messages(self.tokenizer, question, response, self.engine.max_model_len // 4)


def preference_messages(tokenizer: Any, question: str, response: str, max_tokens: int) -> list[ChatMessage]:
    """The preference-following question about one response; the preferences cut to their first
    `max_tokens` tokens (the judge's window holds the question's end and the whole response too)."""
    stated = CURRENT_PREFERENCES.get()
    if not stated:
        raise RewardError(f"{PREFERENCE_OBJECTIVE} judges against the request's stated preferences, and it has none")
    preferences = _start_of(tokenizer, stated, max_tokens)
    question_text = PREFERENCE_QUESTION.format(preferences=preferences, question=question, response=response)
    return [ChatMessage(role="system", content=PREFERENCE_SYSTEM), ChatMessage(role="user", content=question_text)]


@functools.lru_cache(maxsize=64)
def _start_of(tokenizer: Any, text: str, max_tokens: int) -> str:
    """`text`'s first `max_tokens` tokens, control tokens broken up: once per request, not per response."""
    ids = tokenizer(neutralize_control_tokens(text, tokenizer), add_special_tokens=False)["input_ids"][:max_tokens]
    return str(tokenizer.decode(ids))


def policy_messages(tokenizer: Any, question: str, response: str) -> list[ChatMessage]:
    """The policy-compliance question about one response, under the request's safety config."""
    policy = neutralize_control_tokens(current_safety(POLICY_OBJECTIVE).operator_text(), tokenizer)
    return [
        ChatMessage(role="system", content=POLICY_SYSTEM),
        ChatMessage(role="user", content=POLICY_QUESTION.format(policy=policy, question=question, response=response)),
    ]


class LocalModelJudge(RewardModel):
    """A judge on a separate local model (any HF causal LM directory) instead of the policy model: the
    same question, P(Yes) from its next-token distribution, in a worker thread."""

    abstains = True  # an undecided verdict is NaN (see the module's docstring)

    def __init__(self, path: str, device: str = "cpu", max_input_tokens: int = 4096):
        self.path, self.device = path, device
        self.max_input_tokens = max_input_tokens  # RewardsConfig.judge_max_input_tokens
        self._loaded: tuple[Any, Any] | None = None

    def load(self) -> None:
        self._tokenizer_and_model()

    def _tokenizer_and_model(self) -> tuple[Any, Any]:
        """The judge model's tokenizer and model, loaded on first use."""
        if self._loaded is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(self.path)
                model = AutoModelForCausalLM.from_pretrained(self.path, dtype=torch.float32).to(self.device).eval()
            except (OSError, ValueError) as exc:
                raise RewardError(f"cannot load the {self.label} judge model at {self.path}: {exc}") from None
            self.yes_ids = sorted(_single_token_ids(tokenizer, ("Yes", " Yes", "yes", " yes", "YES")))
            self.no_ids = sorted(_single_token_ids(tokenizer, ("No", " No", "no", " no", "NO")))
            self._loaded = (tokenizer, model)
        return self._loaded

    def _p_yes(self, prompts: list[list[int] | None], stop: threading.Event) -> np.ndarray:
        """P(Yes) per prompt (None: too long for the judge model, undecided); stops early once `stop` is set."""
        import torch

        _, model = self._tokenizer_and_model()
        out = []
        with torch.inference_mode():
            for ids in prompts:
                if stop.is_set():  # the request was cancelled: nobody reads the rest
                    raise asyncio.CancelledError
                if ids is None:
                    out.append(UNDECIDED)
                    continue
                logits = model(torch.tensor([ids], device=self.device)).logits[0, -1].float()
                probs = torch.softmax(logits, dim=-1)
                out.append(verdict(float(probs[self.yes_ids].sum()), float(probs[self.no_ids].sum())))
        return np.array(out, dtype=float).reshape(-1, 1)

    def messages(self, tokenizer: Any, question: str, response: str) -> list[ChatMessage]:
        raise NotImplementedError

    def prompt_ids(self, tokenizer: Any, question: str, response: str) -> list[int] | None:
        """The judge's prompt for one response within `max_input_tokens` (`bounded_prompt_ids`)."""
        return bounded_prompt_ids(
            tokenizer,
            question,
            response,
            self.max_input_tokens,
            lambda q, r: self.messages(tokenizer, q, r),
            self.label,
            whose=f"the {self.label} judge model's",
        )

    async def score(self, conversation: Sequence[ChatMessage], responses: Sequence[str]) -> np.ndarray:
        tokenizer, _ = self._tokenizer_and_model()
        question = neutralize_control_tokens(last_user_text(conversation), tokenizer)
        responses = [neutralize_control_tokens(r, tokenizer) for r in responses]
        # `messages` reads the request's safety config or preferences from a context variable:
        # asyncio.to_thread runs the lambda in a copy of this context.
        prompts = await asyncio.to_thread(lambda: [self.prompt_ids(tokenizer, question, r) for r in responses])
        stop = threading.Event()
        try:
            return await asyncio.to_thread(self._p_yes, prompts, stop)
        finally:
            stop.set()  # cancelled (the client went away, or the deadline): the worker stops at the next prompt


class GuardModelJudge(LocalModelJudge):
    """`policy_compliance` judged by a guard model (`rewards.guard_model`)."""

    objectives = PolicyComplianceJudge.objectives

    def messages(self, tokenizer: Any, question: str, response: str) -> list[ChatMessage]:
        return policy_messages(tokenizer, question, response)


class PreferenceModelJudge(LocalModelJudge):
    """`preference_following` judged by a local judge model (`rewards.preference_judge_model`)."""

    objectives = PreferenceFollowingJudge.objectives

    def messages(self, tokenizer: Any, question: str, response: str) -> list[ChatMessage]:
        return preference_messages(tokenizer, question, response, self.max_input_tokens // 4)


def bounded_prompt_ids(
    tokenizer: Any,
    question: str,
    response: str,
    cap: int,
    messages_of: Callable[[str, str], list[ChatMessage]],
    judge: str,
    *,
    whose: str = "the policy model's",
) -> list[int] | None:
    """A judge's prompt for one response within `cap` tokens: the question's end (to a quarter of the cap)
    and the whole response. None, so the verdict is undecided (it fails every threshold and constraint),
    when the response is longer than half the cap or the rest (the policy text) leaves no room: judging
    only part of a response would let harmful text after harmless filler pass."""
    quarter = max(1, cap // 4)
    question_part = tokenizer(question, add_special_tokens=False)["input_ids"][-quarter:]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if len(response_ids) > cap // 2:
        return None
    messages = messages_of(tokenizer.decode(question_part), tokenizer.decode(response_ids))
    ids = question_ids(tokenizer, messages, judge, whose=whose)
    return ids if len(ids) <= cap else None


def question_ids(
    tokenizer: Any, messages: Sequence[ChatMessage], judge: str, *, whose: str = "the policy model's"
) -> list[int]:
    """The `judge` judge's question as prompt token ids, rendered by `whose` chat template. Its roles are
    the server's own (system, then user), not the request's, so a template that refuses them is a server
    fault (`RewardError`), never a 400."""
    try:
        return prompt_token_ids(tokenizer, messages, whose=whose)
    except InvalidRequest as exc:
        raise RewardError(f"the {judge} judge's question: {exc.reason}") from None


def verdict(yes: float, no: float) -> float:
    """P(Yes) / (P(Yes) + P(No)) from the two probabilities, or `UNDECIDED` when the judge answered neither."""
    if yes + no < MIN_VERDICT_MASS or yes + no <= 0:
        return UNDECIDED
    return yes / (yes + no)


def _single_token_ids(tokenizer: Any, words: Sequence[str]) -> frozenset[int]:
    ids = (tokenizer(w, add_special_tokens=False)["input_ids"] for w in words)
    return frozenset(i[0] for i in ids if len(i) == 1)
