"""`aligner keys create|list|revoke|generate`, driven in-process against a SQLite tenant store."""

import json
import re

import pytest

from aligner.tenants import TenantStore
from serve.cli.main import main


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'tenants.db'}"


def create(capsys, url, *extra):
    assert main(["keys", "create", "--tenant", "acme", "--tenant-store", url, *extra]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 1, out
    return lines[0]


def test_create_prints_only_the_key(capsys, url):
    key = create(capsys, url, "--admin")
    assert re.fullmatch(r"alk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", key)
    with TenantStore.open(url) as store:
        record = store.authenticate(key)
    assert record is not None and record.tenant == "acme" and record.admin


def test_list_shows_keys_without_secrets(capsys, url):
    key = create(capsys, url)
    secret = key.split("_", 2)[2]
    key_id = "key_" + key.split("_")[1]

    assert main(["keys", "list", "--tenant-store", url]) == 0
    out = capsys.readouterr().out
    assert key_id in out and "acme" in out
    assert secret not in out and key not in out

    assert main(["keys", "list", "--json", "--tenant", "acme", "--tenant-store", url]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["id"], r["tenant"], r["admin"], r["revoked_at"]) for r in rows] == [(key_id, "acme", False, None)]
    assert secret not in json.dumps(rows)

    assert main(["keys", "list", "--json", "--tenant", "other", "--tenant-store", url]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_revoke(capsys, url):
    key = create(capsys, url)
    key_id = "key_" + key.split("_")[1]
    assert main(["keys", "revoke", key_id, "--tenant-store", url]) == 0
    assert key_id in capsys.readouterr().out
    with TenantStore.open(url) as store:
        assert store.authenticate(key) is None
    assert main(["keys", "revoke", key_id, "--tenant-store", url]) == 0  # idempotent
    capsys.readouterr()
    assert main(["keys", "list", "--json", "--tenant-store", url]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["revoked_at"] is not None


def test_revoke_unknown_id_exits_1(capsys, url):
    assert main(["keys", "revoke", "key_000000000000", "--tenant-store", url]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "key_000000000000" in captured.err and len(captured.err.strip().splitlines()) == 1


@pytest.mark.parametrize("tenant", ["Acme", "a b", ""])
def test_bad_tenant_exits_2(capsys, url, tenant):
    assert main(["keys", "create", "--tenant", tenant, "--tenant-store", url]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "tenant" in lines[0]


def test_bad_store_url_exits_1(capsys):
    assert main(["keys", "list", "--tenant-store", "mysql://u:hunter2@h/db"]) == 1
    err = capsys.readouterr().err
    assert "unsupported database URL" in err and "hunter2" not in err


def test_store_from_environment(capsys, url, monkeypatch):
    monkeypatch.setenv("ALIGNER_TENANT_STORE", url)
    assert main(["keys", "create", "--tenant", "acme"]) == 0
    key = capsys.readouterr().out.strip()
    with TenantStore.open(url) as store:
        assert store.authenticate(key) is not None


def test_default_store_is_in_the_cache_dir(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("ALIGNER_TENANT_STORE", raising=False)
    monkeypatch.setenv("ALIGNER_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["keys", "create", "--tenant", "acme"]) == 0
    key = capsys.readouterr().out.strip()
    with TenantStore.open(f"sqlite:///{tmp_path / 'cache' / 'tenants.db'}") as store:
        assert store.authenticate(key) is not None


def test_generate_prints_a_fresh_key_that_nothing_stores(capsys, url):
    keys = []
    for _ in range(2):
        assert main(["keys", "generate"]) == 0
        keys.append(capsys.readouterr().out.strip())
    assert keys[0] != keys[1] and all(re.fullmatch(r"alk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", k) for k in keys)
    with TenantStore.open(url) as store:
        assert store.authenticate(keys[0]) is None
        store.import_key(keys[0], "admin", admin=True)  # what a deployment does with it at start
        assert store.authenticate(keys[0]).admin
