"""Where the tenant store lives: SQLite or PostgreSQL engines, configured alike, and their transactions.

Two backends behave the same: an embedded SQLite file (the default, under the cache directory;
several processes may share it) and PostgreSQL by URL (driver psycopg 3).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from aligner.errors import ConfigError
from aligner.model_cache import cache_dir

STORE_ENV = "ALIGNER_TENANT_STORE"
SQLITE_BUSY_TIMEOUT_S = 30.0
PG_CONNECT_TIMEOUT_S = 10
# Any constant will do: it only has to be the same for every process migrating this database.
PG_MIGRATION_LOCK = 0x616C_6967_6E65_72  # "aligner"
# libpq reads passwords from the query too (`?password=...`, `sslpassword=...`); a parameter whose name,
# percent-decoded, holds "password" is shown as ***, like the user-info. Its value runs to the next `&`
# (SQLAlchemy's only separator): `#`, `;` and `@` in it are part of the password.
QUERY_PARAMETER = re.compile(r"(?P<lead>[?&;])(?P<name>[^&;#=?/]*)=(?P<value>[^&]*)")


def default_store_url() -> str:
    """$ALIGNER_TENANT_STORE, else `sqlite:///<cache dir>/tenants.db` (its directory is created on open).

    One rule for every process (the keys CLI, `aligner serve`, each ingress replica), so keys
    made with `aligner keys` are the ones the server checks."""
    return os.environ.get(STORE_ENV) or f"sqlite:///{cache_dir() / 'tenants.db'}"


def mask_url(url: str) -> str:
    """The URL as shown in messages and logs: its whole user-info (user and password: everything between
    `//` and the last `@`) as `***`, and the value of a `password=` query parameter too.

    Not SQLAlchemy's `render_as_string(hide_password=True)`: it shows the user, and for an unencoded `@`
    in the password (`u:p@ss@db`) it takes the password's tail for the host and shows it. The last `@`
    of the whole URL is taken (a password may hold `/`, `?` or `#` unencoded): at worst a database path
    with an `@` is hidden too. A URL whose authority is empty (`sqlite:////path`) has no user-info."""
    text = str(url)
    scheme, sep, rest = text.partition("://")
    if not sep:  # not URL-shaped: whatever precedes an `@` may still be a credential
        scheme, rest = "", text
    # Query passwords first: an `@` in one must not pass for the end of the user-info.
    rest = QUERY_PARAMETER.sub(_masked_parameter, rest)
    at = rest.rfind("@")
    if at >= 0 and not rest.startswith("/"):
        rest = "***" + rest[at:]
    return scheme + sep + rest


def _masked_parameter(match: re.Match[str]) -> str:
    # The value too: libpq's `options=-c password=...` carries one inside another parameter.
    if "password" not in percent_decoded(f"{match['name']}={match['value']}").casefold():
        return match[0]
    return f"{match['lead']}{match['name']}=***"


def user_info(url: str) -> str:
    """The user-info of a URL as written (empty when it has none), found as `mask_url` finds it."""
    rest = url.partition("://")[2]
    at = rest.rfind("@")
    return "" if at < 0 or rest.startswith("/") else rest[:at]


def user_info_secrets(url: str) -> list[str]:
    """What of a URL's user-info a database's own messages may quote: the user and the password, as
    written and percent-decoded ("role \"u\" does not exist", "password authentication failed for user")."""
    info = user_info(url.strip())
    user, _, password = info.partition(":")
    pieces = {info, user, password, percent_decoded(user), percent_decoded(password)}
    return sorted((p for p in pieces if p), key=len, reverse=True)


def percent_decoded(text: str) -> str:
    """`p%40ss` -> `p@ss` (aligner/ imports no urllib)."""
    raw = re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), text.encode("utf-8"))
    return raw.decode("utf-8", errors="replace")


def scrub(text: str, secrets: list[str]) -> str:
    """`text` with every secret as ***: quoted anywhere, and bare where it is long enough (4 characters) not
    to be any word's part by chance."""
    for secret in secrets:
        text = text.replace(f'"{secret}"', '"***"').replace(f"'{secret}'", "'***'")
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def reason(exc: BaseException) -> str:
    """The first line of a database error, for a one-line message."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(orig).__name__


class Database:
    """One store's engine: read and write transactions, the backend's name, the URL as shown (password masked)."""

    def __init__(self, engine: Engine, shown_url: str, secrets: list[str] | None = None):
        self.engine = engine
        self._writer = engine.execution_options(aligner_write=True)
        self.url = shown_url
        self._secrets = secrets or []

    @classmethod
    def connect(cls, url: str) -> Database:
        return cls(*engine_for(url), user_info_secrets(url))

    def reason(self, exc: BaseException) -> str:
        """The first line of a database error, with no part of the URL's user-info in it."""
        return scrub(reason(exc), self._secrets)

    @property
    def backend(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self.engine.dialect.name

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite), committed on success."""
        with self._writer.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def lock_for_migration(self, conn: Connection) -> None:
        if self.backend == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK})
        # SQLite: BEGIN IMMEDIATE already holds the database's write lock.

    def close(self) -> None:
        self.engine.dispose()


def engine_for(url_text: str) -> tuple[Engine, str]:
    """A configured engine for a store URL, and the URL as shown in messages (password masked)."""
    shown = mask_url(url_text)
    if not isinstance(url_text, str) or not url_text.strip():
        raise ConfigError("tenant store: the URL is empty; use sqlite:///PATH or postgresql://USER@HOST/DB")
    if "@" in user_info(url_text.strip()):
        # SQLAlchemy would split `u:p@ss@db` at the first `@`, and connect to the host `ss@db`.
        raise ConfigError(
            f"tenant store {shown!r}: the user or password in the URL holds an '@'; percent-encode it as %40"
        )
    try:
        url = make_url(url_text.strip())
    except (ArgumentError, ValueError):
        # Not the parser's message: it quotes the URL, or the part of it it could not read, password included.
        raise ConfigError(
            f"tenant store: cannot parse the URL {shown!r} (a port must be a number; percent-encode '@', ':', "
            "'/' in the user and password); use sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB"
        ) from None
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
        raise ConfigError(
            f"tenant store {shown!r}: the PostgreSQL driver is missing ({exc}); install psycopg"
        ) from None


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
