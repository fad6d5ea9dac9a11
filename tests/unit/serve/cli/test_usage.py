"""`aligner usage`, driven in-process against a SQLite tenant store."""

import json
from datetime import UTC, datetime

import pytest

from aligner.tenants import TenantStore, UsageCounts, UsageKey
from serve.cli.main import main

H17 = datetime(2026, 12, 1, 17, tzinfo=UTC)
H18 = datetime(2026, 12, 1, 18, tzinfo=UTC)


@pytest.fixture
def url(tmp_path):
    url = f"sqlite:///{tmp_path / 'tenants.db'}"
    with TenantStore.open(url) as store:
        store.add_usage(
            {
                UsageKey("acme", H17, "ok"): UsageCounts(requests=3, prompt_tokens=30, generated_tokens=300),
                UsageKey("acme", H17, "cancelled"): UsageCounts(requests=1),
                UsageKey("acme", H18, "ok"): UsageCounts(requests=1, generated_tokens=7, safety_flagged=1),
                UsageKey("globex", H18, "ok"): UsageCounts(requests=2, generated_tokens=20),
            }
        )
    return url


def test_json_is_the_routes_answer(capsys, url):
    assert main(["usage", "--tenant", "acme", "--json", "--tenant-store", url]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert [h["hour"] for h in answer["hours"]] == ["2026-12-01T17:00:00+00:00", "2026-12-01T18:00:00+00:00"]
    [total] = answer["totals"]
    assert total["tenant"] == "acme" and total["requests"] == {"cancelled": 1, "ok": 4}
    assert total["generated_tokens"] == 307 and total["safety_actions"] == {"flagged": 1}


def test_since_and_until_select_the_hours(capsys, url):
    assert (
        main(["usage", "--since", "2026-12-01T18:15Z", "--until", "2026-12-02", "--json", "--tenant-store", url]) == 0
    )
    answer = json.loads(capsys.readouterr().out)
    assert {(h["tenant"], h["hour"][11:13]) for h in answer["hours"]} == {("acme", "18"), ("globex", "18")}
    assert answer["since"] == "2026-12-01T18:15:00+00:00" and answer["until"] == "2026-12-02T00:00:00+00:00"


def test_the_table_has_a_line_per_tenant_and_hour_and_a_total(capsys, url):
    assert main(["usage", "--tenant-store", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["TENANT", "HOUR", "REQUESTS", "BY_STATUS"]
    cells = [line.split() for line in lines[1:]]
    assert [(c[0], c[1][:13]) for c in cells] == [
        ("acme", "2026-12-01T17"),
        ("acme", "2026-12-01T18"),
        ("acme", "total"),
        ("globex", "2026-12-01T18"),
        ("globex", "total"),
    ]
    assert cells[0][2:4] == ["4", "cancelled:1,ok:3"] and cells[2][2] == "5"


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--since", "2026-02-30"], "since"),
        (["--until", "2026-12-01T24:00"], "until"),
        (["--since", "2026-12-02", "--until", "2026-12-01"], "until"),
        (["--tenant", "Bad Name"], "tenant"),
    ],
)
def test_bad_flags_exit_2_naming_the_field(capsys, url, flags, named):
    assert main(["usage", *flags, "--tenant-store", url]) == 2
    assert f"error: {named}:" in capsys.readouterr().err


def test_no_usage_says_so(capsys, tmp_path):
    assert main(["usage", "--tenant", "nobody", "--tenant-store", f"sqlite:///{tmp_path / 'empty.db'}"]) == 0
    captured = capsys.readouterr()
    assert "no usage recorded for tenant 'nobody'" in captured.err
