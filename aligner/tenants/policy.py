"""A tenant's policy, set by an admin: what its requests may ask, what they get when they ask nothing, and
the shares the tenant is given (rates, concurrency, weight, priority).

`TenantPolicy` is pure data, stored versioned and audited like a safety config (`policy_table`). Its
`caps` lower the server's `SearchLimits` for the tenant: every field of `SearchLimits` checked when a request
is parsed is also a cap (`PolicyCaps` is built from it, so such a limit the server gains is a tenant cap at
once), plus the wall time of a search (`deadline_ms`). How a policy applies to a request (the effective
limits, the defaults, the allowed strategies and objectives) is `aligner/tenants/policy_apply.py`.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, create_model, field_validator, model_validator

from aligner.contract import MAX_OBJECTIVES, OBJECTIVE_NAME, AlignRequest, SearchSpec, parse_model
from aligner.errors import InvalidRequest
from aligner.limits import MAX_DEADLINE_MS, Budget, SearchLimits
from aligner.search import registry as search_registry
from aligner.search.params.cost import RequestShape, over_cap

MAX_WEIGHT = 1000.0
# Weights span at most 1e6 between tenants: a tinier one would grow its fair-queue counter past what
# float arithmetic can still add other tenants' tokens to.
MIN_WEIGHT = 0.001
# The wire's integer widths (the proto's int32 / int64 fields): a value the gRPC answer could not carry is refused.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
MAX_PRIORITY = 9
MAX_ALLOWED = 64
# Limits the model replica checks with the server's own values (once the prompt is composed, or while the
# search runs), so a tenant cap on them would not hold: a tenant's wall time is capped by `deadline_ms`.
REPLICA_LIMITS = frozenset({"max_request_s", "max_judge_prefill_tokens"})
CONTRACT_MAX_TOKENS: int = AlignRequest.model_fields["max_tokens"].default
# The validation context of a version read back from the store: it was checked when it was set, and a
# check added since must not make a stored policy unreadable (its tenant's every request would fail).
STORED = {"stored": True}


class _Strict(BaseModel):
    # Strict types, unknown fields refused: an admin's typo must not silently mean "no limit".
    model_config = ConfigDict(extra="forbid", strict=True)


class _CapsBase(_Strict):
    """The per-request caps of a tenant; null: the server's limit holds."""

    deadline_ms: int | None = Field(
        None,
        ge=1,
        le=MAX_DEADLINE_MS,
        description="Longest wall time of one request's search, in ms: a larger budget.deadline_ms is refused, and "
        "a request without one (and without a default) gets this one.",
    )

    def limits(self) -> dict[str, int]:
        """The caps that lower a field of the server's `SearchLimits`, by that field's name."""
        return {name: getattr(self, name) for name in capped_limits() if getattr(self, name) is not None}


def capped_limits() -> list[str]:
    """The fields of `SearchLimits` that are also a tenant's caps: those checked when a request is parsed."""
    return [name for name in SearchLimits.model_fields if name not in REPLICA_LIMITS]


def _caps_model() -> type[_CapsBase]:
    """`PolicyCaps`: `_CapsBase` plus one optional cap per field of `SearchLimits`, with its bounds."""
    fields: dict[str, Any] = {}
    for name in capped_limits():
        info = SearchLimits.model_fields[name]
        described = (info.description or "").rstrip(".")
        fields[name] = (
            Annotated[info.annotation, *info.metadata] | None,
            Field(None, description=f"At most the server's `{name}` (null: the server's): {described}."),
        )
    return create_model("PolicyCaps", __base__=_CapsBase, **fields)


if TYPE_CHECKING:
    PolicyCaps = _CapsBase
else:
    PolicyCaps = _caps_model()


