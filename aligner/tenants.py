"""The tenant store: API keys (and later per-tenant data) in SQL.

Two backends behave the same: an embedded SQLite file (the default, under the
cache directory; several processes may share it) and PostgreSQL by URL (driver
psycopg 3). The schema is versioned: `schema_migrations` records which of the
ordered `MIGRATIONS` are applied, and opening a store applies the missing ones,
each in its own transaction under a lock, so replicas starting together are safe.

An API key is `alk_<12 hex>_<secret>`: the hex part names the row (`key_<12 hex>`),
the secret is 256 random bits of which only the SHA-256 is stored. The plaintext
exists once, in the return value of `create_key`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (
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
    create_engine,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, SQLAlchemyError

from aligner.errors import ConfigError, InvalidRequest, NotFound, VersionConflict

log = logging.getLogger(__name__)

TENANT_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
_TENANT_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
KEY_PREFIX = "alk_"
ID_PREFIX = "key_"
ID_HEX_CHARS = 12
SECRET_BYTES = 32  # 256 bits; token_urlsafe gives 43 characters
MAX_KEY_CHARS = 256
_KEY_RE = re.compile(r"alk_([0-9a-f]{12})_([A-Za-z0-9_-]{22,200})")
_ID_RE = re.compile(r"key_[0-9a-f]{12}")
_DUMMY_HASH = hashlib.sha256(b"aligner: no such key").hexdigest()
# Any constant will do: it only has to be the same for every process migrating this database.
_PG_MIGRATION_LOCK = 0x616C_6967_6E65_72  # "aligner"
SQLITE_BUSY_TIMEOUT_S = 30.0
PG_CONNECT_TIMEOUT_S = 10


STORE_ENV = "ALIGNER_TENANT_STORE"
ADMIN_KEY_ENV = "ALIGNER_ADMIN_KEY"  # a deployment's bootstrap admin key, imported at start (tenant "admin")


def default_store_url() -> str:
    """$ALIGNER_TENANT_STORE, else `sqlite:///<cache dir>/tenants.db` (its directory is created on open).

    One rule for every process (the keys CLI, `aligner serve`, each ingress replica), so keys
    made with `aligner keys` are the ones the server checks."""
    from aligner.model_cache import cache_dir

    return os.environ.get(STORE_ENV) or f"sqlite:///{cache_dir() / 'tenants.db'}"


def import_bootstrap_admin_key(store: TenantStore) -> ApiKey | None:
    """Import $ALIGNER_ADMIN_KEY (if set) as an admin key of tenant "admin"; see TenantStore.import_key."""
    key = os.environ.get(ADMIN_KEY_ENV, "").strip()
    return store.import_key(key, "admin", admin=True) if key else None


def generate_key() -> str:
    """A fresh key, `alk_<id hex>_<secret>`, not stored anywhere."""
    return f"{KEY_PREFIX}{secrets.token_hex(ID_HEX_CHARS // 2)}_{secrets.token_urlsafe(SECRET_BYTES)}"


def _key_parts(key: str) -> tuple[str, str]:
    suffix, secret = _KEY_RE.fullmatch(key).groups()
    return suffix, secret


def validate_tenant(tenant: str) -> str:
    """The tenant name itself, or InvalidRequest("tenant", ...) naming the allowed pattern."""
    if not isinstance(tenant, str) or _TENANT_RE.fullmatch(tenant) is None:
        shown = repr(tenant) if not isinstance(tenant, str) or len(tenant) <= 80 else repr(tenant[:80]) + "..."
        raise InvalidRequest(
            "tenant",
            f"invalid tenant name {shown}: it must match {TENANT_PATTERN} "
            "(1-63 characters: lower-case letters, digits, '_', '.', '-', starting with a letter or digit)",
        )
    return tenant


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", str(url))


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite keeps no zone; everything stored is UTC
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _shown_id(key_id: object) -> str:
    text = repr(key_id)
    return text if len(text) <= 40 else text[:40] + "..."


@dataclass(frozen=True)
class ApiKey:
    """An API key's public record: never the secret nor its hash."""

    id: str
    tenant: str
    admin: bool
    created_at: datetime
    created_by: str | None = None
    revoked_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "admin": self.admin,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


# --- schema -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SafetyConfigVersion:
    """One immutable version of a tenant's safety config."""

    tenant: str
    version: int
    config: Any  # aligner.safety.SafetyConfig
    content_hash: str
    created_at: datetime
    created_by: str | None

    def to_dict(self) -> dict:
        return {
            "tenant": self.tenant,
            "version": self.version,
            "config": self.config.model_dump(mode="json"),
            "content_hash": self.content_hash,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
        }


