"""The tenant store: API keys, tenants' safety configs and policies (versions, the active one, audit) in SQL.

`keys` (key format, hashing, tenant names), `records` (what the store returns), `schema` (tables
and migrations), `backends` (SQLite / PostgreSQL), `key_table`, `safety_table` and `usage_table` (each
table's operations) and `store` (`TenantStore`, and the `SafetyConfigStore` interface it shares with the
admin client).
"""

from aligner.tenants.backends import STORE_ENV, default_store_url, mask_url
from aligner.tenants.keys import KEY_RE, TENANT_PATTERN, generate_key, validate_tenant
from aligner.tenants.policy import DEFAULT_POLICY, PolicyCaps, PolicyDefaults, TenantPolicy
from aligner.tenants.policy_apply import effective_limits, parse_request
from aligner.tenants.records import ApiKey, AuditEntry, SafetyConfigVersion, TenantPolicyVersion
from aligner.tenants.schema import MIGRATIONS
from aligner.tenants.store import (
    ADMIN_KEY_ENV,
    SafetyConfigStore,
    TenantPolicyStore,
    TenantStore,
    import_bootstrap_admin_key,
)
from aligner.tenants.usage_table import (
    TenantUsage,
    UsageCounts,
    UsageKey,
    UsageRow,
    hour_of,
    hour_range,
    summarize,
    usage_report,
)

__all__ = [
    "ADMIN_KEY_ENV",
    "DEFAULT_POLICY",
    "KEY_RE",
    "MIGRATIONS",
    "STORE_ENV",
    "TENANT_PATTERN",
    "ApiKey",
    "AuditEntry",
    "PolicyCaps",
    "PolicyDefaults",
    "SafetyConfigStore",
    "SafetyConfigVersion",
    "TenantPolicy",
    "TenantPolicyStore",
    "TenantPolicyVersion",
    "TenantStore",
    "TenantUsage",
    "UsageCounts",
    "UsageKey",
    "UsageRow",
    "default_store_url",
    "effective_limits",
    "generate_key",
    "hour_of",
    "hour_range",
    "import_bootstrap_admin_key",
    "mask_url",
    "parse_request",
    "summarize",
    "usage_report",
    "validate_tenant",
]
