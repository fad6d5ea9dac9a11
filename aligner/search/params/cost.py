"""What a search may cost at most, by dimension, and the server's cap on each (`SearchLimits`).

Every strategy prices itself from its own parameters (`SearchParams.cost`, in its own module), so
the contract refuses a request whose worst case exceeds a cap before any engine work, naming the
cap. The dimensions are the ones a search spends on a replica: engine requests and the tokens they
generate, scoring rounds and reward calls, and the prompt tokens that judges on the policy model
prefill for every reward call (priced where the objectives are known: aligner/search/admission.py).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

from aligner.errors import InvalidRequest

if TYPE_CHECKING:  # the contract imports this module; SearchLimits is only a type here
    from aligner.limits import Budget, SearchLimits


@dataclass(frozen=True)
class RequestShape:
    """What a strategy's cost depends on besides its own parameters."""

    max_tokens: int  # the request's max_tokens: the longest any candidate may run
    objectives: int  # objectives in the request's direction (rps: a single one has no neighbours)
    scored: int  # objectives scored: the direction's and the constraints' (0: nothing is scored)
    checks: int = 0  # the request's checkable instructions (each a hard constraint)


@dataclass(frozen=True)
class SearchCost:
    """The most a search may spend, before any budget cuts it short."""

    engine_requests: int  # generation requests to the engine (the judges' prefills are priced apart)
    candidates: int  # candidates generated (beam: the continuations of one step)
    candidate_tokens: int  # tokens generated over all candidates
    scoring_rounds: int  # times the search scores a set of (partial) candidates
    reward_calls: int  # candidates or partial candidates scored, on all objectives at once
    judge_prefill_tokens: int = 0  # prompt tokens the judges on the policy model prefill

    def plus(self, other: SearchCost) -> SearchCost:
        return SearchCost(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def within(self, budget: Budget | None) -> SearchCost:
        """The cost once the request's budget, which the meter enforces, bounds what it can."""
        if budget is None:
            return self
        tokens, calls = budget.max_candidate_tokens, budget.max_reward_calls
        return replace(
            self,
            candidate_tokens=self.candidate_tokens if tokens is None else min(self.candidate_tokens, tokens),
            reward_calls=self.reward_calls if calls is None else min(self.reward_calls, calls),
            # Every scoring round scores at least one candidate, so it spends at least one reward call.
            scoring_rounds=self.scoring_rounds if calls is None else min(self.scoring_rounds, calls),
        )


# Each dimension, the `SearchLimits` field that caps it, what the strategy may do, and how a client lowers it.
CAPS: tuple[tuple[str, str, str, str], ...] = (
    ("candidates", "max_candidates", "generate up to {} candidates", "lower the search size"),
    (
        "candidate_tokens",
        "max_search_tokens",
        "generate up to {} tokens over all candidates",
        "lower max_tokens or the search size, or set budget.max_candidate_tokens",
    ),
    (
        "reward_calls",
        "max_reward_calls",
        "make up to {} reward calls",
        "lower the search size or max_tokens, raise chunk_tokens, or set budget.max_reward_calls",
    ),
    (
        "engine_requests",
        "max_engine_requests",
        "make up to {} engine requests",
        "lower the search size or max_tokens, or raise chunk_tokens",
    ),
    (
        "scoring_rounds",
        "max_scoring_rounds",
        "run up to {} scoring rounds",
        "lower max_rounds or max_tokens, raise chunk_tokens, or set budget.max_reward_calls",
    ),
    (
        "judge_prefill_tokens",
        "max_judge_prefill_tokens",
        "prefill up to {} prompt tokens for its judges on the policy model",
        "lower the search size, shorten the conversation, or drop the judged objectives",
    ),
)


def over_cap(cost: SearchCost, limits: SearchLimits) -> str | None:
    """Why `cost` exceeds the first cap it exceeds, naming the limit ("may ... ; the configured maximum
    ..."); None when it is within every cap."""
    for dimension, field, does, hint in CAPS:
        limit = getattr(limits, field)
        value = getattr(cost, dimension)
        if value > limit:
            return (
                f"may {does.format(value)}; the configured maximum per request is {limit} "
                f"(search_limits.{field}): {hint}"
            )
    return None


def check_cost(strategy: str, cost: SearchCost, limits: SearchLimits) -> None:
    """Refuse a search whose worst case exceeds a cap: InvalidRequest naming `search` and the limit."""
    reason = over_cap(cost, limits)
    if reason is not None:
        raise InvalidRequest("search", f"{strategy} {reason}")
