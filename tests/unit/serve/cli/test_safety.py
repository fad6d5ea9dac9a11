"""`aligner safety ...`, driven in-process against a SQLite tenant store."""

import json

import pytest

from aligner.tenants import TenantStore
from serve.cli.main import main

KIDS_YAML = """\
text: Users are children aged 8-12. No violence, no dating, no gambling.
thresholds: {harmlessness: 0.8}
action: refuse
disallowed: [violence, dating]
"""


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'tenants.db'}"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_set_get_versions_activate_delete_and_audit(capsys, url, tmp_path):
    kids = write(tmp_path, "kids.yaml", KIDS_YAML)
    brand = write(tmp_path, "brand.json", json.dumps({"text": "Never discuss competitors.", "action": "flag"}))
    assert main(["safety", "set", "acme", "--file", kids, "--tenant-store", url]) == 0
    assert main(["safety", "set", "acme", "--file", brand, "--expected-version", "1", "--tenant-store", url]) == 0
    capsys.readouterr()
    assert main(["safety", "get", "acme", "--json", "--tenant-store", url]) == 0
    active = json.loads(capsys.readouterr().out)
    assert active["version"] == 2 and active["config"]["text"] == "Never discuss competitors."
    assert main(["safety", "versions", "acme", "--tenant-store", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].startswith("*") and not lines[0].startswith("*")
    assert main(["safety", "activate", "acme", "1", "--tenant-store", url]) == 0
    assert main(["safety", "get", "acme", "--tenant-store", url]) == 0
    assert "children aged 8-12" in capsys.readouterr().out
    assert main(["safety", "delete", "acme", "--tenant-store", url]) == 0
    assert main(["safety", "get", "acme", "--tenant-store", url]) == 1
    capsys.readouterr()
    assert main(["safety", "audit", "--tenant", "acme", "--tenant-store", url]) == 0
    entries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["action"], e["old_version"], e["new_version"], e["actor"]) for e in entries] == [
        ("set", None, 1, "cli"),
        ("set", 1, 2, "cli"),
        ("activate", 2, 1, "cli"),
        ("delete", 1, None, "cli"),
    ]


def test_a_stale_expected_version_is_refused_and_changes_nothing(capsys, url, tmp_path):
    kids = write(tmp_path, "kids.yaml", KIDS_YAML)
    assert main(["safety", "set", "acme", "--file", kids, "--tenant-store", url]) == 0
    assert main(["safety", "set", "acme", "--file", kids, "--expected-version", "none", "--tenant-store", url]) == 1
    assert "version 1" in capsys.readouterr().err
    with TenantStore.open(url) as store:
        assert [v.version for v in store.safety_config_versions("acme")] == [1]


@pytest.mark.parametrize(
    "text, field",
    [
        ("text: '   '\n", "text"),
        ("text: ok\naction: shout\n", "action"),
        ("text: ok\nthresholds: {harmlessness: high}\n", "thresholds.harmlessness"),
        ("text: [unclosed\n", "file"),
    ],
)
def test_a_bad_config_file_names_the_field_and_stores_nothing(capsys, url, tmp_path, text, field):
    path = write(tmp_path, "bad.yaml", text)
    assert main(["safety", "set", "acme", "--file", path, "--tenant-store", url]) == 2
    assert field in capsys.readouterr().err
    with TenantStore.open(url) as store:
        assert store.safety_config_versions("acme") == []


@pytest.mark.parametrize("server", ["localhost:abc", "http://[::1"])
def test_a_malformed_server_url_is_one_line_and_exit_1(capsys, server):
    assert main(["safety", "get", "acme", "--server", server, "--key", "k"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("aligner: error: cannot reach")
