"""The admin surface (API keys, tenants' safety configs and policies, audit) and its request bodies, shared
by HTTP and gRPC.

`AdminService` methods take the caller's admin key record (each transport checks it first, in one
place, before reading the request: a caller without an admin key learns nothing about the request's
validity) and the request's fields as the JSON contract names them. They return the JSON answer —
the same object for both transports — or raise an AlignerError, which each edge maps through the
one error table.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from aligner.contract import DEFAULT_LIMITS, SearchLimits, parse_model
from aligner.errors import ErrorInfo, InvalidRequest, NotFound
from aligner.safety.config import SafetyConfig
from aligner.tenants import ApiKey, TenantStore, hour_range, usage_report, validate_tenant
from aligner.tenants.policy import INT32_MAX, TenantPolicy
from aligner.tenants.usage_table import parse_hour_bound
from serve.gateway.messages import ObjectiveInfo

# An admin answer: a JSON object, sent as the HTTP body or converted field for field into the RPC's message.
Answer = dict[str, Any]


class PutSafetyConfig(BaseModel):
    """Body of PUT /v1/admin/tenants/{tenant}/safety-config."""

    model_config = ConfigDict(extra="forbid", strict=True)

    config: SafetyConfig = Field(description="The new version's content.")
    expected_version: int | None = Field(
        ge=1,
        le=INT32_MAX,
        description="The active version you last read (null: the tenant has no active config). A different "
        "current version means someone changed it first: 409 version_conflict, nothing stored.",
    )

    @classmethod
    def parse(cls, data: Any) -> PutSafetyConfig:
        return parse_model(cls, data)


class ActivateSafetyConfig(BaseModel):
    """Body of POST /v1/admin/tenants/{tenant}/safety-config/activate."""

    model_config = ConfigDict(extra="forbid", strict=True)

    version: int = Field(ge=1, le=INT32_MAX, description="The existing version to make active (a rollback).")
    expected_version: int | None = Field(
        ge=1, le=INT32_MAX, description="The active version you last read (null: none)."
    )

    @classmethod
    def parse(cls, data: Any) -> ActivateSafetyConfig:
        return parse_model(cls, data)


class PutTenantPolicy(BaseModel):
    """Body of PUT /v1/admin/tenants/{tenant}/policy."""

    model_config = ConfigDict(extra="forbid", strict=True)

    policy: TenantPolicy = Field(description="The new version's content.")
    expected_version: int | None = Field(
        strict=True,
        ge=1,
        le=INT32_MAX,
        description="The active version you last read (null: the tenant has no policy). A different current "
        "version means someone changed it first: 409 version_conflict, nothing stored.",
    )

    @classmethod
    def parse(cls, data: Any) -> PutTenantPolicy:
        if isinstance(data, dict) and "policy" in data:
            # Every error names its field from the body's root, the policy's own checks' too: "policy.caps.n".
            data = {**data, "policy": in_policy(lambda: parse_model(TenantPolicy, data["policy"]))}
        return parse_model(cls, data)


def in_policy(check: Callable[[], Any]) -> Any:
    """`check()`, with an InvalidRequest's field named from the request body's root (`policy.`...)."""
    try:
        return check()
    except InvalidRequest as exc:
        raise InvalidRequest(f"policy.{exc.field}" if exc.field else "policy", exc.reason) from None


class ActivateTenantPolicy(BaseModel):
    """Body of POST /v1/admin/tenants/{tenant}/policy/activate."""

    model_config = ConfigDict(extra="forbid", strict=True)

    version: int = Field(ge=1, le=INT32_MAX, description="The existing version to make active (a rollback).")
    expected_version: int | None = Field(
        ge=1, le=INT32_MAX, description="The active version you last read (null: none)."
    )

    @classmethod
    def parse(cls, data: Any) -> ActivateTenantPolicy:
        return parse_model(cls, data)


class CreateKey(BaseModel):
    """Body of POST /v1/admin/keys."""

    # Strict: `"admin": "yes"` (or 1) is refused, never read as true.
    model_config = ConfigDict(extra="forbid", strict=True)

    tenant: str = Field(description="Tenant the key belongs to (lowercase letters, digits, '_', '.', '-').")
    admin: bool = Field(False, description="An admin key may manage keys of every tenant.")

    @classmethod
    def parse(cls, data: Any) -> CreateKey:
        return parse_model(cls, data)


def check_version(field: str, version: object) -> int:
    """A version number from a query parameter: an integer the version columns (INT32) hold, at least 1."""
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= INT32_MAX:
        raise InvalidRequest(field, f"must be an integer from 1 to {INT32_MAX}")
    return version


class AdminService:
    """The admin operations over the tenant store. `objectives` gives the served objectives (a config's
    thresholds must name them); `admin` in every method is the caller's checked admin key (its id is
    recorded as the creator or actor of writes)."""

    def __init__(
        self,
        store: TenantStore,
        objectives: Callable[[], Awaitable[list[ObjectiveInfo]]],
        limits: SearchLimits = DEFAULT_LIMITS,
        fits: Callable[[SafetyConfig], Awaitable[ErrorInfo | None]] | None = None,
    ):
        self.store = store
        self.objectives = objectives
        self.limits = limits  # the server's: a tenant's policy may only lower them
        # Whether a config fits the model: a model replica measures it with the policy tokenizer (None: unchecked).
        self.fits = fits

    async def check_fits(self, config: SafetyConfig) -> None:
        """Refuse (400 naming `text`) a config whose operator section leaves too little of the model's context."""
        error = None if self.fits is None else await self.fits(config)
        if error is not None:
            raise error.error()

    async def objective_ranges(self) -> dict[str, tuple[float, float]]:
        return {o.name: (o.low, o.high) for o in await self.objectives()}

    # -- API keys --------------------------------------------------------------------------------

    async def create_key(self, admin: ApiKey, body: object) -> Answer:
        """A new key for a tenant; the answer holds the key, the only time it is shown."""
        spec = CreateKey.parse(body)
        record, key = await asyncio.to_thread(self.store.create_key, spec.tenant, admin=spec.admin, created_by=admin.id)
        return {**record.to_dict(), "key": key}

    async def list_keys(self, admin: ApiKey, tenant: str | None) -> Answer:
        keys = await asyncio.to_thread(self.store.list_keys, tenant)
        return {"keys": [k.to_dict() for k in keys]}

    async def revoke_key(self, admin: ApiKey, key_id: str) -> Answer:
        return (await asyncio.to_thread(self.store.revoke_key, key_id)).to_dict()

    # -- safety configs --------------------------------------------------------------------------

    async def put_safety_config(self, admin: ApiKey, tenant: str, body: object) -> Answer:
        """Store a new version of the tenant's config and make it active (in force within a second)."""
        validate_tenant(tenant)
        spec = PutSafetyConfig.parse(body)
        spec.config.check_objectives(await self.objective_ranges())
        await self.check_fits(spec.config)
        stored = await asyncio.to_thread(
            self.store.set_safety_config, tenant, spec.config, expected_version=spec.expected_version, actor=admin.id
        )
        return stored.to_dict()

    async def get_safety_config(self, admin: ApiKey, tenant: str) -> Answer:
        active = await asyncio.to_thread(self.store.get_safety_config, validate_tenant(tenant))
        if active is None:
            raise NotFound(f"tenant {tenant!r} has no active safety config")
        return active.to_dict()

    async def safety_config_versions(self, admin: ApiKey, tenant: str) -> Answer:
        validate_tenant(tenant)
        versions = await asyncio.to_thread(self.store.safety_config_versions, tenant)
        active = await asyncio.to_thread(self.store.get_safety_config, tenant)
        return {"active": None if active is None else active.version, "versions": [v.to_dict() for v in versions]}

    async def activate_safety_config(self, admin: ApiKey, tenant: str, body: object) -> Answer:
        """Make an existing version active again (a rollback)."""
        validate_tenant(tenant)
        spec = ActivateSafetyConfig.parse(body)
        versions = await asyncio.to_thread(self.store.safety_config_versions, tenant)
        target = next((v for v in versions if v.version == spec.version), None)
        if target is not None:  # an unknown version is the store's NotFound
            # A version stored before a rule was added meets today's rules before it is in force again.
            target.config.check_objectives(await self.objective_ranges())
            await self.check_fits(target.config)
        chosen = await asyncio.to_thread(
            self.store.activate_safety_config,
            tenant,
            spec.version,
            expected_version=spec.expected_version,
            actor=admin.id,
        )
        return chosen.to_dict()

    async def delete_safety_config(self, admin: ApiKey, tenant: str, expected_version: int) -> Answer:
        """Deactivate the tenant's config; its versions and the audit stay."""
        validate_tenant(tenant)
        check_version("expected_version", expected_version)
        await asyncio.to_thread(
            self.store.delete_safety_config, tenant, expected_version=expected_version, actor=admin.id
        )
        return {"tenant": tenant, "active": None}

    async def audit(self, admin: ApiKey, tenant: str | None, since: str | None) -> Answer:
        """Every safety-config change (of `tenant`, at or after the ISO time `since`), oldest first."""
        when = parse_hour_bound("since", since)  # the calendar's edges, zones and bad text: 400 naming `since`
        entries = await asyncio.to_thread(self.store.safety_audit, tenant, when)
        return {"entries": [e.to_dict() for e in entries]}

    # -- tenants' policies -------------------------------------------------------------------------

    async def put_policy(self, admin: ApiKey, tenant: str, body: object) -> Answer:
        """Store a new version of the tenant's policy and make it active (in force within a second); its
        caps must be at or below the server's limits and the objectives it names served."""
        validate_tenant(tenant)
        spec = PutTenantPolicy.parse(body)
        served = set(await self.objective_ranges())
        in_policy(lambda: spec.policy.check_server(self.limits, served))
        stored = await asyncio.to_thread(
            self.store.set_tenant_policy, tenant, spec.policy, expected_version=spec.expected_version, actor=admin.id
        )
        return stored.to_dict()

    async def get_policy(self, admin: ApiKey, tenant: str) -> Answer:
        active = await asyncio.to_thread(self.store.get_tenant_policy, validate_tenant(tenant))
        if active is None:
            raise NotFound(f"tenant {tenant!r} has no policy (the server's limits alone apply)")
        return active.to_dict()

    async def policy_versions(self, admin: ApiKey, tenant: str) -> Answer:
        validate_tenant(tenant)
        versions = await asyncio.to_thread(self.store.tenant_policy_versions, tenant)
        active = await asyncio.to_thread(self.store.get_tenant_policy, tenant)
        return {"active": None if active is None else active.version, "versions": [v.to_dict() for v in versions]}

    async def activate_policy(self, admin: ApiKey, tenant: str, body: object) -> Answer:
        """Make an existing version of the tenant's policy active again (a rollback)."""
        validate_tenant(tenant)
        spec = ActivateTenantPolicy.parse(body)
        versions = await asyncio.to_thread(self.store.tenant_policy_versions, tenant)
        target = next((v for v in versions if v.version == spec.version), None)
        if target is not None:  # an unknown version is the store's NotFound
            # A version stored under other limits or objectives meets this server's before it is in force.
            served = set(await self.objective_ranges())
            in_policy(lambda: target.policy.check_server(self.limits, served))
        chosen = await asyncio.to_thread(
            self.store.activate_tenant_policy,
            tenant,
            spec.version,
            expected_version=spec.expected_version,
            actor=admin.id,
        )
        return chosen.to_dict()

    async def policy_audit(self, admin: ApiKey, tenant: str) -> Answer:
        """Every change of the tenant's policy, oldest first."""
        entries = await asyncio.to_thread(self.store.tenant_policy_audit, validate_tenant(tenant))
        return {"entries": [e.to_dict() for e in entries]}

    # -- metered usage -------------------------------------------------------------------------------

    async def usage(self, admin: ApiKey, tenant: str | None, since: str | None, until: str | None) -> Answer:
        """Metered usage of every hour overlapping [since, until) (ISO 8601; no zone: UTC), per tenant and
        hour and in total; what ingress replicas counted since their last flush is not in it yet."""
        start, end = hour_range(since, until)
        if tenant is not None:
            validate_tenant(tenant)
        return usage_report(await asyncio.to_thread(self.store.usage, tenant, start, end), start, end)
