"""`TenantStore`: API keys and tenants' safety configs in one SQL database, and the interface of the latter.

Opening a store applies the missing migrations of `schema.MIGRATIONS`, each in its own
transaction under a lock, so replicas starting together are safe. The store is thread-safe:
every call takes its own pooled connection.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import datetime
from typing import Protocol, Self

from sqlalchemy import func, insert, select
from sqlalchemy.exc import SQLAlchemyError

import aligner.tenants.schema as schema
from aligner.errors import ConfigError
from aligner.safety.config import SafetyConfig
from aligner.tenants.backends import Database
from aligner.tenants.key_table import KeyTable
from aligner.tenants.policy import TenantPolicy
from aligner.tenants.policy_table import policy_table
from aligner.tenants.records import ApiKey, AuditEntry, SafetyConfigVersion, TenantPolicyVersion, now
from aligner.tenants.safety_table import safety_config_table
from aligner.tenants.usage_table import UsageCounts, UsageKey, UsageRow, UsageTable

log = logging.getLogger(__name__)

ADMIN_KEY_ENV = "ALIGNER_ADMIN_KEY"  # a deployment's bootstrap admin key, imported at start (tenant "admin")


class SafetyConfigStore(Protocol):
    """Tenants' safety configs: what `aligner safety` manages, in the store itself (`TenantStore`) or
    through a running server's admin API (`serve.client.http.AdminClient`, which audits with its key's
    id and ignores `actor`)."""

    def get_safety_config(self, tenant: str) -> SafetyConfigVersion | None: ...

    def safety_config_versions(self, tenant: str) -> list[SafetyConfigVersion]: ...

    def set_safety_config(
        self, tenant: str, config: SafetyConfig, *, expected_version: int | None, actor: str | None = None
    ) -> SafetyConfigVersion: ...

    def activate_safety_config(
        self, tenant: str, version: int, *, expected_version: int | None, actor: str | None = None
    ) -> SafetyConfigVersion: ...

    def delete_safety_config(self, tenant: str, *, expected_version: int | None, actor: str | None = None) -> None: ...

    def safety_audit(self, tenant: str | None = None, since: datetime | None = None) -> list[AuditEntry]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


class TenantPolicyStore(Protocol):
    """Tenants' policies: what `aligner tenants policy` manages, in the store itself (`TenantStore`) or
    through a running server's admin API (`serve.client.http.AdminClient`, which audits with its key's id,
    ignores `actor`, and checks the policy against the server's limits and objectives)."""

    def get_tenant_policy(self, tenant: str) -> TenantPolicyVersion | None: ...

    def tenant_policy_versions(self, tenant: str) -> list[TenantPolicyVersion]: ...

    def set_tenant_policy(
        self, tenant: str, policy: TenantPolicy, *, expected_version: int | None, actor: str | None = None
    ) -> TenantPolicyVersion: ...

    def activate_tenant_policy(
        self, tenant: str, version: int, *, expected_version: int | None, actor: str | None = None
    ) -> TenantPolicyVersion: ...

    def tenant_policy_audit(self, tenant: str) -> list[AuditEntry]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


