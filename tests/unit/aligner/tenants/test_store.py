"""The tenant store against real databases: a SQLite file and a real PostgreSQL 18 server."""

import base64
import re
import threading
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from aligner import tenants
from aligner.errors import ConfigError, InvalidRequest, NotFound
from aligner.tenants import MIGRATIONS, ApiKey, TenantStore, default_store_url, schema

KEY_RE = re.compile(r"alk_([0-9a-f]{12})_([A-Za-z0-9_-]+)")


def _raw_rows(store_url: str) -> list[tuple]:
    """Every api_keys row as the database holds it, read without the store."""
    url = store_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.exec_driver_sql("SELECT * FROM api_keys")]
    finally:
        engine.dispose()


def test_create_and_authenticate_round_trip(store):
    record, key = store.create_key("acme", admin=True)
    assert isinstance(record, ApiKey)
    assert re.fullmatch(r"key_[0-9a-f]{12}", record.id)
    assert (record.tenant, record.admin, record.revoked_at, record.created_by) == ("acme", True, None, None)
    assert record.created_at.tzinfo is not None and record.created_at.utcoffset().total_seconds() == 0
    match = KEY_RE.fullmatch(key)
    assert match and "key_" + match.group(1) == record.id

    found = store.authenticate(key)
    assert found == record
    assert found.created_at == record.created_at

    child, child_key = store.create_key("acme", created_by=record.id)
    assert (child.admin, child.created_by) == (False, record.id)
    assert store.authenticate(child_key) == child
    assert store.get_key(child.id) == child


def test_to_dict_is_json_safe(store):
    record, _ = store.create_key("acme")
    data = store.revoke_key(record.id).to_dict()
    assert set(data) == {"id", "tenant", "admin", "created_at", "created_by", "revoked_at"}
    assert datetime.fromisoformat(data["created_at"]).tzinfo is not None
    assert datetime.fromisoformat(data["revoked_at"]) >= datetime.fromisoformat(data["created_at"])


def test_unknown_garbage_and_wrong_secret_are_refused(store):
    record, key = store.create_key("acme")
    suffix = record.id.removeprefix("key_")
    secret = key.split("_", 2)[2]
    other_suffix = "0" * 12 if suffix != "0" * 12 else "1" * 12
    wrong_secret = ("A" if secret[0] != "A" else "B") + secret[1:]
    for bad in [
        "",
        "alk_",
        "garbage",
        key + "x",
        key[:-1],
        key.upper(),
        " " + key,
        key + "\n",
        f"alk_{other_suffix}_{secret}",  # unknown id
        f"alk_{suffix}_{wrong_secret}",  # known id, wrong secret
        record.id,
        "alk_" + suffix + "_" + "\udcff" * 43,  # lone surrogates
        "\ud800",
        "alk_" + suffix + "_" + "\x00" * 43,
        key + "A" * 10_000,  # huge
        "x" * 1_000_000,
        None,
        b"bytes",
    ]:
        assert store.authenticate(bad) is None, repr(bad)[:80]
    assert store.authenticate(key) == record  # the real one still works


def test_revoke_is_idempotent_and_refuses_the_key(store):
    record, key = store.create_key("acme")
    keep, keep_key = store.create_key("acme")
    revoked = store.revoke_key(record.id)
    assert revoked.revoked_at is not None and revoked.id == record.id
    assert store.authenticate(key) is None
    again = store.revoke_key(record.id)
    assert again.revoked_at == revoked.revoked_at  # the first revocation time is kept
    assert store.get_key(record.id).revoked_at == revoked.revoked_at
    assert store.authenticate(keep_key) == keep  # others are untouched


@pytest.mark.parametrize("key_id", ["key_000000000000", "key_nope", "", "\udcff", "x" * 10_000])
def test_unknown_id_is_not_found(store, key_id):
    with pytest.raises(NotFound) as err:
        store.revoke_key(key_id)
    assert repr(key_id)[:20] in err.value.message
    with pytest.raises(NotFound):
        store.get_key(key_id)


def test_unknown_creator_is_not_found(store):
    with pytest.raises(NotFound, match="key_000000000000"):
        store.create_key("acme", created_by="key_000000000000")
    assert store.list_keys() == []


def test_list_never_exposes_secrets(store, store_url):
    a, key_a = store.create_key("acme", admin=True)
    b, key_b = store.create_key("beta")
    store.revoke_key(b.id)
    listed = store.list_keys()
    assert [k.id for k in listed] == [a.id, b.id]
    assert listed[1].revoked_at is not None
    assert [k.id for k in store.list_keys("beta")] == [b.id]
    assert store.list_keys("nobody") == []
    for k in listed:
        text = repr(k) + repr(k.to_dict())
        assert "hash" not in text
        for key in (key_a, key_b):
            assert key.split("_", 2)[2] not in text
    stored_hashes = {row[3] for row in _raw_rows(store_url)}
    assert not any(h in repr(k) for h in stored_hashes for k in listed)


