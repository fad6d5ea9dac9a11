"""`SearchParams`, the base of every strategy's `Params` (its fields, its checks, its cost), and `Maximum`,
a field's default server limit."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from aligner.errors import InvalidRequest
from aligner.search.params.cost import RequestShape, SearchCost, check_cost

if TYPE_CHECKING:  # the contract imports this module; these are only types here
    from aligner.limits import Budget, SearchLimits


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
    def cost(self, shape: RequestShape) -> SearchCost:
        """The most this search may cost (every dimension of `SearchCost`), before any budget, for a
        request of `shape`. Judge prefills are left at 0: they are priced from the reward calls where
        the objectives are known (aligner/search/admission.py)."""

    def sequences(self, shape: RequestShape) -> int:
        """The most candidate sequences this search decodes at once (its share of the engine's batch):
        its widest set of candidates, unless the strategy generates them in rounds."""
        return self.cost(shape).candidates

    def check(self, shape: RequestShape) -> None:
        """Refuse what the parameters cannot mean together, for a request of `shape` (InvalidRequest);
        runs after the field checks."""

    def check_request(
        self,
        *,
        shape: RequestShape,
        direction: bool,
        temperature: float,
        budget: Budget,
        limits: SearchLimits,
    ) -> None:
        """The rules between this search and the rest of a request (InvalidRequest names the field).

        `direction`: whether the request has a preference_vector or checks; `limits`: the server's. The total-work
        check prices the search by its own `cost`, capped by the budget where the meter enforces it."""
        name = self.strategy
        if self.ranked and not direction:
            raise InvalidRequest(
                "preference_vector", f"{name} ranks candidates by a direction; give a preference_vector or checks"
            )
        self.check(shape)
        if self.ranked and temperature == 0:
            raise InvalidRequest(
                "temperature",
                f"is 0 (greedy), so every {name} candidate would be the same; use a temperature above 0 or strategy "
                "'sample'",
            )
        check_cost(name, self.cost(shape).within(budget), limits)
