"""What a request reserves of its tenant's `candidate_tokens_per_minute` before it is sent to a model
replica: the most candidate tokens it can generate, from the strategies' cost models (aligner's; nothing
is estimated here), and the 400 for a request that no wait would ever admit."""

from __future__ import annotations

from aligner.contract import AlignRequest
from aligner.errors import InvalidRequest
from aligner.safety.config import SafetyConfig, resamples_allowed
from aligner.search.admission import resample_cost
from serve.gateway.fair_queue import request_cost


def reserved_tokens(request: AlignRequest, safety: SafetyConfig | None) -> int:
    """The request's worst case of generated candidate tokens: its search's (within its budget), plus the
    candidates its tenant's `resample` action may add. Resamples draw from the same budget
    (`budget.max_candidate_tokens` bounds both), and the replica admits only as many as fit the server's
    limits, so this is never less than what the request's `usage.candidate_tokens` can be."""
    wanted = resamples_allowed(safety)
    resamples = resample_cost(wanted, request.max_tokens, 0).candidate_tokens if wanted else 0
    budget = request.budget.max_candidate_tokens
    total = request_cost(request) + resamples
    return total if budget is None else min(total, budget)


def over_the_limit(request: AlignRequest, tenant: str, limit: int) -> InvalidRequest | None:
    """The 400 for a request whose search alone may generate more candidate tokens than its tenant may in a
    minute (it would be refused with 429 whatever it waited), naming the field that sets that worst case:
    `budget.max_candidate_tokens` when the budget binds, else `max_tokens` (times the search's fan-out)."""
    worst = request_cost(request)
    if worst <= limit:
        return None
    budget = request.budget.max_candidate_tokens
    field = "budget.max_candidate_tokens" if budget is not None and budget <= worst else "max_tokens"
    strategy = request.search.strategy
    fan_out = "" if worst == request.max_tokens else f", {strategy} over max_tokens {request.max_tokens}"
    return InvalidRequest(
        field,
        f"the request may generate up to {worst} candidate tokens{fan_out}, more than tenant {tenant!r} may "
        f"generate in a minute (its candidate_tokens_per_minute is {limit}), so no retry would be admitted; "
        f"lower max_tokens or the search's size, or set budget.max_candidate_tokens to at most {limit}",
    )
