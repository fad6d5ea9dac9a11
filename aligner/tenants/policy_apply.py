"""A tenant's policy applied to one request: the defaults it omits, the limits it is checked against, and the
strategies and objectives it may name.

`parse_request(data, server, policy)` is `AlignRequest.parse` for a tenant's request:
1. the policy's defaults fill the fields the request omits, each lowered to its cap;
2. the request is parsed against the effective limits: the server's `SearchLimits`, each lowered to the
   tenant's cap of the same name (so every limit the server knows is also a tenant cap);
3. its strategy and objectives must be ones the policy allows.
A request beyond the tenant's caps gets InvalidRequest naming the field and the tenant's limit; one
beyond the server's own limits gets the server's error, as without a policy.
"""

from __future__ import annotations

import copy
from typing import Any

from aligner.contract import AlignRequest, SearchLimits
from aligner.errors import InvalidRequest
from aligner.search import registry as search_registry
from aligner.tenants.policy import TenantPolicy

CONTRACT_MAX_TOKENS = AlignRequest.model_fields["max_tokens"].default
DEFAULT_STRATEGY = "sample"


def effective_limits(server: SearchLimits, policy: TenantPolicy) -> SearchLimits:
    """The server's limits, each lowered to the tenant's cap of the same name."""
    lowered = {name: min(cap, getattr(server, name)) for name, cap in policy.caps.limits().items()}
    return server.model_copy(update=lowered) if lowered else server


def with_defaults(data: Any, policy: TenantPolicy, limits: SearchLimits) -> Any:
    """`data` (a request's JSON object) with the policy's defaults for what it omits, each default at most
    its cap. Anything that is not the expected shape is left as it is, for the parser to report."""
    if not isinstance(data, dict):
        return data
    defaults = policy.defaults
    data = dict(data)
    if "max_tokens" not in data:
        wanted = defaults.max_tokens or CONTRACT_MAX_TOKENS
        if wanted > limits.max_tokens:
            wanted = limits.max_tokens  # a default above the cap becomes the cap
        if wanted != CONTRACT_MAX_TOKENS:
            data["max_tokens"] = wanted
    if data.get("preference_vector") is None and defaults.preference_vector is not None:
        data["preference_vector"] = dict(defaults.preference_vector)
    if defaults.search is not None:
        search = _search_with_defaults(data.get("search"), defaults.search, limits)
        if search is not None:
            data["search"] = search
    budget = _budget_with_defaults(data.get("budget", {}), policy)
    if budget is not None:
        data["budget"] = budget
    return data


def _search_with_defaults(given: Any, default: dict[str, Any], limits: SearchLimits) -> dict[str, Any] | None:
    """The request's `search` with the default's parameters it omits (when it names the default's strategy
    or none); None when the request's own is used as sent."""
    if given is None:
        given = {}
    if not isinstance(given, dict):
        return None
    strategy = default.get("strategy", DEFAULT_STRATEGY)
    if given.get("strategy", strategy) != strategy:
        return None  # another strategy: the default's parameters do not apply to it
    maxima = _maxima(strategy, limits)
    merged = {"strategy": strategy, **given}
    for field, value in default.items():
        if field not in merged:
            # A default above the cap becomes the cap (booleans are not counts).
            capped = field in maxima and isinstance(value, int) and not isinstance(value, bool)
            merged[field] = min(value, maxima[field]) if capped else copy.deepcopy(value)
    return merged


def _maxima(strategy: str, limits: SearchLimits) -> dict[str, int]:
    """Each parameter's maximum for this strategy: the limit of its name, else its declared `Maximum`."""
    params = search_registry.params_of(strategy)
    maxima = params.maxima()
    for field in params.model_fields:
        if field in SearchLimits.model_fields:
            maxima[field] = getattr(limits, field)
    return maxima