@dataclass(frozen=True)
class AuditEntry:
    """One change of a safety config: who, when, what, old -> new version, hash of the new content."""

    id: int
    at: datetime
    tenant: str
    actor: str | None
    action: str  # set | activate | delete
    old_version: int | None
    new_version: int | None
    content_hash: str | None

    def to_dict(self) -> dict:
        return {**{k: getattr(self, k) for k in ("id", "tenant", "actor", "action", "old_version", "new_version",
                                                  "content_hash")}, "at": self.at.isoformat()}


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC timestamp on both backends (SQLite stores it without a zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the tenant store; use an aware UTC datetime")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        return _utc(value)


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


# Version N is MIGRATIONS[N - 1]. Append only: each step gets the open connection inside the
# migration's transaction (DDL is transactional on both backends) and may run any DDL/DML.
MIGRATIONS: list[Callable[[Connection], None]] = [
    _migration_1_api_keys,
    _migration_2_safety_configs,
]


# --- engine -------------------------------------------------------------------------------------
def _engine_for(url_text: str) -> tuple[Engine, str]:
    """A configured engine for a store URL, and the URL as shown in messages (password masked)."""
    shown = mask_url(url_text)
    if not isinstance(url_text, str) or not url_text.strip():
        raise ConfigError("tenant store: the URL is empty; use sqlite:///PATH or postgresql://USER@HOST/DB")
    try:
        url = make_url(url_text.strip())
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(
            f"tenant store: cannot parse the URL {shown!r} ({exc}); use sqlite:///PATH or postgresql://USER@HOST/DB"
        ) from None
    shown = url.render_as_string(hide_password=True)
    backend = url.drivername.split("+", 1)[0]
    driver = url.drivername.partition("+")[2]
    if backend in ("postgres", "postgresql") and driver in ("", "psycopg"):
        return _postgres_engine(url.set(drivername="postgresql+psycopg"), shown), shown
    if backend == "sqlite" and driver in ("", "pysqlite"):
        return _sqlite_engine(url, shown), shown
    raise ConfigError(
        f"tenant store: unsupported database URL {shown!r}: use sqlite:///PATH (embedded) "
        "or postgresql://USER:PASSWORD@HOST:PORT/DB (driver psycopg)"
    )


def _postgres_engine(url: URL, shown: str) -> Engine:
    connect_args = {} if "connect_timeout" in url.query else {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    try:
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    except (NoSuchModuleError, ImportError) as exc:
        raise ConfigError(f"tenant store {shown!r}: the PostgreSQL driver is missing ({exc}); install psycopg") from None


def _sqlite_engine(url: URL, shown: str) -> Engine:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:") or url.query.get("mode") == "memory":
        raise ConfigError(
            f"tenant store {shown!r}: an in-memory SQLite database cannot be shared between "
            "connections and processes; give a file, e.g. sqlite:////var/lib/aligner/tenants.db"
        )
    path = Path(database).expanduser().absolute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"tenant store {shown!r}: cannot create {path.parent}: {exc.strerror}") from None
    engine = create_engine(
        url.set(database=str(path)),
        # The driver must not manage transactions itself: BEGIN is issued by the "begin" hook below.
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S, "isolation_level": None},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            # Switching to WAL takes an exclusive lock and ignores the busy timeout, so two
            # processes creating the store at once can see "locked": retry briefly.
            for attempt in range(50):
                try:
                    if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                        cursor.execute("PRAGMA journal_mode = WAL")
                    break
                except Exception as exc:
                    if "locked" not in str(exc) or attempt == 49:
                        raise
                    time.sleep(0.05)
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front (waiting up to the busy timeout), so a transaction
        # never fails half-way trying to upgrade a read lock; readers stay concurrent.
        immediate = conn.get_execution_options().get("aligner_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(orig).__name__


# --- the store ----------------------------------------------------------------------------------
class TenantStore:
    """API keys in a SQL database. Thread-safe: every call takes its own pooled connection."""

    def __init__(self, engine: Engine, shown_url: str):
        self._engine = engine
        self._writer = engine.execution_options(aligner_write=True)
        self.url = shown_url  # password masked

    @classmethod
    def open(cls, url: str) -> TenantStore:
        """Connect, create the SQLite file if needed, and apply pending migrations."""
        engine, shown = _engine_for(url)
        store = cls(engine, shown)
        try:
            store.migrate()
        except SQLAlchemyError as exc:
            engine.dispose()
            raise ConfigError(f"tenant store {shown!r}: cannot open the database: {_reason(exc)}") from None
        except BaseException:
            engine.dispose()
            raise
        return store

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> TenantStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def backend(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self._engine.dialect.name

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite), committed on success."""
        with self._writer.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._engine.connect() as conn:
            yield conn

    # -- migrations
    def _lock_for_migration(self, conn: Connection) -> None:
        if self.backend == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        # SQLite: BEGIN IMMEDIATE already holds the database's write lock.

    def migrate(self) -> int:
        """Apply the migrations not yet applied, each in its own locked transaction; the version."""
        for version, step in enumerate(MIGRATIONS, start=1):
            with self._write() as conn:
                self._lock_for_migration(conn)
                schema_migrations.create(conn, checkfirst=True)
                done = conn.scalar(select(schema_migrations.c.version).where(schema_migrations.c.version == version))
                if done is not None:
                    continue
                log.info("tenant store %s: applying migration %d (%s)", self.url, version, step.__name__)
                step(conn)
                conn.execute(insert(schema_migrations).values(version=version, applied_at=_now()))
        version = self.schema_version()
        if version > len(MIGRATIONS):
            log.warning(
                "tenant store %s: schema version %d is newer than this Aligner knows (%d)",
                self.url, version, len(MIGRATIONS),
            )
        return version

    def schema_version(self) -> int:
        """The highest applied migration (0 for an empty database)."""
        with self._read() as conn:
            if not conn.dialect.has_table(conn, schema_migrations.name):
                return 0
            return conn.scalar(select(func.max(schema_migrations.c.version))) or 0

    # -- keys
    @staticmethod
    def _row_to_key(row) -> ApiKey:
        return ApiKey(
            id=row.id,
            tenant=row.tenant,
            admin=bool(row.admin),
            created_at=_utc(row.created_at),
            created_by=row.created_by,
            revoked_at=_utc(row.revoked_at),
        )

    _PUBLIC = (
        api_keys.c.id,
        api_keys.c.tenant,
        api_keys.c.admin,
        api_keys.c.created_at,
        api_keys.c.created_by,
        api_keys.c.revoked_at,
    )

    def create_key(self, tenant: str, *, admin: bool = False, created_by: str | None = None) -> tuple[ApiKey, str]:
        """A new key for `tenant`: its record and the plaintext key (returned only this once)."""
        validate_tenant(tenant)
        if created_by is not None and (not isinstance(created_by, str) or _ID_RE.fullmatch(created_by) is None):
            raise NotFound(f"API key {_shown_id(created_by)} (created_by) does not exist")
        with self._write() as conn:
            if created_by is not None and conn.scalar(select(api_keys.c.id).where(api_keys.c.id == created_by)) is None:
                raise NotFound(f"API key {created_by!r} (created_by) does not exist")
            for _ in range(5):
                suffix, secret = _key_parts(generate_key())
                key_id = ID_PREFIX + suffix
                if conn.scalar(select(api_keys.c.id).where(api_keys.c.id == key_id)) is None:
                    break
            else:  # pragma: no cover - 48 random bits colliding five times in a row
                raise RuntimeError("could not allocate a unique API key id")
            record = ApiKey(id=key_id, tenant=tenant, admin=bool(admin), created_at=_now(), created_by=created_by)
            conn.execute(
                insert(api_keys).values(
                    id=record.id,
                    tenant=record.tenant,
                    admin=record.admin,
                    secret_hash=_hash_secret(secret),
                    created_at=record.created_at,
                    created_by=record.created_by,
                )
            )
        return record, f"{KEY_PREFIX}{suffix}_{secret}"

    def import_key(self, key: str, tenant: str, *, admin: bool = False) -> ApiKey:
        """Store a key made elsewhere (a deployment's bootstrap admin key from a Kubernetes Secret).

        Idempotent: when its id is already stored, the stored record is returned unchanged — a
        revoked bootstrap key stays revoked (rotate it by putting a new key in the Secret).
        A key of the wrong shape, or whose id is stored with another secret, is a ConfigError."""
        match = _KEY_RE.fullmatch(key) if isinstance(key, str) and len(key) <= MAX_KEY_CHARS else None
        if match is None:
            raise ConfigError("the key to import must look like alk_<12 hex digits>_<secret of 22-200 URL-safe "
                              "characters> (make one with `aligner keys generate`)")
        validate_tenant(tenant)
        suffix, secret = match.groups()
        key_id = ID_PREFIX + suffix
        for _ in range(2):  # a second importer racing this one makes the insert fail; then read its row
            with self._read() as conn:
                row = conn.execute(
                    select(*self._PUBLIC, api_keys.c.secret_hash).where(api_keys.c.id == key_id)).first()
            if row is not None:
                if not hmac.compare_digest(_hash_secret(secret), row.secret_hash):
                    raise ConfigError(f"API key id {key_id} is already stored with another secret")
                return self._row_to_key(row)
            record = ApiKey(id=key_id, tenant=tenant, admin=bool(admin), created_at=_now(), created_by=None)
            try:
                with self._write() as conn:
                    conn.execute(insert(api_keys).values(
                        id=record.id, tenant=record.tenant, admin=record.admin, secret_hash=_hash_secret(secret),
                        created_at=record.created_at, created_by=None))
                return record
            except IntegrityError:
                continue
        raise ConfigError(f"could not import API key {key_id}")  # pragma: no cover - the row vanished twice

    def authenticate(self, key: str) -> ApiKey | None:
        """The key's record when `key` is a valid, unrevoked key; None for anything else."""
        if not isinstance(key, str) or len(key) > MAX_KEY_CHARS:
            return None
        match = _KEY_RE.fullmatch(key)
        if match is None:
            return None
        suffix, secret = match.groups()
        with self._read() as conn:
            row = conn.execute(
                select(*self._PUBLIC, api_keys.c.secret_hash).where(api_keys.c.id == ID_PREFIX + suffix)
            ).first()
        presented = _hash_secret(secret)
        if row is None:
            hmac.compare_digest(presented, _DUMMY_HASH)  # same work as for a known id
            return None
        if not hmac.compare_digest(presented, row.secret_hash) or row.revoked_at is not None:
            return None
        return self._row_to_key(row)

    def list_keys(self, tenant: str | None = None) -> list[ApiKey]:
        """Every key (of `tenant`, when given), revoked ones included, oldest first."""
        query = select(*self._PUBLIC).order_by(api_keys.c.created_at, api_keys.c.id)
        if tenant is not None:
            query = query.where(api_keys.c.tenant == validate_tenant(tenant))
        with self._read() as conn:
            return [self._row_to_key(row) for row in conn.execute(query)]

    def get_key(self, key_id: str) -> ApiKey:
        """The key with this id; NotFound when there is none."""
        if isinstance(key_id, str) and _ID_RE.fullmatch(key_id):
            with self._read() as conn:
                row = conn.execute(select(*self._PUBLIC).where(api_keys.c.id == key_id)).first()
            if row is not None:
                return self._row_to_key(row)
        raise NotFound(f"API key {_shown_id(key_id)} does not exist")

    def revoke_key(self, key_id: str) -> ApiKey:
        """Revoke a key (again: a no-op keeping the first revocation time); NotFound when unknown."""
        if not isinstance(key_id, str) or _ID_RE.fullmatch(key_id) is None:
            raise NotFound(f"API key {_shown_id(key_id)} does not exist")
        with self._write() as conn:
            conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=_now())
            )
            row = conn.execute(select(*self._PUBLIC).where(api_keys.c.id == key_id)).first()
        if row is None:
            raise NotFound(f"API key {key_id!r} does not exist")
        return self._row_to_key(row)

    # -- safety configs
    def get_safety_config(self, tenant: str) -> SafetyConfigVersion | None:
        """The tenant's active safety config; None when it has none (never set, or deleted)."""
        validate_tenant(tenant)
        with self._read() as conn:
            active = self._active_version(conn, tenant)
            return None if active is None else self._version_row(conn, tenant, active)

    def safety_config_versions(self, tenant: str) -> list[SafetyConfigVersion]:
        """Every version of the tenant's config, oldest first."""
        validate_tenant(tenant)
        query = (
            select(safety_config_versions)
            .where(safety_config_versions.c.tenant == tenant)
            .order_by(safety_config_versions.c.version)
        )
        with self._read() as conn:
            return [self._to_version(row) for row in conn.execute(query)]

    def set_safety_config(
        self, tenant: str, config: Any, *, expected_version: int | None, actor: str | None = None
    ) -> SafetyConfigVersion:
        """Store `config` as the tenant's next version and make it active.

        `expected_version` is the active version the writer last read (None: no active config);
        if another write came first, VersionConflict, and nothing is stored.
        """
        validate_tenant(tenant)
        content, content_hash = config.canonical_json(), config.content_hash()
        try:
            with self._write() as conn:
                old = self._check_expected(conn, tenant, expected_version)
                latest = conn.scalar(
                    select(func.max(safety_config_versions.c.version)).where(safety_config_versions.c.tenant == tenant)
                )
                version = (latest or 0) + 1
                now = _now()
                conn.execute(insert(safety_config_versions).values(
                    tenant=tenant, version=version, content=content, content_hash=content_hash,
                    created_at=now, created_by=actor,
                ))
                self._activate(conn, tenant, version, now)
                self._audit(conn, tenant, actor, "set", old, version, content_hash, now)
        except IntegrityError as exc:
            # PostgreSQL: a concurrent writer inserted the same version number first.
            raise VersionConflict(f"the safety config of {tenant!r} was changed by another writer; read it again") from exc
        return self._get_version(tenant, version)

    def activate_safety_config(
        self, tenant: str, version: int, *, expected_version: int | None, actor: str | None = None
    ) -> SafetyConfigVersion:
        """Make an existing version active again (a rollback); NotFound for an unknown version."""
        validate_tenant(tenant)
        try:
            with self._write() as conn:
                old = self._check_expected(conn, tenant, expected_version)
                chosen = self._version_row(conn, tenant, version)
                if chosen is None:
                    raise NotFound(f"the safety config of {tenant!r} has no version {version}")
                now = _now()
                self._activate(conn, tenant, version, now)
                self._audit(conn, tenant, actor, "activate", old, version, chosen.content_hash, now)
        except IntegrityError as exc:
            raise VersionConflict(f"the safety config of {tenant!r} was changed by another writer; read it again") from exc
        return chosen

    def delete_safety_config(self, tenant: str, *, expected_version: int | None, actor: str | None = None) -> None:
        """Deactivate the tenant's config (its versions and the audit stay); NotFound when none is active."""
        validate_tenant(tenant)
        try:
            with self._write() as conn:
                old = self._check_expected(conn, tenant, expected_version)
                if old is None:
                    raise NotFound(f"tenant {tenant!r} has no active safety config")
                now = _now()
                self._activate(conn, tenant, None, now)
                self._audit(conn, tenant, actor, "delete", old, None, None, now)
        except IntegrityError as exc:
            raise VersionConflict(f"the safety config of {tenant!r} was changed by another writer; read it again") from exc

    def safety_audit(self, tenant: str | None = None, since: datetime | None = None) -> list[AuditEntry]:
        """Every change (of `tenant`, at or after `since`), oldest first. There is no way to edit it."""
        query = select(safety_audit).order_by(safety_audit.c.at, safety_audit.c.id)
        if tenant is not None:
            query = query.where(safety_audit.c.tenant == validate_tenant(tenant))
        if since is not None:
            query = query.where(safety_audit.c.at >= _utc(since))
        with self._read() as conn:
            return [
                AuditEntry(
                    id=row.id, at=_utc(row.at), tenant=row.tenant, actor=row.actor, action=row.action,
                    old_version=row.old_version, new_version=row.new_version, content_hash=row.content_hash,
                )
                for row in conn.execute(query)
            ]

    @staticmethod
    def _active_version(conn: Connection, tenant: str) -> int | None:
        return conn.scalar(select(safety_config_active.c.version).where(safety_config_active.c.tenant == tenant))

    def _check_expected(self, conn: Connection, tenant: str, expected: int | None) -> int | None:
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

    @staticmethod
    def _activate(conn: Connection, tenant: str, version: int | None, now: datetime) -> None:
        done = conn.execute(
            update(safety_config_active).where(safety_config_active.c.tenant == tenant).values(version=version, updated_at=now)
        )
        if done.rowcount == 0:
            conn.execute(insert(safety_config_active).values(tenant=tenant, version=version, updated_at=now))

    @staticmethod
    def _audit(conn, tenant, actor, action, old, new, content_hash, now) -> None:
        conn.execute(insert(safety_audit).values(
            at=now, tenant=tenant, actor=actor, action=action, old_version=old, new_version=new, content_hash=content_hash,
        ))

    def _version_row(self, conn: Connection, tenant: str, version: int) -> SafetyConfigVersion | None:
        row = conn.execute(
            select(safety_config_versions).where(
                safety_config_versions.c.tenant == tenant, safety_config_versions.c.version == version
            )
        ).first()
        return None if row is None else self._to_version(row)

    def _get_version(self, tenant: str, version: int) -> SafetyConfigVersion:
        with self._read() as conn:
            found = self._version_row(conn, tenant, version)
        if found is None:
            raise NotFound(f"the safety config of {tenant!r} has no version {version}")
        return found

    @staticmethod
    def _to_version(row) -> SafetyConfigVersion:
        from aligner.safety.config import SafetyConfig

        return SafetyConfigVersion(
            tenant=row.tenant, version=row.version, config=SafetyConfig.model_validate_json(row.content),
            content_hash=row.content_hash, created_at=_utc(row.created_at), created_by=row.created_by,
        )
