"""`beam`'s parameters: `beam_width` partial responses, `expansions` continuations of `chunk_tokens` each."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from aligner.search.params.base import Maximum, SearchParams


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

    def worst_case(self, max_tokens: int, objectives: int) -> tuple[int, int]:
        # Every step asks `expansions` children of each kept beam; the candidates alive at once are
        # one step's children, and together they may run to max_tokens.
        per_step = self.beam_width * self.expansions
        return per_step, per_step * max_tokens