class PolicyDefaults(_Strict):
    """What a request of the tenant gets for the fields it omits (each null: the contract's own default)."""

    search: dict[str, Any] | None = Field(
        None,
        description="The `search` object of a request that sends none (strategy and parameters, as in a request); "
        "a request naming the same strategy (or none) gets the parameters it omits from here.",
    )
    preference_vector: dict[str, float] | None = Field(
        None,
        max_length=MAX_OBJECTIVES,
        description="The direction of a request that sends no `preference_vector` (objective -> weight).",
    )
    budget: Budget | None = Field(
        None, description="The budget fields a request omits (max_candidate_tokens, max_reward_calls, deadline_ms)."
    )
    max_tokens: int | None = Field(None, ge=1, le=INT32_MAX, description="`max_tokens` of a request that sends none.")

    @field_validator("search")
    @classmethod
    def _search(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        try:
            parse_model(SearchSpec, search_registry.wire_part(value))
        except InvalidRequest as exc:  # a field of the search object: "n"
            raise InvalidRequest(f"defaults.search.{exc.field}", exc.reason) from None
        try:
            search_registry.search_params(value, {})
        except InvalidRequest as exc:  # named as in a request: "search.n"
            raise InvalidRequest(f"defaults.{exc.field}", exc.reason) from None
        return value

    @field_validator("preference_vector")
    @classmethod
    def _direction(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return None
        if not value:
            raise InvalidRequest("defaults.preference_vector", "must name at least one objective")
        for name, weight in value.items():
            if not OBJECTIVE_NAME.match(name):
                raise InvalidRequest(
                    f"defaults.preference_vector.{name}", f"objective names must match {OBJECTIVE_NAME.pattern}"
                )
            if not math.isfinite(weight):
                raise InvalidRequest(f"defaults.preference_vector.{name}", "must be a finite number")
        if all(weight == 0 for weight in value.values()):
            raise InvalidRequest("defaults.preference_vector", "all weights are zero; a direction needs one non-zero")
        return value

    def strategy(self) -> str | None:
        return None if self.search is None else self.search.get("strategy", "sample")


class TenantPolicy(_Strict):
    """What one tenant's requests may ask and get, set by an admin. The empty policy changes nothing."""

    allowed_strategies: list[str] | None = Field(
        None,
        min_length=1,
        max_length=MAX_ALLOWED,
        description="Search strategies the tenant may use (null: every strategy the server has).",
    )
    allowed_objectives: list[str] | None = Field(
        None,
        min_length=1,
        max_length=MAX_ALLOWED,
        description="Objectives the tenant's preference vectors and constraints may name (null: every served one).",
    )
    caps: PolicyCaps = Field(
        default_factory=PolicyCaps,
        description="Per-request caps at or below the server's search_limits; a request above one gets 400 naming "
        "the field and the tenant's limit.",
    )
    defaults: PolicyDefaults = Field(
        default_factory=PolicyDefaults,
        description="What a request gets for the fields it omits; each default within the policy's caps and the "
        "server's limits (a policy with a default above one is refused).",
    )
    requests_per_minute: int | None = Field(
        None,
        ge=1,
        le=INT64_MAX,
        description="Most requests the tenant may start per minute, over every replica (null: no limit).",
    )
    candidate_tokens_per_minute: int | None = Field(
        None,
        ge=1,
        le=INT64_MAX,
        description="Most tokens the tenant's searches may generate per minute over all candidates, over every "
        "replica (null: no limit): the fan-out is the cost, not the completion.",
    )
    max_concurrent_requests: int | None = Field(
        None,
        ge=1,
        le=INT32_MAX,
        description="Most requests of the tenant in flight at once, over every replica (null: no limit).",
    )
    weight: float = Field(
        1.0,
        ge=MIN_WEIGHT,
        le=MAX_WEIGHT,
        description="The tenant's fair share when the model replicas are saturated, relative to other tenants' "
        "weights (counted in generated candidate tokens).",
    )
    priority: int = Field(
        0,
        ge=0,
        le=MAX_PRIORITY,
        description=f"Priority tier, 0 (the default, lowest) to {MAX_PRIORITY}: a higher tier's requests are "
        "preferred within a replica when it is saturated.",
    )

    @field_validator("allowed_strategies")
    @classmethod
    def _known_strategies(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        known = search_registry.names()
        for i, name in enumerate(value):
            if name not in known:
                raise InvalidRequest(
                    f"allowed_strategies[{i}]", f"unknown strategy {name!r}; known: {', '.join(known)}"
                )
            if name in value[:i]:
                raise InvalidRequest(f"allowed_strategies[{i}]", f"{name!r} appears more than once")
        return value

    @field_validator("allowed_objectives")
    @classmethod
    def _objective_names(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for i, name in enumerate(value):
            if not OBJECTIVE_NAME.match(name):
                raise InvalidRequest(f"allowed_objectives[{i}]", f"objective names must match {OBJECTIVE_NAME.pattern}")
            if name in value[:i]:
                raise InvalidRequest(f"allowed_objectives[{i}]", f"{name!r} appears more than once")
        return value

    @field_validator("weight")
    @classmethod
    def _finite_weight(cls, value: float) -> float:
        if not math.isfinite(value):
            raise InvalidRequest("weight", "must be a finite number")
        return value

    @model_validator(mode="after")
    def _defaults_are_allowed(self) -> TenantPolicy:
        strategy = self.defaults.strategy()
        if strategy is not None and self.allowed_strategies is not None and strategy not in self.allowed_strategies:
            raise InvalidRequest(
                "defaults.search.strategy",
                f"is {strategy!r}, which allowed_strategies does not allow ({', '.join(self.allowed_strategies)})",
            )
        for name in self.defaults.preference_vector or {}:
            if self.allowed_objectives is not None and name not in self.allowed_objectives:
                raise InvalidRequest(
                    f"defaults.preference_vector.{name}",
                    f"names an objective allowed_objectives does not allow ({', '.join(self.allowed_objectives)})",
                )
        return self

    @model_validator(mode="after")
    def _defaults_within_caps(self, info: ValidationInfo) -> TenantPolicy:
        if (info.context or {}).get("stored"):
            return self
        caps = self.caps.limits()
        for field, value, cap in self._defaults_against(caps):
            raise InvalidRequest(field, f"is {value} but caps.{cap} is {caps[cap]}: a default must be within the caps")
        deadline = None if self.defaults.budget is None else self.defaults.budget.deadline_ms
        if deadline is not None and self.caps.deadline_ms is not None and deadline > self.caps.deadline_ms:
            raise InvalidRequest(
                "defaults.budget.deadline_ms",
                f"is {deadline} but caps.deadline_ms is {self.caps.deadline_ms}: a default must be within the caps",
            )
        return self

    def _defaults_against(self, limits: dict[str, int]) -> list[tuple[str, int, str]]:
        """(field, value, limit's name) of each default above the limit of its name in `limits`: max_tokens and
        the default search's explicit counts."""
        found = []
        wanted = self.defaults.max_tokens
        if wanted is not None and "max_tokens" in limits and wanted > limits["max_tokens"]:
            found.append(("defaults.max_tokens", wanted, "max_tokens"))
        for name, value in (self.defaults.search or {}).items():
            counts = isinstance(value, int) and not isinstance(value, bool)
            if counts and name in limits and name in SearchLimits.model_fields and value > limits[name]:
                found.append((f"defaults.search.{name}", value, name))
        return found

    def check_server(self, server: SearchLimits, objectives: set[str]) -> None:
        """What only the server knows (InvalidRequest naming the field): each cap at or below the server's
        limit of the same name, each default within the server's limits and the default search's worst case
        within every cap, and every objective named served (`objectives`)."""
        for name, cap in self.caps.limits().items():
            limit = getattr(server, name)
            if cap > limit:
                raise InvalidRequest(
                    f"caps.{name}",
                    f"is {cap} but the server's limit is {limit} (search_limits.{name}); a tenant's cap can only "
                    "lower it",
                )
        for field, value, name in self._defaults_against(server.model_dump()):
            limit = getattr(server, name)
            raise InvalidRequest(field, f"is {value} but the server's limit is {limit} (search_limits.{name})")
        self._check_default_search(server)
        named = [(f"allowed_objectives[{i}]", name) for i, name in enumerate(self.allowed_objectives or [])]
        named += [(f"defaults.preference_vector.{name}", name) for name in self.defaults.preference_vector or {}]
        for field, name in named:
            if name not in objectives:
                served = ", ".join(sorted(objectives)) or "(none configured)"
                raise InvalidRequest(field, f"unknown objective {name!r}; served objectives: {served}")

    def _check_default_search(self, server: SearchLimits) -> None:
        """The default search's worst case, for a request that sends nothing but its text, within the server's
        limits lowered to the caps: else every such request of the tenant would be refused."""
        if self.defaults.search is None:
            return
        lowered = {name: min(cap, getattr(server, name)) for name, cap in self.caps.limits().items()}
        limits = server.model_copy(update=lowered)
        params = search_registry.search_params(self.defaults.search, limits.model_dump())
        max_tokens = min(self.defaults.max_tokens or CONTRACT_MAX_TOKENS, limits.max_tokens)
        direction = len(self.defaults.preference_vector or {})
        cost = params.cost(RequestShape(max_tokens=max_tokens, objectives=direction, scored=direction))
        reason = over_cap(cost.within(self.defaults.budget), limits)
        if reason is not None:
            raise InvalidRequest(
                "defaults.search", f"{params.strategy} {reason}, for a request that omits search and max_tokens"
            )

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def content_hash(self) -> str:
        """SHA-256 of the canonical JSON: what the audit log records of each version."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


DEFAULT_POLICY = TenantPolicy()