def test_plaintext_key_is_random_and_only_its_hash_is_stored(store, store_url, tmp_path):
    issued = [store.create_key("acme")[1] for _ in range(20)]
    secrets_ = [KEY_RE.fullmatch(k).group(2) for k in issued]
    assert len(set(secrets_)) == len(secrets_)
    for secret in secrets_:
        raw = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
        assert len(raw) * 8 >= 128  # at least 128 random bits (256 in fact)
    rows = _raw_rows(store_url)
    dump = repr(rows)
    for key, secret in zip(issued, secrets_):
        assert secret not in dump and key not in dump
    import hashlib

    hashes = {hashlib.sha256(s.encode()).hexdigest() for s in secrets_}
    assert hashes <= {row[3] for row in rows}
    if store_url.startswith("sqlite"):
        # the raw file and its write-ahead log hold neither the keys nor the secrets
        files = list((tmp_path / "store").iterdir())
        assert any(f.name.endswith(".db") for f in files)
        blob = b"".join(f.read_bytes() for f in files if f.is_file())
        assert hashes.pop().encode() in blob  # the hashes are there: we are reading the right bytes
        for key, secret in zip(issued, secrets_):
            assert secret.encode() not in blob and key.encode() not in blob


def test_keys_survive_reopening(store_url):
    with TenantStore.open(store_url) as first:
        record, key = first.create_key("acme")
    with TenantStore.open(store_url) as second:
        assert second.authenticate(key) == record
        assert second.list_keys() == [record]


def test_migrations_are_idempotent(store_url):
    with TenantStore.open(store_url) as first:
        assert first.schema_version() == len(MIGRATIONS) >= 1
        first.create_key("acme")
    with TenantStore.open(store_url) as second:
        assert second.schema_version() == len(MIGRATIONS)
        assert second.migrate() == len(MIGRATIONS)
        assert len(second.list_keys()) == 1
    engine = sa.create_engine(store_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            versions = [r[0] for r in conn.exec_driver_sql("SELECT version FROM schema_migrations ORDER BY version")]
    finally:
        engine.dispose()
    assert versions == list(range(1, len(MIGRATIONS) + 1))


def test_a_new_migration_is_applied_once(store_url, monkeypatch):
    with TenantStore.open(store_url) as first:
        record, key = first.create_key("acme")
    calls = []

    def add_notes(conn):
        calls.append(1)
        conn.exec_driver_sql("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")

    monkeypatch.setattr(schema, "MIGRATIONS", [*MIGRATIONS, add_notes])
    for _ in range(2):
        with TenantStore.open(store_url) as store:
            assert store.schema_version() == len(MIGRATIONS) + 1
            assert store.authenticate(key) == record
    assert calls == [1]


def test_concurrent_opens_and_writes(store_url):
    """Replicas opening the same fresh database at once all migrate it safely and can write."""
    errors, stores = [], []
    barrier = threading.Barrier(6)

    def replica():
        try:
            barrier.wait()
            s = TenantStore.open(store_url)
            stores.append(s)
            for _ in range(3):
                _, key = s.create_key("acme")
                assert s.authenticate(key) is not None
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=replica) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == []
        assert len(stores) == 6
        assert all(s.schema_version() == len(MIGRATIONS) for s in stores)
        assert len(stores[0].list_keys()) == 18
    finally:
        for s in stores:
            s.close()


def test_one_store_shared_by_threads(store):
    errors = []

    def work():
        try:
            for _ in range(5):
                record, key = store.create_key("acme")
                assert store.authenticate(key) == record
                store.revoke_key(record.id)
                assert store.authenticate(key) is None
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(store.list_keys()) == 40


@pytest.mark.parametrize("tenant", ["", "Acme", "-acme", "_x", "a b", "a" * 64, "acme/..", "é", "\udcff", None])
def test_bad_tenant_names(store, tenant):
    with pytest.raises(InvalidRequest) as err:
        store.create_key(tenant)
    assert err.value.field == "tenant"
    assert tenants.TENANT_PATTERN in err.value.reason
    assert store.list_keys() == []


@pytest.mark.parametrize("tenant", ["a", "acme", "0", "a.b-c_d", "a" * 63])
def test_good_tenant_names(store, tenant):
    record, key = store.create_key(tenant)
    assert store.authenticate(key).tenant == tenant
    assert [k.id for k in store.list_keys(tenant)] == [record.id]


