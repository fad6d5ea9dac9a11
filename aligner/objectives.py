"""Whether a server serves every objective a request (and its tenant's safety config) asks for, checked
before any engine work; errors name the request's field and list the valid objectives."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aligner.contract import CHECKS_OBJECTIVE, PREFERENCE_OBJECTIVE, AlignRequest
from aligner.errors import ConfigError, InvalidRequest

if TYPE_CHECKING:  # types only: the CLI imports this module before it loads any model
    from aligner.rewards import ObjectiveCatalog
    from aligner.safety.config import SafetyConfig


def check_objectives(request: AlignRequest, catalog: ObjectiveCatalog, safety: SafetyConfig | None = None) -> None:
    """Every objective a request (and its tenant's config) names must be served; the error lists the
    valid ones. The objectives that read the tenant's config need one."""
    catalog.check_names(list(request.preference_vector or {}), "preference_vector")
    implied = request.implied_direction() if request.preference_vector is None else None
    for name in implied or {}:
        if name not in catalog.names:
            raise InvalidRequest(
                "preferences",
                f"ranking by the request's preferences takes the {name} objective, which this server does not "
                f"serve (rewards.judge is off); give a preference_vector over: {', '.join(catalog.names)}",
            )
    catalog.check_names(list(request.constraints or {}), "constraints")
    catalog.check_names(list(request.references or {}), "references")
    if not request.checks and CHECKS_OBJECTIVE in request.scored_objectives():
        field = "preference_vector" if CHECKS_OBJECTIVE in (request.preference_vector or {}) else "constraints"
        raise InvalidRequest(field, "the checks objective scores the request's `checks`; give checks")
    if PREFERENCE_OBJECTIVE in request.scored_objectives() and not request.stated_preferences():
        field = "preference_vector" if PREFERENCE_OBJECTIVE in (request.preference_vector or {}) else "constraints"
        raise InvalidRequest(
            field, f"{PREFERENCE_OBJECTIVE} judges against the request's `preferences` or system message; give one"
        )
    if safety is None:
        for name in catalog.needs_safety_config(request.scored_objectives()):
            field = "preference_vector" if name in (request.preference_vector or {}) else "constraints"
            raise InvalidRequest(
                field, f"{name} judges against the tenant's safety config, and this request is served under none"
            )
    if safety is not None:
        try:
            catalog.check_names(list(safety.thresholds), "safety.thresholds")
            safety.check_request_objectives()
        except InvalidRequest as exc:  # the operator's config, not the request, is wrong
            raise ConfigError(f"the tenant's safety config: {exc.message}") from None
