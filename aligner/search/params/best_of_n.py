"""`best_of_n`'s parameters: `n` candidates from one engine request, or with `adaptive` in rounds of `batch`
until more draws are unlikely to beat the best so far (`aligner/search/best_of_n.py` states the rule)."""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from aligner.search.params.base import Maximum, SearchParams
from aligner.search.params.cost import RequestShape, SearchCost


class Params(SearchParams):
    """one engine request with `n` (the prompt's KV is shared), score all, keep the best feasible; with
    `adaptive`, rounds of `batch` up to `n`, stopping once the estimated chance that the next round beats the
    best by more than `margin` is below `stop_probability` (`stopped_by: converged`), or once a candidate
    passes every check (`checks_passed`)"""

    example: ClassVar[dict[str, Any]] = {"n": 8}

    strategy: Literal["best_of_n"] = "best_of_n"
    n: Annotated[int, Maximum(64)] = Field(4, ge=1, description="Candidates in all (adaptive: at most).")
    adaptive: bool = Field(
        False, description="Draw in rounds of `batch` and stop early when more draws are unlikely to pay."
    )
    batch: Annotated[int, Maximum(64)] = Field(4, ge=1, description="Candidates per round (adaptive).")
    margin: float = Field(
        0.01, ge=0.0, le=1.0, description="Adaptive: the least gain in combined score worth another round."
    )
    stop_probability: float = Field(
        0.1,
        gt=0.0,
        lt=1.0,
        description="Adaptive: stop once the chance that the next round gains more than `margin` is below this.",
    )

    def round_size(self) -> int:
        """Candidates per round: `batch`, at most `n` (a larger batch is one round of `n`); all `n` when not
        adaptive (`batch`, `margin` and `stop_probability` are read only with `adaptive`)."""
        return min(self.batch, self.n) if self.adaptive else self.n

    def rounds(self) -> int:
        return math.ceil(self.n / self.round_size())

    def sequences(self, shape: RequestShape) -> int:
        return self.round_size()

    def cost(self, shape: RequestShape) -> SearchCost:
        n, rounds = self.n, self.rounds()
        return SearchCost(
            engine_requests=rounds,
            candidates=n,
            candidate_tokens=n * shape.max_tokens,
            scoring_rounds=rounds,
            reward_calls=n,
        )
