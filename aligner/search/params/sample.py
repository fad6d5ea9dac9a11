"""`sample`'s parameters: none; one candidate."""

from __future__ import annotations

from typing import ClassVar, Literal

from aligner.search.params.base import SearchParams


class Params(SearchParams):
    """plain generation; streams tokens"""

    ranked: ClassVar[bool] = False

    strategy: Literal["sample"] = "sample"

    def worst_case(self, max_tokens: int, objectives: int) -> tuple[int, int]:
        return 1, max_tokens
