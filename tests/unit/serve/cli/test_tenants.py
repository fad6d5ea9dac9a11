"""`aligner tenants policy ...`, driven in-process against a SQLite tenant store."""

import json

import pytest

from aligner.tenants import TenantStore
from serve.cli.main import main

CAPPED_YAML = """\
allowed_strategies: [sample, best_of_n]
caps: {n: 4, max_tokens: 128, deadline_ms: 30000}
defaults:
  search: {strategy: best_of_n, n: 2}
  preference_vector: {helpfulness: 1.0}
requests_per_minute: 120
weight: 2
priority: 1
"""


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'tenants.db'}"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_set_get_versions_activate_and_audit(capsys, url, tmp_path):
    capped = write(tmp_path, "capped.yaml", CAPPED_YAML)
    open_policy = write(tmp_path, "open.json", json.dumps({"max_concurrent_requests": 8}))
    assert main(["tenants", "policy", "set", "acme", "--file", capped, "--tenant-store", url]) == 0
    assert "version 1" in capsys.readouterr().err
    assert main(["tenants", "policy", "set", "acme", "--file", open_policy, "--tenant-store", url]) == 0  # expects 1
    capsys.readouterr()
    assert main(["tenants", "policy", "get", "acme", "--json", "--tenant-store", url]) == 0
    active = json.loads(capsys.readouterr().out)
    assert active["version"] == 2 and active["policy"]["max_concurrent_requests"] == 8
    assert active["policy"]["caps"]["n"] is None and active["policy"]["weight"] == 1.0
    assert main(["tenants", "policy", "activate", "acme", "1", "--tenant-store", url]) == 0
    capsys.readouterr()
    assert main(["tenants", "policy", "get", "acme", "--tenant-store", url]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("# tenant acme, policy version 1") and "max_tokens: 128" in shown
    assert "null" not in shown  # unset fields are left out of the YAML view
    assert main(["tenants", "policy", "versions", "acme", "--tenant-store", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["*", "2"]
    assert main(["tenants", "policy", "audit", "acme", "--tenant-store", url]) == 0
    audit = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["action"], e["new_version"], e["actor"]) for e in audit] == [
        ("set", 1, "cli"),
        ("set", 2, "cli"),
        ("activate", 1, "cli"),
    ]
    with TenantStore.open(url) as store:
        assert store.get_tenant_policy("acme").policy.weight == 2.0


def test_an_empty_file_is_the_empty_policy(url, tmp_path):
    assert (
        main(["tenants", "policy", "set", "acme", "--file", write(tmp_path, "e.yaml", ""), "--tenant-store", url]) == 0
    )
    with TenantStore.open(url) as store:
        assert store.get_tenant_policy("acme").policy.caps.limits() == {}


@pytest.mark.parametrize(
    "text, words",
    [
        ("caps: {n: 0}\n", "caps.n"),
        ("caps: {nn: 4}\n", "caps.nn: unknown field"),
        ("allowed_strategies: [greedy]\n", "allowed_strategies[0]"),
        ("defaults: {search: {strategy: beam, n: 4}}\n", "defaults.search.n"),
        ("weight: [1]\n", "weight"),
        ("- just a list\n", "Input should be a valid dictionary"),
        ("caps: {n: [\n", "not valid YAML or JSON"),
    ],
)
def test_bad_policies_exit_2_naming_the_field_and_store_nothing(capsys, url, tmp_path, text, words):
    path = write(tmp_path, "bad.yaml", text)
    assert main(["tenants", "policy", "set", "acme", "--file", path, "--tenant-store", url]) == 2
    assert words in capsys.readouterr().err
    with TenantStore.open(url) as store:
        assert store.tenant_policy_versions("acme") == []


def test_conflicts_unknown_versions_and_missing_policies(capsys, url, tmp_path):
    path = write(tmp_path, "p.yaml", "priority: 3\n")
    assert main(["tenants", "policy", "get", "acme", "--tenant-store", url]) == 1
    assert "has no policy" in capsys.readouterr().err
    assert main(["tenants", "policy", "set", "acme", "--file", path, "--tenant-store", url]) == 0
    stale = ["tenants", "policy", "set", "acme", "--file", path, "--expected-version", "none", "--tenant-store", url]
    assert main(stale) == 1
    assert "version 1" in capsys.readouterr().err
    assert main(["tenants", "policy", "activate", "acme", "7", "--tenant-store", url]) == 1
    assert main(["tenants", "policy", "get", "Not-A-Tenant", "--tenant-store", url]) == 2
    assert (
        main(["tenants", "policy", "set", "acme", "--file", str(tmp_path / "missing.yaml"), "--tenant-store", url]) == 2
    )
    assert "cannot read" in capsys.readouterr().err
