"""Tenants' safety configs in the store: immutable versions, the active one, and the audit log.

Writes check the active version the writer expects (optimistic concurrency): a write that
does not expect the version in force fails with VersionConflict and stores nothing. Every row a
write stamps gets the database's time, read inside its transaction (write_clock.py).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from aligner.errors import NotFound, VersionConflict
from aligner.safety.config import SafetyConfig
from aligner.tenants.backends import Database
from aligner.tenants.keys import validate_tenant
from aligner.tenants.records import AuditEntry, SafetyConfigVersion, utc
from aligner.tenants.schema import safety_audit, safety_config_active, safety_config_versions
from aligner.tenants.write_clock import write_time


def conflict(tenant: str) -> VersionConflict:
    # PostgreSQL: a concurrent writer inserted the same version (or active row) first.
    return VersionConflict(f"the safety config of {tenant!r} was changed by another writer; read it again")


class SafetyConfigTable:
    def __init__(self, db: Database):
        self.db = db

    def get(self, tenant: str) -> SafetyConfigVersion | None:
        validate_tenant(tenant)
        with self.db.read() as conn:
            active = conn.scalar(select(safety_config_active.c.version).where(safety_config_active.c.tenant == tenant))
            return None if active is None else _version_row(conn, tenant, active)

    def versions(self, tenant: str) -> list[SafetyConfigVersion]:
        validate_tenant(tenant)
        query = (
            select(safety_config_versions)
            .where(safety_config_versions.c.tenant == tenant)
            .order_by(safety_config_versions.c.version)
        )
        with self.db.read() as conn:
            return [_to_version(row) for row in conn.execute(query)]

    def set(
        self, tenant: str, config: SafetyConfig, *, expected_version: int | None, actor: str | None
    ) -> SafetyConfigVersion:
        validate_tenant(tenant)
        content, content_hash = config.canonical_json(), config.content_hash()
        try:
            with self.db.write() as conn:
                old = _check_expected(conn, tenant, expected_version)
                latest = conn.scalar(
                    select(func.max(safety_config_versions.c.version)).where(safety_config_versions.c.tenant == tenant)
                )
                version = (latest or 0) + 1
                at = write_time(conn, safety_audit)
                conn.execute(
                    insert(safety_config_versions).values(
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
        except IntegrityError as exc:
            raise conflict(tenant) from exc
        with self.db.read() as conn:
            stored = _version_row(conn, tenant, version)
        if stored is None:
            raise NotFound(f"the safety config of {tenant!r} has no version {version}")
        return stored

    def activate(
        self, tenant: str, version: int, *, expected_version: int | None, actor: str | None
    ) -> SafetyConfigVersion:
        validate_tenant(tenant)
        try:
            with self.db.write() as conn:
                old = _check_expected(conn, tenant, expected_version)
                chosen = _version_row(conn, tenant, version)
                if chosen is None:
                    raise NotFound(f"the safety config of {tenant!r} has no version {version}")
                at = write_time(conn, safety_audit)
                _activate(conn, tenant, version, at)
                _audit(conn, tenant, actor, "activate", old, version, chosen.content_hash, at)
        except IntegrityError as exc:
            raise conflict(tenant) from exc
        return chosen

    def delete(self, tenant: str, *, expected_version: int | None, actor: str | None) -> None:
        validate_tenant(tenant)
        try:
            with self.db.write() as conn:
                old = _check_expected(conn, tenant, expected_version)
                if old is None:
                    raise NotFound(f"tenant {tenant!r} has no active safety config")
                at = write_time(conn, safety_audit)
                _activate(conn, tenant, None, at)
                _audit(conn, tenant, actor, "delete", old, None, None, at)
        except IntegrityError as exc:
            raise conflict(tenant) from exc

    def audit(self, tenant: str | None = None, since: datetime | None = None) -> list[AuditEntry]:
        # Commit order (write_clock.py); `since` compares the database's own times.
        query = select(safety_audit).order_by(safety_audit.c.id)
        if tenant is not None:
            query = query.where(safety_audit.c.tenant == validate_tenant(tenant))
        if since is not None:
            query = query.where(safety_audit.c.at >= utc(since))
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
        select(safety_config_active.c.version).where(safety_config_active.c.tenant == tenant).with_for_update()
    )
    if expected != current:
        raise VersionConflict(
            f"expected_version is {expected} but the active safety config of {tenant!r} is "
            f"{'none' if current is None else f'version {current}'}; read it again"
        )
    return current


def _activate(conn: Connection, tenant: str, version: int | None, at: datetime) -> None:
    done = conn.execute(
        update(safety_config_active)
        .where(safety_config_active.c.tenant == tenant)
        .values(version=version, updated_at=at)
    )
    if done.rowcount == 0:
        conn.execute(insert(safety_config_active).values(tenant=tenant, version=version, updated_at=at))


def _audit(
    conn: Connection,
    tenant: str,
    actor: str | None,
    action: str,
    old: int | None,
    new: int | None,
    content_hash: str | None,
    at: datetime,
) -> None:
    conn.execute(
        insert(safety_audit).values(
            at=at,
            tenant=tenant,
            actor=actor,
            action=action,
            old_version=old,
            new_version=new,
            content_hash=content_hash,
        )
    )


def _version_row(conn: Connection, tenant: str, version: int) -> SafetyConfigVersion | None:
    row = conn.execute(
        select(safety_config_versions).where(
            safety_config_versions.c.tenant == tenant, safety_config_versions.c.version == version
        )
    ).first()
    return None if row is None else _to_version(row)


def _to_version(row) -> SafetyConfigVersion:
    return SafetyConfigVersion(
        tenant=row.tenant,
        version=row.version,
        config=SafetyConfig.model_validate_json(row.content),
        content_hash=row.content_hash,
        created_at=utc(row.created_at),
        created_by=row.created_by,
    )
