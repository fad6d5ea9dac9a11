"""`sample`'s parameters: none; one candidate."""

from __future__ import annotations

from typing import ClassVar, Literal

from aligner.search.params.base import SearchParams
from aligner.search.params.cost import RequestShape, SearchCost


class Params(SearchParams):
    """plain generation; streams tokens"""

    ranked: ClassVar[bool] = False

    strategy: Literal["sample"] = "sample"

    def cost(self, shape: RequestShape) -> SearchCost:
        scored = 1 if shape.scored else 0  # the response is scored once when the request names objectives
        return SearchCost(
            engine_requests=1,
            candidates=1,
            candidate_tokens=shape.max_tokens,
            scoring_rounds=scored,
            reward_calls=scored,
        )
