"""`beam`'s parameters: `beam_width` partial responses, `expansions` continuations of `chunk_tokens` each."""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from aligner.search.params.base import Maximum, SearchParams
from aligner.search.params.cost import RequestShape, SearchCost

# Slack for the float product: 10 · 0.9 is 9.000000000000002, whose ceiling must be 9, not 10.
WIDTH_EPSILON = 1e-9


class Params(SearchParams):
    """each step asks `expansions` continuations of `chunk_tokens` from every running beam's token-id prefix
    (prefix caching makes that cheap), scores the partial responses, keeps the best `beam_width`; `prune`
    shrinks the width by that fraction each step, carried as a fraction: after step k the width is
    ⌈beam_width·(1 − prune)^k⌉, at least 1 (Speculative Rejection); finished beams compete with running
    ones on the same scores"""

    example: ClassVar[dict[str, Any]] = {"beam_width": 2, "expansions": 4, "chunk_tokens": 16}

    strategy: Literal["beam"] = "beam"
    beam_width: Annotated[int, Maximum(16)] = Field(2, ge=1, description="Partial responses kept per step.")
    expansions: Annotated[int, Maximum(16)] = Field(4, ge=1, description="Continuations asked per kept beam and step.")
    chunk_tokens: Annotated[int, Maximum(512)] = Field(32, ge=1, description="Tokens per continuation chunk.")
    prune: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Fraction of the width dropped after each step, carried as a fraction (the width after step k "
        "is ⌈beam_width·(1 − prune)^k⌉, at least 1).",
    )

    def width_at(self, step: int) -> int:
        """The beams kept by step `step` (0: the first): the fractional width ⌈beam_width·(1 − prune)^step⌉,
        at least 1. A closed form of the step, not a width rounded step by step, which a prune below
        1/beam_width would never move (4 · 0.8 = 3.2 rounds back up to 4)."""
        if not self.prune or step == 0:
            return self.beam_width
        return max(1, math.ceil(self.beam_width * (1 - self.prune) ** step - WIDTH_EPSILON))

    def _same_width_until(self, step: int, steps: int) -> int:
        """The first step after `step`, at most `steps`, whose width is below `width_at(step)` (the width only
        shrinks: found by bisection, so a long request with a tiny prune prices in few operations)."""
        width = self.width_at(step)
        low, high = step + 1, steps
        while low < high:
            middle = (low + high) // 2
            if self.width_at(middle) < width:
                high = middle
            else:
                low = middle + 1
        return low

    def cost(self, shape: RequestShape) -> SearchCost:
        """Step by step as aligner/search/beam.py runs, every kept beam still running (the worst case).

        A step asks one engine request of `expansions` children per running beam, of one chunk each
        (the last chunk is what is left of max_tokens), and scores the children; the best `width_at(step)`
        of them are kept. The first step starts from one empty beam. `candidates` is the most children of
        one step. Steps that repeat the one before (the same beams kept, the same width) are priced
        together, so the loop runs once per change of width or of kept beams."""
        max_tokens, chunk, expansions = shape.max_tokens, self.chunk_tokens, self.expansions
        steps = math.ceil(max_tokens / chunk)
        kept, step = 1, 0
        requests = calls = tokens = widest = 0
        while step < steps:
            children = kept * expansions
            next_kept = min(self.width_at(step), children)
            # While the width holds, a step that keeps as many beams as it ran repeats until the width changes.
            until = self._same_width_until(step, steps) if next_kept == kept else step + 1
            repeats = until - step
            requests += repeats * kept
            calls += repeats * children
            # The chunks of steps [step, until) together: up to max_tokens (the last one is what is left).
            tokens += children * (min(until * chunk, max_tokens) - step * chunk)
            widest = max(widest, children)
            kept, step = next_kept, until
        return SearchCost(
            engine_requests=requests,
            candidates=widest,
            candidate_tokens=tokens,
            scoring_rounds=steps,
            reward_calls=calls,
        )
