"""`beam`'s parameters: `beam_width` partial responses, `expansions` continuations of `chunk_tokens` each."""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from aligner.search.params.base import Maximum, SearchParams
from aligner.search.params.cost import RequestShape, SearchCost


class Params(SearchParams):
    """each step asks `expansions` continuations of `chunk_tokens` from every running beam's token-id prefix
    (prefix caching makes that cheap), scores the partial responses, keeps the best `beam_width`; `prune`
    shrinks the width by that fraction each step (Speculative Rejection); finished beams compete with
    running ones on the same scores"""

    example: ClassVar[dict[str, Any]] = {"beam_width": 2, "expansions": 4, "chunk_tokens": 16}

    strategy: Literal["beam"] = "beam"
    beam_width: Annotated[int, Maximum(16)] = Field(2, ge=1, description="Partial responses kept per step.")
    expansions: Annotated[int, Maximum(16)] = Field(4, ge=1, description="Continuations asked per kept beam and step.")
    chunk_tokens: Annotated[int, Maximum(512)] = Field(32, ge=1, description="Tokens per continuation chunk.")
    prune: float = Field(0.0, ge=0.0, lt=1.0, description="Fraction of the width dropped after each step.")

    def cost(self, shape: RequestShape) -> SearchCost:
        """Step by step as aligner/search/beam.py runs, every kept beam still running (the worst case).

        A step asks one engine request of `expansions` children per running beam, of one chunk each
        (the last chunk is what is left of max_tokens), and scores the children; the best `width` of
        them are kept, and `prune` shrinks the width after each step. The first step starts from one
        empty beam. `candidates` is the most children of one step."""
        max_tokens, chunk, expansions = shape.max_tokens, self.chunk_tokens, self.expansions
        steps = math.ceil(max_tokens / chunk)
        width, kept = self.beam_width, 1
        requests = calls = tokens = widest = 0
        for step in range(steps):
            children = kept * expansions
            requests += kept
            calls += children
            tokens += children * min(chunk, max_tokens - step * chunk)
            widest = max(widest, children)
            next_width = max(1, math.ceil(width * (1 - self.prune))) if self.prune else width
            if min(width, children) == kept and next_width == width:
                # Steady from here: every later step is this one, and together their chunks are the
                # rest of max_tokens (a long request prices in constant time).
                rest = steps - step - 1
                requests += rest * kept
                calls += rest * children
                tokens += children * max(0, max_tokens - (step + 1) * chunk)
                break
            kept, width = min(width, children), next_width
        return SearchCost(
            engine_requests=requests,
            candidates=widest,
            candidate_tokens=tokens,
            scoring_rounds=steps,
            reward_calls=calls,
        )
