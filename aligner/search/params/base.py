"""`SearchParams`, the base of every strategy's `Params`, and `Maximum`, a field's default server limit."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from aligner.errors import InvalidRequest


@dataclass(frozen=True)
class Maximum:
    """A field's largest value unless the server's `SearchLimits` has a field of the same name.

    `Annotated[int, Maximum(64)]`: an explicit value above it is refused; a default above it becomes it."""

    value: int


class SearchParams(BaseModel):
    """The `search` object of a request, as one strategy reads it: `strategy` and its parameters."""

    # Strict types: JSON's "5" or true is not an integer; nothing is coerced silently.
    model_config = ConfigDict(extra="forbid", strict=True)

    # Ranks candidates under the request's direction: it needs a preference_vector, and a temperature
    # above 0 (greedy candidates would all be the same).
    ranked: ClassVar[bool] = True

    # A search of this strategy sized to run on a CPU engine in seconds: what `aligner bench search`
    # sends for it (with a preference_vector when `ranked`). Every value passes this model's checks.
    example: ClassVar[dict[str, Any]] = {}

    # Each strategy narrows it to `Literal["<name>"] = "<name>"`: its name on the wire.
    strategy: str

    @classmethod
    def strategy_name(cls) -> str:
        return cls.model_fields["strategy"].default

    @classmethod
    def maxima(cls) -> dict[str, int]:
        """The declared `Maximum` of each field that has one."""
        return {
            name: meta.value
            for name, field in cls.model_fields.items()
            for meta in field.metadata
            if isinstance(meta, Maximum)
        }

    @abstractmethod
    def worst_case(self, max_tokens: int, objectives: int) -> tuple[int, int]:
        """(candidates, generated tokens) this search may cost at most, before any budget, when the
        request asks `max_tokens` per candidate and its direction names `objectives` objectives."""

    def check(self) -> None:
        """Refuse what the parameters cannot mean together (InvalidRequest); runs after the field checks."""

    def check_request(
        self,
        *,
        objectives: int | None,
        temperature: float,
        max_tokens: int,
        budget_tokens: int | None,
        max_candidates: int,
        max_search_tokens: int,
    ) -> None:
        """The rules between this search and the rest of a request (InvalidRequest names the field).

        `objectives`: the size of the request's direction (None: it has none); `budget_tokens`: its
        budget.max_candidate_tokens; the maxima are the server's `SearchLimits`. The total-work check
        prices the search by `worst_case`, so each strategy is priced by its own cost."""
        name = self.strategy
        if self.ranked and objectives is None:
            raise InvalidRequest(
                "preference_vector", f"{name} ranks candidates by a direction; give a preference_vector"
            )
        self.check()
        if self.ranked and temperature == 0:
            raise InvalidRequest(
                "temperature",
                f"is 0 (greedy), so every {name} candidate would be the same; use a temperature above 0 or strategy "
                "'sample'",
            )
        candidates, tokens = self.worst_case(max_tokens, objectives or 0)
        if candidates > max_candidates:
            raise InvalidRequest(
                "search",
                f"{name} may generate up to {candidates} candidates; the configured maximum per request is "
                f"{max_candidates} (max_candidates)",
            )
        if budget_tokens is not None:
            tokens = min(tokens, budget_tokens)
        if tokens > max_search_tokens:
            raise InvalidRequest(
                "search",
                f"{name} may generate up to {tokens} tokens over all candidates; the configured maximum per request "
                f"is {max_search_tokens} (max_search_tokens): lower max_tokens or the search size, or set "
                "budget.max_candidate_tokens",
            )
