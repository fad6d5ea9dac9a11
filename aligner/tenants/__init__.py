"""The tenant store: API keys and tenants' safety configs (versions, the active one, the audit log) in SQL.

`keys` (key format, hashing, tenant names), `records` (what the store returns), `schema` (tables
and migrations), `backends` (SQLite / PostgreSQL), `key_table` and `safety_table` (each table's
operations) and `store` (`TenantStore`, and the `SafetyConfigStore` interface it shares with the
admin client).
"""

from aligner.tenants.backends import STORE_ENV, default_store_url, mask_url
from aligner.tenants.keys import KEY_RE, TENANT_PATTERN, generate_key, validate_tenant
from aligner.tenants.records import ApiKey, AuditEntry, SafetyConfigVersion
from aligner.tenants.schema import MIGRATIONS
from aligner.tenants.store import ADMIN_KEY_ENV, SafetyConfigStore, TenantStore, import_bootstrap_admin_key

__all__ = [
    "ADMIN_KEY_ENV",
    "KEY_RE",
    "MIGRATIONS",
    "STORE_ENV",
    "TENANT_PATTERN",
    "ApiKey",
    "AuditEntry",
    "SafetyConfigStore",
    "SafetyConfigVersion",
    "TenantStore",
    "default_store_url",
    "generate_key",
    "import_bootstrap_admin_key",
    "mask_url",
    "validate_tenant",
]
