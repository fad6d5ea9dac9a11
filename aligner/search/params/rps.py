"""`rps`'s parameters: `n` candidates under each of `neighbors` directions at angle `spread`."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from aligner.search.params.base import Maximum, SearchParams
from aligner.search.params.cost import RequestShape, SearchCost


class Params(SearchParams):
    """robust preference selection: neighbouring directions at angle `spread` (degrees); for models that
    read directions each is rendered in its own prompt; otherwise the best candidate under each neighbour
    is shortlisted; the pick is by the original direction"""

    example: ClassVar[dict[str, Any]] = {"neighbors": 4, "n": 2, "spread": 15}

    strategy: Literal["rps"] = "rps"
    n: Annotated[int, Maximum(64)] = Field(4, ge=1, description="Candidates per direction.")
    neighbors: Annotated[int, Maximum(16)] = Field(4, ge=1, description="Neighbouring directions sampled.")
    spread: float = Field(
        15.0, gt=0.0, le=90.0, description="Angle in degrees between the direction and its neighbours."
    )

    def cost(self, shape: RequestShape) -> SearchCost:
        # A direction over one objective has no neighbours: RPS is then best-of-n. Models that read
        # directions get one engine request per direction (others one in all): the larger is priced.
        directions = self.neighbors if shape.objectives > 1 else 1
        count = self.n * directions
        return SearchCost(
            engine_requests=directions,
            candidates=count,
            candidate_tokens=count * shape.max_tokens,
            scoring_rounds=1,
            reward_calls=count,
        )
