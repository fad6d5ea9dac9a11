"""Deterministic fakes for pure-logic tests (budgets, ranking, registries): no model, no engine.

The real-parts standard holds everywhere else; a test uses these only where the engine's output
does not matter to what it checks. `FakeGenerator` satisfies `aligner.engine.base.Generator`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import numpy as np

from aligner.engine.base import ENGINE_USAGE, Candidate, Delta, SamplingSpec, derive_seed
from aligner.rewards import Objective, RewardModel
from aligner.rewards.base import TenantPolicyObjective

WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")


class FakeCharTokenizer:
    """One token per character (id = code point): decoding is exact and easy to reason about."""

    all_special_tokens: tuple[str, ...] = ()
    eos_token_id = 0

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(i) for i in ids)

    def apply_chat_template(
        self, messages: list[dict], tokenize: bool = False, add_generation_prompt: bool = True
    ) -> str:
        return "".join(f"<{m['role']}>{m['content']}\n" for m in messages) + (
            "<assistant>" if add_generation_prompt else ""
        )

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [ord(c) for c in text]}


def fake_text(seed: int | None, index: int) -> str:
    """The text candidate `index` of a request seeded `seed` continues with: words picked by a hash."""
    picks = derive_seed(seed if seed is not None else 0, "fake", index)
    return " ".join(WORDS[(picks >> (3 * i)) % len(WORDS)] for i in range(1 + picks % 7)) + "."


class FakeGenerator:
    """A deterministic `Generator`: candidate i is `text_of(spec.seed, i)`, cut at `max_tokens` characters
    and at a stop string, and counted into `ENGINE_USAGE` like the real engine's requests."""

    def __init__(self, text_of: Callable[[int | None, int], str] = fake_text, max_model_len: int = 2048):
        self.model_name = "fake-generator"
        self.tokenizer = FakeCharTokenizer()
        self.text_of = text_of
        self._max_model_len = max_model_len
        self.requests: list[tuple[int, SamplingSpec]] = []  # (n, spec) of every generate / stream call

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    def _candidate(self, spec: SamplingSpec, index: int, prompt_tokens: int) -> Candidate:
        text = self.text_of(spec.seed, index)[: spec.max_tokens]
        finish = "length" if len(text) == spec.max_tokens else "stop"
        for stop in spec.stop:
            if stop in text:
                text, finish = text[: text.index(stop)], "stop"
        usage = ENGINE_USAGE.get()
        if usage is not None:
            usage.generated_tokens += len(text)
        return Candidate(index=index, token_ids=tuple(ord(c) for c in text), text=text, finish_reason=finish)

    def _count(self, prompt_ids: Sequence[int], prefix_ids: Sequence[int], n: int, spec: SamplingSpec) -> None:
        self.requests.append((n, spec))
        usage = ENGINE_USAGE.get()
        if usage is not None:
            usage.requests += 1
            usage.prefill_tokens += len(prompt_ids) + len(prefix_ids)

    async def generate(
        self, prompt_ids: Sequence[int], spec: SamplingSpec, *, n: int = 1, prefix_ids: Sequence[int] = ()
    ) -> list[Candidate]:
        self._count(prompt_ids, prefix_ids, n, spec)
        return [self._candidate(spec, i, len(prompt_ids)) for i in range(n)]

    async def stream(
        self, prompt_ids: Sequence[int], spec: SamplingSpec, *, prefix_ids: Sequence[int] = ()
    ) -> AsyncIterator[Delta]:
        self._count(prompt_ids, prefix_ids, 1, spec)
        candidate = self._candidate(spec, 0, len(prompt_ids))
        for i, token in enumerate(candidate.token_ids):
            last = i == len(candidate.token_ids) - 1
            yield Delta(text=chr(token), token_ids=(token,), finish_reason=candidate.finish_reason if last else None)

    async def next_token_logprobs(self, prompt_ids: Sequence[int], top_k: int = 20) -> dict[int, float]:
        return {ord("Y"): -0.1, ord("N"): -2.3}

    async def health(self) -> dict[str, Any]:
        return {"model": self.model_name, "unfinished_requests": 0}


class FakeRewardModel(RewardModel):
    """A fake with fixed scores: the catalog logic is under test, not a model."""

    def __init__(self, names, values):
        self.objectives = tuple(Objective(n, n) for n in names)
        self.values = values
        self.calls = 0

    async def score(self, conversation, responses):
        self.calls += 1
        return np.array([self.values] * len(responses), dtype=float)


class FakePolicyModel(FakeRewardModel):
    """A fake whose objectives judge against the tenant's config, as policy_compliance and topic_safety do."""

    def __init__(self, names, values):
        super().__init__(names, values)
        self.objectives = tuple(TenantPolicyObjective(n, n) for n in names)
