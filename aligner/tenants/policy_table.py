"""Tenants' policies in the store: immutable versions, the active one, and the audit log (the shape of the
safety configs' table, aligner/tenants/safety_table.py).

Writes check the active version the writer expects (optimistic concurrency): a write that does not
expect the version in force fails with VersionConflict and stores nothing.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from aligner.errors import NotFound, VersionConflict
from aligner.tenants.backends import Database
from aligner.tenants.keys import validate_tenant
from aligner.tenants.policy import STORED, TenantPolicy
from aligner.tenants.records import AuditEntry, TenantPolicyVersion, utc
from aligner.tenants.schema import tenant_policy_active, tenant_policy_audit, tenant_policy_versions
from aligner.tenants.write_clock import write_time


def conflict(tenant: str) -> VersionConflict:
    # PostgreSQL: a concurrent writer inserted the same version (or active row) first.
    return VersionConflict(f"the policy of {tenant!r} was changed by another writer; read it again")


class PolicyTable:
    def __init__(self, db: Database):
        self.db = db

    def get(self, tenant: str) -> TenantPolicyVersion | None:
        validate_tenant(tenant)
        with self.db.read() as conn:
            active = conn.scalar(select(tenant_policy_active.c.version).where(tenant_policy_active.c.tenant == tenant))
            return None if active is None else _version_row(conn, tenant, active)

    def versions(self, tenant: str) -> list[TenantPolicyVersion]:
        validate_tenant(tenant)
        query = (
            select(tenant_policy_versions)
            .where(tenant_policy_versions.c.tenant == tenant)
            .order_by(tenant_policy_versions.c.version)
        )
        with self.db.read() as conn:
            return [_to_version(row) for row in conn.execute(query)]

    def set(
        self, tenant: str, policy: TenantPolicy, *, expected_version: int | None, actor: str | None
    ) -> TenantPolicyVersion:
        validate_tenant(tenant)
        content, content_hash = policy.canonical_json(), policy.content_hash()
        try:
            with self.db.write() as conn:
                old = _check_expected(conn, tenant, expected_version)
                latest = conn.scalar(
                    select(func.max(tenant_policy_versions.c.version)).where(tenant_policy_versions.c.tenant == tenant)
                )
                version = (latest or 0) + 1
                at = write_time(conn, tenant_policy_audit)
                conn.execute(
                    insert(tenant_policy_versions).values(
                        tenant=tenant,
                        version=version,
                        content=content,
                        content_hash=content_hash,
                        created_at=at,
                        created_by=actor,
                    )
                )
                _activate(conn, tenant, version, at)
                _audit(conn, tenant, actor, "set", old, version, content_hash, at)
                stored = _version_row(conn, tenant, version)
        except IntegrityError as exc:
            raise conflict(tenant) from exc
        assert stored is not None  # inserted in the same transaction
        return stored

    def activate(
        self, tenant: str, version: int, *, expected_version: int | None, actor: str | None
    ) -> TenantPolicyVersion:
        validate_tenant(tenant)
        try:
            with self.db.write() as conn:
                old = _check_expected(conn, tenant, expected_version)
                chosen = _version_row(conn, tenant, version)
                if chosen is None:
                    raise NotFound(f"the policy of {tenant!r} has no version {version}")
                at = write_time(conn, tenant_policy_audit)
                _activate(conn, tenant, version, at)
                _audit(conn, tenant, actor, "activate", old, version, chosen.content_hash, at)
        except IntegrityError as exc:
            raise conflict(tenant) from exc
        return chosen

    def audit(self, tenant: str | None = None, since: datetime | None = None) -> list[AuditEntry]:
        query = select(tenant_policy_audit).order_by(tenant_policy_audit.c.id)
        if tenant is not None:
            query = query.where(tenant_policy_audit.c.tenant == validate_tenant(tenant))
        if since is not None:
            query = query.where(tenant_policy_audit.c.at >= utc(since))
        with self.db.read() as conn:
            return [
                AuditEntry(
                    id=row.id,
                    at=utc(row.at),
                    tenant=row.tenant,
                    actor=row.actor,
                    action=row.action,
                    old_version=row.old_version,
                    new_version=row.new_version,
                    content_hash=row.content_hash,
                )
                for row in conn.execute(query)
            ]


def _check_expected(conn: Connection, tenant: str, expected: int | None) -> int | None:
    # FOR UPDATE: on PostgreSQL a concurrent writer waits here and then sees the new version
    # (SQLite's BEGIN IMMEDIATE already serialises writers).
    current = conn.scalar(
        select(tenant_policy_active.c.version).where(tenant_policy_active.c.tenant == tenant).with_for_update()
    )
    if expected != current:
        raise VersionConflict(
            f"expected_version is {expected} but the active policy of {tenant!r} is "
            f"{'none' if current is None else f'version {current}'}; read it again"
        )
    return current


def _activate(conn: Connection, tenant: str, version: int, at: datetime) -> None:
    done = conn.execute(
        update(tenant_policy_active)
        .where(tenant_policy_active.c.tenant == tenant)
        .values(version=version, updated_at=at)
    )
    if done.rowcount == 0:
        conn.execute(insert(tenant_policy_active).values(tenant=tenant, version=version, updated_at=at))


def _audit(
    conn: Connection,
    tenant: str,
    actor: str | None,
    action: str,
    old: int | None,
    new: int,
    content_hash: str,
    at: datetime,
) -> None:
    conn.execute(
        insert(tenant_policy_audit).values(
            at=at,
            tenant=tenant,
            actor=actor,
            action=action,
            old_version=old,
            new_version=new,
            content_hash=content_hash,
        )
    )


def _version_row(conn: Connection, tenant: str, version: int) -> TenantPolicyVersion | None:
    row = conn.execute(
        select(tenant_policy_versions).where(
            tenant_policy_versions.c.tenant == tenant, tenant_policy_versions.c.version == version
        )
    ).first()
    return None if row is None else _to_version(row)


def _to_version(row) -> TenantPolicyVersion:
    return TenantPolicyVersion(
        tenant=row.tenant,
        version=row.version,
        policy=TenantPolicy.model_validate_json(row.content, context=STORED),
        content_hash=row.content_hash,
        created_at=utc(row.created_at),
        created_by=row.created_by,
    )
