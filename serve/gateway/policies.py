"""Each tenant's policy in force at the ingress: read from the tenant store at most every `cache_s` (≤ 1 s),
so a changed policy is in force on every ingress replica within a second.

`ActivePolicies.for_request` gives one `PolicyContext` per request: the version and the policy it is
admitted and parsed under (how a policy applies is aligner/tenants/policy_apply.py), and what the
gateway's quota and scheduling code reads: rates, concurrency, weight and priority tier.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aligner.tenants import DEFAULT_POLICY, ApiKey, TenantPolicy, TenantStore
from serve.gateway.auth import StoreCache


@dataclass(frozen=True)
class PolicyContext:
    """The tenant's policy in force when its request arrived (one version for the whole request)."""

    tenant: str
    version: int | None = None  # None: the tenant has no policy; the server's limits alone apply
    policy: TenantPolicy = field(default_factory=lambda: DEFAULT_POLICY)  # shared, never changed

    @property
    def applies(self) -> bool:
        return self.version is not None

    def headers(self) -> dict[str, str]:
        """Which version of the tenant's policy the request was admitted under (none: no header)."""
        return {} if self.version is None else {"x-aligner-policy-version": str(self.version)}


NO_POLICY = PolicyContext(tenant="unauthenticated")


class ActivePolicies:
    """Each tenant's active policy, re-read from the store at most every `cache_s` seconds."""

    def __init__(self, store: TenantStore, cache_s: float = 0.5):
        self.store = store
        self._cache = StoreCache(cache_s)

    async def for_request(self, key: ApiKey) -> PolicyContext:
        found = await self._cache.get(key.tenant, lambda: self.store.get_tenant_policy(key.tenant))
        if found is None:
            return PolicyContext(tenant=key.tenant)
        return PolicyContext(tenant=key.tenant, version=found.version, policy=found.policy)