def _budget_with_defaults(given: Any, policy: TenantPolicy) -> dict[str, Any] | None:
    if not isinstance(given, dict):
        return None
    budget = dict(given)
    default = policy.defaults.budget
    for field in ("max_candidate_tokens", "max_reward_calls"):
        value = None if default is None else getattr(default, field)
        if budget.get(field) is None and value is not None:
            budget[field] = value
    cap = policy.caps.deadline_ms
    deadline = budget.get("deadline_ms")
    if isinstance(deadline, int) and not isinstance(deadline, bool) and cap is not None and deadline > cap:
        raise InvalidRequest(
            "budget.deadline_ms", f"is {deadline} but the tenant's policy allows at most {cap} (caps.deadline_ms)"
        )
    if deadline is None:
        wanted = None if default is None else default.deadline_ms
        if cap is not None:
            wanted = cap if wanted is None else min(wanted, cap)  # no deadline, or a longer one: the cap
        if wanted is not None:
            budget["deadline_ms"] = wanted
    return budget if budget != given else None


def check_allowed(request: AlignRequest, policy: TenantPolicy) -> None:
    """The request's strategy and every objective it scores are ones the policy allows."""
    allowed = policy.allowed_strategies
    strategy = request.search.strategy
    if allowed is not None and strategy not in allowed:
        raise InvalidRequest(
            "search.strategy", f"is {strategy!r} but the tenant's policy allows only: {', '.join(allowed)}"
        )
    objectives = policy.allowed_objectives
    if objectives is None:
        return
    named = [("preference_vector", name) for name in request.preference_vector or {}]
    named += [("constraints", name) for name in request.constraints or {}]
    for field, name in named:
        if name not in objectives:
            raise InvalidRequest(
                f"{field}.{name}",
                f"names an objective the tenant's policy does not allow; allowed: {', '.join(objectives)}",
            )


def parse_request(data: Any, server: SearchLimits, policy: TenantPolicy | None) -> AlignRequest:
    """`AlignRequest.parse` for a tenant's request under its policy (None: the server's limits alone)."""
    if policy is None:
        return AlignRequest.parse(data, server)
    limits = effective_limits(server, policy)
    data = with_defaults(data, policy, limits)
    if policy.allowed_strategies is not None and isinstance(data, dict):
        # Before the parameters: a strategy the tenant may not use is the first thing to say.
        search = data.get("search")
        strategy = search.get("strategy", DEFAULT_STRATEGY) if isinstance(search, dict) else DEFAULT_STRATEGY
        if isinstance(strategy, str) and strategy not in policy.allowed_strategies:
            raise InvalidRequest(
                "search.strategy",
                f"is {strategy!r} but the tenant's policy allows only: {', '.join(policy.allowed_strategies)}",
            )
    try:
        request = AlignRequest.parse(data, limits)
    except InvalidRequest as exc:
        raise _explained(exc, data, server, policy) from None
    check_allowed(request, policy)
    return request


def _explained(error: InvalidRequest, data: Any, server: SearchLimits, policy: TenantPolicy) -> InvalidRequest:
    """The error of a request refused under the effective limits: the server's own error when the server's
    limits refuse it too, else the same error naming the tenant's cap that refused it."""
    AlignRequest.parse(data, server)  # raises the server's error, as without a policy
    tightened = {name: cap for name, cap in policy.caps.limits().items() if cap < getattr(server, name)}
    named = error.field.removeprefix("search.")  # "max_tokens", "search.n": the limit of that name
    if named in tightened:
        return _tenant_error(error, {named: tightened[named]})
    # A total (the search's worst case, the request's text): the cap that refuses it alone, parsed once
    # per cap the tenant lowered (a few); only a refused request pays for it.
    for name, cap in tightened.items():
        try:
            AlignRequest.parse(data, server.model_copy(update={name: cap}))
        except InvalidRequest:
            return _tenant_error(error, {name: cap})
    return _tenant_error(error, tightened)  # only the caps together refuse it


def _tenant_error(error: InvalidRequest, caps: dict[str, int]) -> InvalidRequest:
    limits = ", ".join(f"{cap} ({name})" for name, cap in caps.items())
    return InvalidRequest(error.field, f"{error.reason}; the tenant's policy allows at most {limits}")
