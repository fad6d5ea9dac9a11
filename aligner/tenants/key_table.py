"""The `api_keys` table's operations: create, import, authenticate, list, get, revoke."""

from __future__ import annotations

import hmac

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from aligner.errors import ConfigError, NotFound, shown
from aligner.tenants.backends import Database
from aligner.tenants.keys import (
    DUMMY_HASH,
    ID_PREFIX,
    KEY_PREFIX,
    hash_secret,
    is_key_id,
    key_parts,
    new_key_parts,
    validate_tenant,
)
from aligner.tenants.records import ApiKey, now, utc
from aligner.tenants.schema import api_keys

# Every column but the secret's hash: what a record may show.
PUBLIC = (
    api_keys.c.id,
    api_keys.c.tenant,
    api_keys.c.admin,
    api_keys.c.created_at,
    api_keys.c.created_by,
    api_keys.c.revoked_at,
)


def to_key(row) -> ApiKey:
    return ApiKey(
        id=row.id,
        tenant=row.tenant,
        admin=bool(row.admin),
        created_at=utc(row.created_at),
        created_by=row.created_by,
        revoked_at=utc(row.revoked_at),
    )


class KeyTable:
    def __init__(self, db: Database):
        self.db = db

    def create(self, tenant: str, *, admin: bool = False, created_by: str | None = None) -> tuple[ApiKey, str]:
        validate_tenant(tenant)
        if created_by is not None and not is_key_id(created_by):
            raise NotFound(f"API key {shown(created_by)} (created_by) does not exist")
        with self.db.write() as conn:
            if created_by is not None and conn.scalar(select(api_keys.c.id).where(api_keys.c.id == created_by)) is None:
                raise NotFound(f"API key {created_by!r} (created_by) does not exist")
            for _ in range(5):
                suffix, secret = new_key_parts()
                key_id = ID_PREFIX + suffix
                if conn.scalar(select(api_keys.c.id).where(api_keys.c.id == key_id)) is None:
                    break
            else:  # pragma: no cover - 48 random bits colliding five times in a row
                raise RuntimeError("could not allocate a unique API key id")
            record = ApiKey(id=key_id, tenant=tenant, admin=bool(admin), created_at=now(), created_by=created_by)
            conn.execute(
                insert(api_keys).values(
                    id=record.id,
                    tenant=record.tenant,
                    admin=record.admin,
                    secret_hash=hash_secret(secret),
                    created_at=record.created_at,
                    created_by=record.created_by,
                )
            )
        return record, f"{KEY_PREFIX}{suffix}_{secret}"

    def import_(self, key: str, tenant: str, *, admin: bool = False) -> ApiKey:
        parts = key_parts(key)
        if parts is None:
            raise ConfigError(
                "the key to import must look like alk_<12 hex digits>_<secret of 22-200 URL-safe "
                "characters> (make one with `aligner keys generate`)"
            )
        validate_tenant(tenant)
        suffix, secret = parts
        key_id = ID_PREFIX + suffix
        for _ in range(2):  # a second importer racing this one makes the insert fail; then read its row
            with self.db.read() as conn:
                row = conn.execute(select(*PUBLIC, api_keys.c.secret_hash).where(api_keys.c.id == key_id)).first()
            if row is not None:
                if not hmac.compare_digest(hash_secret(secret), row.secret_hash):
                    raise ConfigError(f"API key id {key_id} is already stored with another secret")
                return to_key(row)
            record = ApiKey(id=key_id, tenant=tenant, admin=bool(admin), created_at=now(), created_by=None)
            try:
                with self.db.write() as conn:
                    conn.execute(
                        insert(api_keys).values(
                            id=record.id,
                            tenant=record.tenant,
                            admin=record.admin,
                            secret_hash=hash_secret(secret),
                            created_at=record.created_at,
                            created_by=None,
                        )
                    )
                return record
            except IntegrityError:
                continue
        raise ConfigError(f"could not import API key {key_id}")  # pragma: no cover - the row vanished twice

    def authenticate(self, key: str) -> ApiKey | None:
        parts = key_parts(key)
        if parts is None:
            return None
        suffix, secret = parts
        with self.db.read() as conn:
            row = conn.execute(
                select(*PUBLIC, api_keys.c.secret_hash).where(api_keys.c.id == ID_PREFIX + suffix)
            ).first()
        presented = hash_secret(secret)
        if row is None:
            hmac.compare_digest(presented, DUMMY_HASH)  # same work as for a known id
            return None
        if not hmac.compare_digest(presented, row.secret_hash) or row.revoked_at is not None:
            return None
        return to_key(row)

    def list(self, tenant: str | None = None) -> list[ApiKey]:
        query = select(*PUBLIC).order_by(api_keys.c.created_at, api_keys.c.id)
        if tenant is not None:
            query = query.where(api_keys.c.tenant == validate_tenant(tenant))
        with self.db.read() as conn:
            return [to_key(row) for row in conn.execute(query)]

    def get(self, key_id: str) -> ApiKey:
        if is_key_id(key_id):
            with self.db.read() as conn:
                row = conn.execute(select(*PUBLIC).where(api_keys.c.id == key_id)).first()
            if row is not None:
                return to_key(row)
        raise NotFound(f"API key {shown(key_id)} does not exist")

    def revoke(self, key_id: str) -> ApiKey:
        if not is_key_id(key_id):
            raise NotFound(f"API key {shown(key_id)} does not exist")
        with self.db.write() as conn:
            conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now())
            )
            row = conn.execute(select(*PUBLIC).where(api_keys.c.id == key_id)).first()
        if row is None:
            raise NotFound(f"API key {key_id!r} does not exist")
        return to_key(row)
