"""`rejection`'s parameters: rounds of `batch` candidates until one reaches `threshold`."""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator

from aligner.errors import InvalidRequest
from aligner.search.params.base import Maximum, SearchParams


class Params(SearchParams):
    """rounds of `batch` until a feasible candidate's combined score ≥ `threshold` (required) or the budget
    is spent; returns the best seen and `threshold_met`"""

    example: ClassVar[dict[str, Any]] = {"batch": 4, "threshold": 0.6, "max_rounds": 3}

    strategy: Literal["rejection"] = "rejection"
    batch: Annotated[int, Maximum(64)] = Field(4, ge=1, description="Candidates sampled per round.")
    threshold: float | None = Field(None, description="Stop once a feasible candidate's combined score reaches it.")
    max_rounds: Annotated[int, Maximum(64)] = Field(
        8, ge=1, description="Most rounds when no budget ends the search first."
    )

    @field_validator("threshold")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise InvalidRequest("search.threshold", "must be a finite number")
        return value

    def check(self) -> None:
        if self.threshold is None:
            raise InvalidRequest("search.threshold", "rejection sampling needs a threshold on the combined score")

    def worst_case(self, max_tokens: int, objectives: int) -> tuple[int, int]:
        count = self.batch * self.max_rounds
        return count, count * max_tokens
