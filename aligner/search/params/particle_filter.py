"""`particle_filter`'s parameters: `particles` partial responses extended `chunk_tokens` at a time, reweighted
by their combined score and resampled each step (aligner/search/particle_filter.py)."""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from aligner.search.params.base import Maximum, SearchParams
from aligner.search.params.cost import RequestShape, SearchCost


class Params(SearchParams):
    """particle-based Monte Carlo search: `particles` partial responses, each step extended by `chunk_tokens`
    on the engine (one request per distinct prefix), weighted by softmax(combined score / `weight_temperature`)
    over the best tier (passing the tenant's thresholds, then feasible) and resampled in proportion to their
    weights with a generator seeded by the request's seed; finished particles stay in the population; the best
    particle at the end is returned"""

    example: ClassVar[dict[str, Any]] = {"particles": 4, "chunk_tokens": 16}

    strategy: Literal["particle_filter"] = "particle_filter"
    particles: Annotated[int, Maximum(32)] = Field(4, ge=1, description="Partial responses in the population.")
    chunk_tokens: Annotated[int, Maximum(512)] = Field(32, ge=1, description="Tokens per continuation chunk.")
    weight_temperature: float = Field(
        0.2,
        ge=0.001,
        le=100.0,
        description="Softmax temperature of the resampling weights over combined scores: lower follows the "
        "best particles more greedily.",
    )

    def cost(self, shape: RequestShape) -> SearchCost:
        """Every step extends every particle (the worst case: none finishes early, no two share a prefix):
        one engine request and one reward call per particle and step, `max_tokens` per particle in all."""
        steps = math.ceil(shape.max_tokens / self.chunk_tokens)
        p = self.particles
        return SearchCost(
            engine_requests=p * steps,
            candidates=p,
            candidate_tokens=p * shape.max_tokens,
            scoring_rounds=steps,
            reward_calls=p * steps,
        )
