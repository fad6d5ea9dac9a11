"""`best_of_n`'s parameters: `n` candidates from one engine request."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from aligner.search.params.base import Maximum, SearchParams


class Params(SearchParams):
    """one engine request with `n` (the prompt's KV is shared), score all, keep the best feasible"""

    example: ClassVar[dict[str, Any]] = {"n": 8}

    strategy: Literal["best_of_n"] = "best_of_n"
    n: Annotated[int, Maximum(64)] = Field(4, ge=1, description="Candidates in one engine request.")

    def worst_case(self, max_tokens: int, objectives: int) -> tuple[int, int]:
        return self.n, self.n * max_tokens
