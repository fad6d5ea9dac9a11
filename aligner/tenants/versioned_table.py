"""Versioned per-tenant documents in the store (safety configs, policies): immutable numbered versions, the
active one, and an audit row per change.

Writes check the active version the writer expects (optimistic concurrency): a write that does not
expect the version in force fails with VersionConflict and stores nothing. Every row a write stamps gets
the database's time, read inside its transaction (write_clock.py); the audit log is in commit order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from aligner.errors import NotFound, VersionConflict
from aligner.tenants.backends import Database
from aligner.tenants.keys import validate_tenant
from aligner.tenants.records import AuditEntry, utc
from aligner.tenants.write_clock import write_time


class Document(Protocol):
    def canonical_json(self) -> str: ...

    def content_hash(self) -> str: ...


class Stored(Protocol):
    @property
    def content_hash(self) -> str: ...


StoredT = TypeVar("StoredT", bound=Stored)


@dataclass(frozen=True)
class DocumentTables:
    """Where one kind of document lives, and how its stored rows read back."""

    noun: str  # in messages: "safety config", "policy"
    versions: Table
    active: Table
    audit: Table


class VersionedTable(Generic[StoredT]):
    def __init__(self, db: Database, tables: DocumentTables, to_record: Callable[[Any], StoredT]):
        self.db, self.tables, self.to_record = db, tables, to_record

    def conflict(self, tenant: str) -> VersionConflict:
        # PostgreSQL: a concurrent writer inserted the same version (or active row) first.
        return VersionConflict(f"the {self.tables.noun} of {tenant!r} was changed by another writer; read it again")

    def get(self, tenant: str) -> StoredT | None:
        validate_tenant(tenant)
        active = self.tables.active
        with self.db.read() as conn:
            version = conn.scalar(select(active.c.version).where(active.c.tenant == tenant))
            return None if version is None else self._version(conn, tenant, version)

    def versions(self, tenant: str) -> list[StoredT]:
        validate_tenant(tenant)
        versions = self.tables.versions
        query = select(versions).where(versions.c.tenant == tenant).order_by(versions.c.version)
        with self.db.read() as conn:
            return [self.to_record(row) for row in conn.execute(query)]

    def set(self, tenant: str, document: Document, *, expected_version: int | None, actor: str | None) -> StoredT:
        """Store `document` as the tenant's next version and make it the active one."""
        validate_tenant(tenant)
        content, content_hash = document.canonical_json(), document.content_hash()
        versions = self.tables.versions
        try:
            with self.db.write() as conn:
                old = self._check_expected(conn, tenant, expected_version)
                latest = conn.scalar(select(func.max(versions.c.version)).where(versions.c.tenant == tenant))
                version = (latest or 0) + 1
                at = write_time(conn, self.tables.audit)
                conn.execute(
                    insert(versions).values(
                        tenant=tenant,
                        version=version,
                        content=content,
                        content_hash=content_hash,
                        created_at=at,
                        created_by=actor,
                    )
                )
                self._activate(conn, tenant, version, at)
                self._audit(conn, tenant, actor, "set", old, version, content_hash, at)
                stored = self._version(conn, tenant, version)
        except IntegrityError as exc:
            raise self.conflict(tenant) from exc
        assert stored is not None  # inserted in the same transaction
        return stored

    def activate(self, tenant: str, version: int, *, expected_version: int | None, actor: str | None) -> StoredT:
        """Make a stored version the active one (a rollback)."""
        validate_tenant(tenant)
        try:
            with self.db.write() as conn:
                old = self._check_expected(conn, tenant, expected_version)
                chosen = self._version(conn, tenant, version)
                if chosen is None:
                    raise NotFound(f"the {self.tables.noun} of {tenant!r} has no version {version}")
                at = write_time(conn, self.tables.audit)
                self._activate(conn, tenant, version, at)
                self._audit(conn, tenant, actor, "activate", old, version, chosen.content_hash, at)
        except IntegrityError as exc:
            raise self.conflict(tenant) from exc
        return chosen

    def delete(self, tenant: str, *, expected_version: int | None, actor: str | None) -> None:
        """No version active any more (the versions stay, for the audit and a later activate)."""
        validate_tenant(tenant)
        try:
            with self.db.write() as conn:
                old = self._check_expected(conn, tenant, expected_version)
                if old is None:
                    raise NotFound(f"tenant {tenant!r} has no active {self.tables.noun}")
                at = write_time(conn, self.tables.audit)
                self._activate(conn, tenant, None, at)
                self._audit(conn, tenant, actor, "delete", old, None, None, at)
        except IntegrityError as exc:
            raise self.conflict(tenant) from exc

    def audit(self, tenant: str | None = None, since: datetime | None = None) -> list[AuditEntry]:
        # Commit order (write_clock.py); `since` compares the database's own times.
        audit = self.tables.audit
        query = select(audit).order_by(audit.c.id)
        if tenant is not None:
            query = query.where(audit.c.tenant == validate_tenant(tenant))
        if since is not None:
            query = query.where(audit.c.at >= utc(since))
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

    def _check_expected(self, conn: Connection, tenant: str, expected: int | None) -> int | None:
        # FOR UPDATE: on PostgreSQL a concurrent writer waits here and then sees the new version
        # (SQLite's BEGIN IMMEDIATE already serialises writers).
        active = self.tables.active
        current = conn.scalar(select(active.c.version).where(active.c.tenant == tenant).with_for_update())
        if expected != current:
            raise VersionConflict(
                f"expected_version is {expected} but the active {self.tables.noun} of {tenant!r} is "
                f"{'none' if current is None else f'version {current}'}; read it again"
            )
        return current

    def _activate(self, conn: Connection, tenant: str, version: int | None, at: datetime) -> None:
        active = self.tables.active
        done = conn.execute(update(active).where(active.c.tenant == tenant).values(version=version, updated_at=at))
        if done.rowcount == 0:
            conn.execute(insert(active).values(tenant=tenant, version=version, updated_at=at))

    def _audit(
        self,
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
            insert(self.tables.audit).values(
                at=at,
                tenant=tenant,
                actor=actor,
                action=action,
                old_version=old,
                new_version=new,
                content_hash=content_hash,
            )
        )

    def _version(self, conn: Connection, tenant: str, version: int) -> StoredT | None:
        versions = self.tables.versions
        query = select(versions).where(versions.c.tenant == tenant, versions.c.version == version)
        row = conn.execute(query).first()
        return None if row is None else self.to_record(row)
