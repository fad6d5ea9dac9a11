"""`best_of_n`'s parameters: `n` candidates from one engine request."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from aligner.search.params.base import Maximum, SearchParams
from aligner.search.params.cost import RequestShape, SearchCost


class Params(SearchParams):
    """one engine request with `n` (the prompt's KV is shared), score all, keep the best feasible"""

    example: ClassVar[dict[str, Any]] = {"n": 8}

    strategy: Literal["best_of_n"] = "best_of_n"
    n: Annotated[int, Maximum(64)] = Field(4, ge=1, description="Candidates in one engine request.")

    def cost(self, shape: RequestShape) -> SearchCost:
        n = self.n
        return SearchCost(
            engine_requests=1, candidates=n, candidate_tokens=n * shape.max_tokens, scoring_rounds=1, reward_calls=n
        )
