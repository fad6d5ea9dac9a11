"""What the search needs from a generator: the `Generator` protocol and the values that cross it.

`Engine` (aligner/engine/vllm.py) is the real implementation; tests of pure logic use the
deterministic `FakeGenerator` of tests/fakes.py. Nothing here imports vLLM, so search code that
types against it stays importable without an engine.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from `parts` (a hash: different parts give unrelated seeds).

    vLLM gets `derive_seed(seed)` for a request with `seed`: it seeds candidate i with seed + i, so
    requests seeded 1 and 2 would share all but one candidate; hashed, two requests' candidate seeds
    (h(s), h(s) + 1, ...) overlap only if their hashes fall within n of each other, a chance of about
    n / 2^62."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8, person=b"aligner-seed").digest()
    return int.from_bytes(digest, "big") >> 1


@dataclass(frozen=True)
class SamplingSpec:
    """Per-request decoding knobs, independent of vLLM's types."""

    max_tokens: int
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Candidate:
    """One generated continuation; token_ids and text cover only the new tokens."""

    index: int
    token_ids: tuple[int, ...]
    text: str
    finish_reason: str


@dataclass(frozen=True)
class Delta:
    """A streamed piece of one candidate."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: str | None


@dataclass
class EngineUsage:
    """Every engine request made while it is the current one, whoever made it (search, judge, ...)."""

    requests: int = 0
    prefill_tokens: int = 0
    generated_tokens: int = 0


# The usage of the request being served; asyncio tasks inherit it, so work spread over
# tasks (beam's siblings, the judge's prompts) is counted into the same object.
ENGINE_USAGE: ContextVar[EngineUsage | None] = ContextVar("aligner_engine_usage", default=None)

# The priority tier of the tenant whose request is being served (0, the lowest, unless a policy gives
# one): inherited the same way, so every engine request of the search, the judge's included, carries
# it. An engine with `scheduling_policy: priority` runs higher tiers first.
ENGINE_PRIORITY: ContextVar[int] = ContextVar("aligner_engine_priority", default=0)


@contextlib.contextmanager
def engine_priority(tier: int) -> Iterator[None]:
    """Engine requests made inside the block (and by the tasks it starts) carry priority `tier`."""
    token = ENGINE_PRIORITY.set(tier)
    try:
        yield
    finally:
        # An async generator closed by the loop's finalizer runs this in another task's context, where
        # the value was never set: nothing to undo there.
        with contextlib.suppress(ValueError):
            ENGINE_PRIORITY.reset(token)


class Generator(Protocol):
    """A policy model that continues token-id prompts (what the search and the judge call)."""

    model_name: str
    # A Hugging Face tokenizer: `decode`, `apply_chat_template`, `eos_token_id`.
    tokenizer: Any

    @property
    def max_model_len(self) -> int:
        """Context window in tokens (prompt + response)."""
        ...

    async def generate(
        self, prompt_ids: Sequence[int], spec: SamplingSpec, *, n: int = 1, prefix_ids: Sequence[int] = ()
    ) -> list[Candidate]:
        """`n` continuations of prompt + prefix; cancelling the awaiting task aborts them."""
        ...

    def stream(
        self, prompt_ids: Sequence[int], spec: SamplingSpec, *, prefix_ids: Sequence[int] = ()
    ) -> AsyncIterator[Delta]:
        """One continuation, delivered as it is decoded; closing the iterator aborts it."""
        ...

    async def next_token_logprobs(self, prompt_ids: Sequence[int], top_k: int = 20) -> dict[int, float]:
        """Log-probabilities of the `top_k` most likely next tokens after `prompt_ids`."""
        ...

    async def health(self) -> dict[str, Any]:
        """A short status; raises EngineUnavailable when the generator cannot serve."""
        ...