class TenantStore(SafetyConfigStore, TenantPolicyStore):
    """API keys, safety configs and policies in a SQL database (see `backends` for SQLite and PostgreSQL)."""

    def __init__(self, db: Database):
        self._db = db
        self._keys = KeyTable(db)
        self._configs = safety_config_table(db)
        self._policies = policy_table(db)
        self._usage = UsageTable(db)
        self.url = db.url  # password masked

    @classmethod
    def open(cls, url: str) -> TenantStore:
        """Connect, create the SQLite file if needed, and apply pending migrations."""
        db = Database.connect(url)
        store = cls(db)
        try:
            store.migrate()
        except SQLAlchemyError as exc:
            db.close()
            raise ConfigError(f"tenant store {db.url!r}: cannot open the database: {db.reason(exc)}") from None
        except BaseException:
            db.close()
            raise
        return store

    def close(self) -> None:
        self._db.close()

    def reason(self, exc: BaseException) -> str:
        """What to log of a store error: its first line, with no part of the URL's user-info."""
        return self._db.reason(exc)

    def __enter__(self) -> TenantStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def backend(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self._db.backend

    # -- migrations
    def migrate(self) -> int:
        """Apply the migrations not yet applied, each in its own locked transaction; the version."""
        migrations = schema.MIGRATIONS  # read at call time: a test appends a step
        table = schema.schema_migrations
        for version, step in enumerate(migrations, start=1):
            with self._db.write() as conn:
                self._db.lock_for_migration(conn)
                table.create(conn, checkfirst=True)
                if conn.scalar(select(table.c.version).where(table.c.version == version)) is not None:
                    continue
                log.info("tenant store %s: applying migration %d (%s)", self.url, version, step.__name__)
                step(conn)
                conn.execute(insert(table).values(version=version, applied_at=now()))
        version = self.schema_version()
        if version > len(migrations):
            log.warning(
                "tenant store %s: schema version %d is newer than this Aligner knows (%d)",
                self.url,
                version,
                len(migrations),
            )
        return version

    def schema_version(self) -> int:
        """The highest applied migration (0 for an empty database)."""
        table = schema.schema_migrations
        with self._db.read() as conn:
            if not conn.dialect.has_table(conn, table.name):
                return 0
            return conn.scalar(select(func.max(table.c.version))) or 0

    # -- keys
    def create_key(self, tenant: str, *, admin: bool = False, created_by: str | None = None) -> tuple[ApiKey, str]:
        """A new key for `tenant`: its record and the plaintext key (returned only this once)."""
        return self._keys.create(tenant, admin=admin, created_by=created_by)

    def import_key(self, key: str, tenant: str, *, admin: bool = False) -> ApiKey:
        """Store a key made elsewhere (a deployment's bootstrap admin key from a Kubernetes Secret).

        Idempotent: when its id is already stored, the stored record is returned unchanged — a
        revoked bootstrap key stays revoked (rotate it by putting a new key in the Secret).
        A key of the wrong shape, or whose id is stored with another secret, is a ConfigError."""
        return self._keys.import_(key, tenant, admin=admin)

    def authenticate(self, key: str) -> ApiKey | None:
        """The key's record when `key` is a valid, unrevoked key; None for anything else."""
        return self._keys.authenticate(key)

    def list_keys(self, tenant: str | None = None) -> list[ApiKey]:
        """Every key (of `tenant`, when given), revoked ones included, oldest first."""
        return self._keys.list(tenant)

    def get_key(self, key_id: str) -> ApiKey:
        """The key with this id; NotFound when there is none."""
        return self._keys.get(key_id)

    def revoke_key(self, key_id: str) -> ApiKey:
        """Revoke a key (again: a no-op keeping the first revocation time); NotFound when unknown."""
        return self._keys.revoke(key_id)

    # -- safety configs
    def get_safety_config(self, tenant: str) -> SafetyConfigVersion | None:
        """The tenant's active safety config; None when it has none (never set, or deleted)."""
        return self._configs.get(tenant)

    def safety_config_versions(self, tenant: str) -> list[SafetyConfigVersion]:
        """Every version of the tenant's config, oldest first."""
        return self._configs.versions(tenant)

    def set_safety_config(
        self, tenant: str, config: SafetyConfig, *, expected_version: int | None, actor: str | None = None
    ) -> SafetyConfigVersion:
        """Store `config` as the tenant's next version and make it active.

        `expected_version` is the active version the writer last read (None: no active config);
        if another write came first, VersionConflict, and nothing is stored.
        """
        return self._configs.set(tenant, config, expected_version=expected_version, actor=actor)

    def activate_safety_config(
        self, tenant: str, version: int, *, expected_version: int | None, actor: str | None = None
    ) -> SafetyConfigVersion:
        """Make an existing version active again (a rollback); NotFound for an unknown version."""
        return self._configs.activate(tenant, version, expected_version=expected_version, actor=actor)

    def delete_safety_config(self, tenant: str, *, expected_version: int | None, actor: str | None = None) -> None:
        """Deactivate the tenant's config (its versions and the audit stay); NotFound when none is active."""
        self._configs.delete(tenant, expected_version=expected_version, actor=actor)

    def safety_audit(self, tenant: str | None = None, since: datetime | None = None) -> list[AuditEntry]:
        """Every change (of `tenant`, at or after `since`), oldest first. There is no way to edit it."""
        return self._configs.audit(tenant, since)

    # -- tenants' policies
    def get_tenant_policy(self, tenant: str) -> TenantPolicyVersion | None:
        """The tenant's active policy; None when it never had one (the server's limits alone apply)."""
        return self._policies.get(tenant)

    def tenant_policy_versions(self, tenant: str) -> list[TenantPolicyVersion]:
        """Every version of the tenant's policy, oldest first."""
        return self._policies.versions(tenant)

    def set_tenant_policy(
        self, tenant: str, policy: TenantPolicy, *, expected_version: int | None, actor: str | None = None
    ) -> TenantPolicyVersion:
        """Store `policy` as the tenant's next version and make it active; `expected_version` as for
        safety configs (None: no active policy), VersionConflict when another write came first."""
        return self._policies.set(tenant, policy, expected_version=expected_version, actor=actor)

    def activate_tenant_policy(
        self, tenant: str, version: int, *, expected_version: int | None, actor: str | None = None
    ) -> TenantPolicyVersion:
        """Make an existing version active again (a rollback); NotFound for an unknown version."""
        return self._policies.activate(tenant, version, expected_version=expected_version, actor=actor)

    def tenant_policy_audit(self, tenant: str | None = None, since: datetime | None = None) -> list[AuditEntry]:
        """Every policy change (of `tenant`, at or after `since`), oldest first."""
        return self._policies.audit(tenant, since)

    # -- metered usage
    def add_usage(self, counts: Mapping[UsageKey, UsageCounts]) -> None:
        """Add each (tenant, hour, status)'s counts to its stored row, atomically (several writers add up)."""
        self._usage.add(counts)

    def usage(
        self, tenant: str | None = None, since: datetime | None = None, until: datetime | None = None
    ) -> list[UsageRow]:
        """The usage rows (of `tenant`) of every hour overlapping [since, until), by tenant, hour, status."""
        return self._usage.rows(tenant, since, until)


def import_bootstrap_admin_key(store: TenantStore) -> ApiKey | None:
    """Import $ALIGNER_ADMIN_KEY (if set) as an admin key of tenant "admin"; see TenantStore.import_key."""
    key = os.environ.get(ADMIN_KEY_ENV, "").strip()
    return store.import_key(key, "admin", admin=True) if key else None
