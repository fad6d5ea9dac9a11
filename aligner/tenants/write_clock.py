"""The time of a store write, read from the database inside the write's transaction.

Every writer's own clock differs (a replica a few minutes slow would stamp its change before one
made earlier, reorder the audit log and hide its change from `since`): the rows a transaction
writes are stamped with the database's clock instead, read after the transaction holds its table's
write lock, so the times are in commit order. The audit log is ordered by its autoincrement id,
which the same lock makes commit order too. Shared by every versioned table with an audit log
(safety configs, tenant policies).
"""

from __future__ import annotations

import zlib
from datetime import datetime

from sqlalchemy import Table, func, select, text, type_coerce
from sqlalchemy.engine import Connection

from aligner.tenants.schema import UTCDateTime

# SQLite's clock to the millisecond, written with six fraction digits as SQLAlchemy stores datetimes
# (CURRENT_TIMESTAMP has whole seconds only).
_SQLITE_NOW = "%Y-%m-%d %H:%M:%f000"


def _lock_key(table: Table) -> int:
    # One advisory lock per audit table, a constant every process computes alike (PostgreSQL's key is int8).
    return zlib.crc32(f"aligner write clock {table.name}".encode())


def write_time(conn: Connection, audit: Table) -> datetime:
    """The database's time now, as an aware UTC datetime, for every row this write transaction stamps.

    PostgreSQL: first takes `audit`'s transaction lock (held until commit), so writers that audit into
    the same table commit one at a time, in the order of their ids and of these times; the clock is
    `clock_timestamp()`, read after the lock (`now()` is the transaction's start, which a writer
    that waited for the lock would carry in behind one that committed before it).
    SQLite: BEGIN IMMEDIATE already serialises every writer; the clock is `strftime('now')`.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(audit)})
        clock = func.clock_timestamp()
    else:
        clock = func.strftime(_SQLITE_NOW, "now")
    at = conn.scalar(select(type_coerce(clock, UTCDateTime)))
    if not isinstance(at, datetime):  # a driver that returned something else: never stamp a row with it
        raise TypeError(f"the database's clock read as {at!r}")
    return at
