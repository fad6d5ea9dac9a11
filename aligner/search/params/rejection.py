"""`rejection`'s parameters: rounds of `batch` candidates until one reaches `threshold`."""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator

from aligner.errors import InvalidRequest
from aligner.search.params.base import Maximum, SearchParams
from aligner.search.params.cost import RequestShape, SearchCost


class Params(SearchParams):
    """rounds of `batch` until a feasible candidate's combined score ≥ `threshold` (without a threshold: a
    candidate passing every check; one of the two is required) or the budget is spent; returns the best seen
    and `threshold_met`"""

    example: ClassVar[dict[str, Any]] = {"batch": 4, "threshold": 0.6, "max_rounds": 3}

    strategy: Literal["rejection"] = "rejection"
    batch: Annotated[int, Maximum(64)] = Field(4, ge=1, description="Candidates sampled per round.")
    threshold: float | None = Field(
        None,
        description="Stop once a feasible candidate's combined score reaches it; may be left out with `checks`: "
        "then the first candidate that passes them all (and the constraints) stops the search.",
    )
    max_rounds: Annotated[int, Maximum(64)] = Field(
        8, ge=1, description="Most rounds when no budget ends the search first."
    )

    @field_validator("threshold")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise InvalidRequest("search.threshold", "must be a finite number")
        return value

    def check(self, shape: RequestShape) -> None:
        if self.threshold is None and not shape.checks:
            raise InvalidRequest(
                "search.threshold",
                "rejection sampling needs a threshold on the combined score, or checks (it then stops at the first "
                "candidate that passes them all)",
            )

    def sequences(self, shape: RequestShape) -> int:
        return self.batch  # one round's candidates at a time

    def cost(self, shape: RequestShape) -> SearchCost:
        # Every round is one engine request of `batch` candidates, all scored.
        rounds = self.max_rounds
        count = self.batch * rounds
        return SearchCost(
            engine_requests=rounds,
            candidates=count,
            candidate_tokens=count * shape.max_tokens,
            scoring_rounds=rounds,
            reward_calls=count,
        )