def test_timestamps_are_utc_whatever_the_session_zone(store_url):
    with TenantStore.open(store_url) as s:
        record, _ = s.create_key("acme")
        assert abs((datetime.now(UTC) - record.created_at).total_seconds()) < 60
        assert s.list_keys()[0].created_at == record.created_at
        assert s.list_keys()[0].created_at.utcoffset().total_seconds() == 0


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("mysql://root:hunter2@localhost/db", "unsupported database URL"),
        ("postgresql+psycopg2://u:hunter2@localhost/db", "unsupported database URL"),
        ("not a url", "cannot parse"),
        ("", "empty"),
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
        ("postgresql://u:hunter2@127.0.0.1:1/db", "cannot open the database"),
        ("postgres://u:hunter2@127.0.0.1:1/db", "cannot open the database"),
    ],
)
def test_bad_urls_are_config_errors(url, words):
    with pytest.raises(ConfigError) as err:
        TenantStore.open(url)
    assert words in err.value.message
    assert "hunter2" not in err.value.message
    assert "\n" not in err.value.message


def test_unopenable_sqlite_files_are_config_errors(tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match="cannot open the database"):
        TenantStore.open(f"sqlite:///{garbage}")
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(ConfigError, match="cannot open the database"):
        TenantStore.open(f"sqlite:///{tmp_path / 'dir.db'}")
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot create"):
        TenantStore.open(f"sqlite:///{tmp_path / 'file' / 'sub' / 'tenants.db'}")


def test_postgres_scheme_is_accepted(new_pg_database):
    url = new_pg_database()
    with TenantStore.open(url.replace("postgresql://", "postgres://", 1)) as s:
        assert s.backend == "postgresql"
        _, key = s.create_key("acme")
    with TenantStore.open(url.replace("postgresql://", "postgresql+psycopg://", 1)) as s:
        assert s.authenticate(key) is not None


def test_default_store_url_is_in_the_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNER_CACHE_DIR", str(tmp_path / "cache"))
    url = default_store_url()
    assert url == f"sqlite:///{tmp_path / 'cache' / 'tenants.db'}"
    with TenantStore.open(url) as s:
        assert s.backend == "sqlite"
        assert s.schema_version() == len(MIGRATIONS)
    assert (tmp_path / "cache" / "tenants.db").is_file()


def test_sqlite_uses_wal_and_foreign_keys(tmp_path):
    with TenantStore.open(f"sqlite:///{tmp_path / 't.db'}") as s:
        with s._db.read() as conn:  # the store's own connections, set up by its connect hook
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar().lower() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000


def test_every_process_finds_the_same_default_store(monkeypatch, tmp_path):
    """`aligner keys`, `aligner serve` and each ingress replica all read $ALIGNER_TENANT_STORE first."""
    from aligner.tenants import STORE_ENV, default_store_url

    monkeypatch.delenv(STORE_ENV, raising=False)
    assert default_store_url().startswith("sqlite:///") and default_store_url().endswith("tenants.db")
    monkeypatch.setenv(STORE_ENV, f"sqlite:///{tmp_path}/shared.db")
    assert default_store_url() == f"sqlite:///{tmp_path}/shared.db"


def test_a_bootstrap_admin_key_is_imported_once_and_keeps_its_revocation(store, monkeypatch):
    key = tenants.generate_key()
    assert store.authenticate(key) is None  # generated, not stored
    monkeypatch.setenv(tenants.ADMIN_KEY_ENV, f"  {key}\n")  # as a Secret mounted with a newline
    first = tenants.import_bootstrap_admin_key(store)
    assert first.admin and first.tenant == "admin" and store.authenticate(key) == first
    assert tenants.import_bootstrap_admin_key(store) == first  # every replica's start imports it again
    assert len(store.list_keys("admin")) == 1
    store.revoke_key(first.id)
    assert tenants.import_bootstrap_admin_key(store).revoked_at is not None  # revoked stays revoked
    assert store.authenticate(key) is None


def test_importing_a_malformed_or_clashing_key_is_a_config_error(store, monkeypatch):
    for bad in ("", "admin", "alk_123_short", "alk_" + "0" * 12 + "_" + "x" * 300):
        with pytest.raises(ConfigError, match="alk_<12 hex digits>"):
            store.import_key(bad, "admin", admin=True)
    key = tenants.generate_key()
    store.import_key(key, "admin", admin=True)
    same_id_other_secret = key[:17] + "Z" * 43
    with pytest.raises(ConfigError, match="another secret"):
        store.import_key(same_id_other_secret, "admin", admin=True)
    monkeypatch.delenv(tenants.ADMIN_KEY_ENV, raising=False)
    assert tenants.import_bootstrap_admin_key(store) is None
