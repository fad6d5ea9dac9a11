"""The tenant store's tables and the ordered migrations that create them.

The schema is versioned: `schema_migrations` records which of the ordered `MIGRATIONS` are
applied, and opening a store applies the missing ones (`TenantStore.migrate`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Connection

from aligner.tenants.records import utc


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC timestamp on both backends (SQLite stores it without a zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the tenant store; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        return utc(value)


# The current shape of the tables, for queries. Migrations below describe each change frozen in
# time, so a later migration that alters a table edits this definition and adds a step, never
# rewrites an old step.
metadata = MetaData()

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", UTCDateTime, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant", String(63), nullable=False),
    Column("admin", Boolean, nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(32), ForeignKey("api_keys.id"), nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
)

safety_config_versions = Table(
    "safety_config_versions",
    metadata,
    Column("tenant", String(63), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("content", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(32), nullable=True),
)

safety_config_active = Table(
    "safety_config_active",
    metadata,
    Column("tenant", String(63), primary_key=True),
    Column("version", Integer, nullable=True),  # NULL: deleted (the history stays)
    Column("updated_at", UTCDateTime, nullable=False),
)

safety_audit = Table(
    "safety_audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("tenant", String(63), nullable=False),
    Column("actor", String(32), nullable=True),
    Column("action", String(16), nullable=False),
    Column("old_version", Integer, nullable=True),
    Column("new_version", Integer, nullable=True),
    Column("content_hash", String(64), nullable=True),
)


# Metered usage: one row per tenant, UTC hour and request status; ingress replicas add to it
# (aligner/tenants/usage_table.py).
_USAGE_COUNTERS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "generated_tokens",
    "candidate_tokens",
    "prefill_tokens",
    "reward_calls",
    "engine_requests",
    "safety_passed",
    "safety_resampled",
    "safety_refused",
    "safety_flagged",
)
usage_hourly = Table(
    "usage_hourly",
    metadata,
    Column("tenant", String(63), primary_key=True),
    Column("hour", UTCDateTime, primary_key=True),
    Column("status", String(32), primary_key=True),
    *(Column(name, BigInteger, nullable=False, server_default="0") for name in _USAGE_COUNTERS),
    Column("updated_at", UTCDateTime, nullable=False),
)


# Tenants' policies (aligner/tenants/policy_table.py): versions, the active one, the audit log, the same
# shape as the safety configs'.
tenant_policy_versions = Table(
    "tenant_policy_versions",
    metadata,
    Column("tenant", String(63), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("content", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(32), nullable=True),
)

tenant_policy_active = Table(
    "tenant_policy_active",
    metadata,
    Column("tenant", String(63), primary_key=True),
    Column("version", Integer, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
)

tenant_policy_audit = Table(
    "tenant_policy_audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("tenant", String(63), nullable=False),
    Column("actor", String(32), nullable=True),
    Column("action", String(16), nullable=False),
    Column("old_version", Integer, nullable=True),
    Column("new_version", Integer, nullable=True),
    Column("content_hash", String(64), nullable=True),
)


def _migration_1_api_keys(conn: Connection) -> None:
    """API keys: one row per key, the secret only as its SHA-256."""
    frozen = MetaData()
    table = Table(
        "api_keys",
        frozen,
        Column("id", String(32), primary_key=True),
        Column("tenant", String(63), nullable=False),
        Column("admin", Boolean, nullable=False),
        Column("secret_hash", String(64), nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("created_by", String(32), ForeignKey("api_keys.id"), nullable=True),
        Column("revoked_at", UTCDateTime, nullable=True),
    )
    Index("ix_api_keys_tenant", table.c.tenant)
    frozen.create_all(conn)


def _migration_2_safety_configs(conn: Connection) -> None:
    """Safety configs: immutable versions per tenant, the active one, and an append-only audit log."""
    frozen = MetaData()
    Table(
        "safety_config_versions",
        frozen,
        Column("tenant", String(63), primary_key=True),
        Column("version", Integer, primary_key=True, autoincrement=False),
        Column("content", Text, nullable=False),
        Column("content_hash", String(64), nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("created_by", String(32), nullable=True),
    )
    Table(
        "safety_config_active",
        frozen,
        Column("tenant", String(63), primary_key=True),
        Column("version", Integer, nullable=True),
        Column("updated_at", UTCDateTime, nullable=False),
    )
    audit = Table(
        "safety_audit",
        frozen,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("at", UTCDateTime, nullable=False),
        Column("tenant", String(63), nullable=False),
        Column("actor", String(32), nullable=True),
        Column("action", String(16), nullable=False),
        Column("old_version", Integer, nullable=True),
        Column("new_version", Integer, nullable=True),
        Column("content_hash", String(64), nullable=True),
    )
    Index("ix_safety_audit_tenant_at", audit.c.tenant, audit.c.at)
    frozen.create_all(conn)


def _migration_3_tenant_policies(conn: Connection) -> None:
    """Tenants' policies: immutable versions per tenant, the active one, and an append-only audit log."""
    frozen = MetaData()
    Table(
        "tenant_policy_versions",
        frozen,
        Column("tenant", String(63), primary_key=True),
        Column("version", Integer, primary_key=True, autoincrement=False),
        Column("content", Text, nullable=False),
        Column("content_hash", String(64), nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("created_by", String(32), nullable=True),
    )
    Table(
        "tenant_policy_active",
        frozen,
        Column("tenant", String(63), primary_key=True),
        Column("version", Integer, nullable=True),
        Column("updated_at", UTCDateTime, nullable=False),
    )
    audit = Table(
        "tenant_policy_audit",
        frozen,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("at", UTCDateTime, nullable=False),
        Column("tenant", String(63), nullable=False),
        Column("actor", String(32), nullable=True),
        Column("action", String(16), nullable=False),
        Column("old_version", Integer, nullable=True),
        Column("new_version", Integer, nullable=True),
        Column("content_hash", String(64), nullable=True),
    )
    Index("ix_tenant_policy_audit_tenant_at", audit.c.tenant, audit.c.at)
    frozen.create_all(conn)


def _migration_4_usage(conn: Connection) -> None:
    """Metered usage: per tenant, hour (UTC) and request status, the counters ingress replicas add to."""
    frozen = MetaData()
    counters = (
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "generated_tokens",
        "candidate_tokens",
        "prefill_tokens",
        "reward_calls",
        "engine_requests",
        "safety_passed",
        "safety_resampled",
        "safety_refused",
        "safety_flagged",
    )  # frozen here: a later counter is a later migration
    usage = Table(
        "usage_hourly",
        frozen,
        Column("tenant", String(63), primary_key=True),
        Column("hour", UTCDateTime, primary_key=True),
        Column("status", String(32), primary_key=True),
        *(Column(name, BigInteger, nullable=False, server_default="0") for name in counters),
        Column("updated_at", UTCDateTime, nullable=False),
    )
    Index("ix_usage_hourly_hour", usage.c.hour)  # reads by time range over every tenant
    frozen.create_all(conn)


# Version N is MIGRATIONS[N - 1]. Append only: each step gets the open connection inside the
# migration's transaction (DDL is transactional on both backends) and may run any DDL/DML.
MIGRATIONS: list[Callable[[Connection], None]] = [
    _migration_1_api_keys,
    _migration_2_safety_configs,
    _migration_3_tenant_policies,
    _migration_4_usage,
]
