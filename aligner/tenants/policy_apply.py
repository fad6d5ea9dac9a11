"""A tenant's policy applied to one request: the defaults it omits, the limits it is checked against, and the
strategies and objectives it may name.

`parse_request(data, server, policy)` is `AlignRequest.parse` for a tenant's request:
1. the policy's defaults fill the fields the request omits, each at most its cap;
2. the request is parsed once, against the server's `SearchLimits`, then checked against the effective
   limits: the server's, each lowered to the tenant's cap of the same name (so every limit the server
   knows is also a tenant cap), with no second parse (`within_caps`);
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
from aligner.search.params.cost import CAPS, over_cap
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
    for name in request.implied_direction() or {} if request.preference_vector is None else {}:
        if name not in objectives:
            raise InvalidRequest(
                "preferences",
                f"ranking by the request's preferences takes the {name} objective, which the tenant's policy "
                f"does not allow; give a preference_vector over the allowed: {', '.join(objectives)}",
            )
    named = [("preference_vector", name) for name in request.preference_vector or {}]
    named += [("constraints", name) for name in request.constraints or {}]
    for field, name in named:
        if name not in objectives:
            raise InvalidRequest(
                f"{field}.{name}",
                f"names an objective the tenant's policy does not allow; allowed: {', '.join(objectives)}",
            )


def parse_request(data: Any, server: SearchLimits, policy: TenantPolicy | None) -> AlignRequest:
    """`AlignRequest.parse` for a tenant's request under its policy (None: the server's limits alone).

    Parsed once, against the server's own limits (a request beyond them gets the server's error, as without
    a policy); then every cap the tenant lowered is checked against the parsed request, no parse more."""
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
    request = AlignRequest.parse(data, server)
    tightened = {name: cap for name, cap in policy.caps.limits().items() if cap < getattr(server, name)}
    if tightened:
        request = within_caps(request, data, tightened, limits)
    check_allowed(request, policy)
    return request


def within_caps(request: AlignRequest, data: Any, tightened: dict[str, int], limits: SearchLimits) -> AlignRequest:
    """`request` (parsed under the server's limits) under the tenant's caps `tightened` (those below the
    server's): a value it sent above one is refused naming the field and the tenant's limit; a parameter it
    omitted whose default is above one becomes it, as the contract does with the server's limits. In the
    contract's order: the search's parameters, max_tokens, the request's text, the search's worst case."""
    search = request.search
    sent = data.get("search") if isinstance(data, dict) else None
    sent = sent if isinstance(sent, dict) else {}  # the parameters the request (or its defaults) named
    lowered: dict[str, int] = {}
    for name in search.model_fields:
        value = getattr(search, name)
        if name not in tightened or not isinstance(value, int) or value <= tightened[name]:
            continue
        if name in sent:
            limit = tightened[name]
            raise _refused(f"search.{name}", f"is {value} but the configured maximum is {limit}", {name: limit})
        lowered[name] = tightened[name]
    if lowered:
        search = search.model_copy(update=lowered)
        search.check(request.shape())
        request = request.model_copy(update={"search": search})
    tokens = tightened.get("max_tokens")
    if tokens is not None and request.max_tokens > tokens:  # with_defaults set it when omitted: it was sent
        raise _refused(
            "max_tokens", f"is {request.max_tokens} but the configured maximum is {tokens}", {"max_tokens": tokens}
        )
    chars = tightened.get("max_input_chars")
    if chars is not None and input_chars(request) > chars:
        field = "prompt" if request.prompt is not None else "messages"
        text = f"the request's text has {input_chars(request)} characters; the configured maximum is {chars}"
        raise _refused(field, text, {"max_input_chars": chars})
    cost = search.cost(request.shape()).within(request.budget)
    for dimension, name, _, _ in CAPS:
        if name in tightened and getattr(cost, dimension) > tightened[name]:
            reason = over_cap(cost, limits)  # the first cap it exceeds, worded as the contract words it
            raise _refused("search", f"{search.strategy} {reason}", {name: tightened[name]})
    return request


def input_chars(request: AlignRequest) -> int:
    """The characters `max_input_chars` counts: the messages' contents (or the prompt) and the preferences,
    as the contract counts them."""
    texts = [m.content for m in request.messages] if request.messages is not None else [request.prompt or ""]
    return len(request.preferences or "") + sum(len(text) for text in texts)


def _refused(field: str, reason: str, caps: dict[str, int]) -> InvalidRequest:
    limits = ", ".join(f"{cap} ({name})" for name, cap in caps.items())
    return InvalidRequest(field, f"{reason}; the tenant's policy allows at most {limits}")
