"""Tenants' policies in the tenant store: versions, the active one, optimistic concurrency, the audit log.

Runs on a real SQLite file and a real PostgreSQL server (the `store` fixture of tests/unit/conftest.py).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from aligner.contract import parse_model
from aligner.errors import InvalidRequest, NotFound, VersionConflict
from aligner.tenants import MIGRATIONS, TenantPolicy, TenantStore

CAPPED = parse_model(
    TenantPolicy,
    {
        "allowed_strategies": ["sample", "best_of_n"],
        "caps": {"n": 4, "max_tokens": 64, "deadline_ms": 5000},
        "defaults": {"search": {"strategy": "best_of_n", "n": 2}, "preference_vector": {"helpfulness": 1.0}},
        "requests_per_minute": 60,
        "candidate_tokens_per_minute": 100_000,
        "max_concurrent_requests": 4,
        "weight": 3.0,
        "priority": 2,
    },
)
OPEN = TenantPolicy()


def test_the_first_write_expects_no_policy_and_creates_version_1(store):
    assert store.get_tenant_policy("acme") is None
    first = store.set_tenant_policy("acme", CAPPED, expected_version=None, actor="key_000000000001")
    assert first.version == 1 and first.policy == CAPPED and first.created_by == "key_000000000001"
    again = store.get_tenant_policy("acme")
    assert again.policy == CAPPED and again.content_hash == CAPPED.content_hash()
    assert again.policy.caps.limits() == {"n": 4, "max_tokens": 64}
    assert again.policy.defaults.search == {"strategy": "best_of_n", "n": 2}  # kept as the admin wrote it
    assert store.schema_version() == len(MIGRATIONS)


def test_versions_are_immutable_numbered_per_tenant_and_separate_from_safety_configs(store):
    from aligner.safety.config import SafetyConfig

    store.set_tenant_policy("acme", CAPPED, expected_version=None)
    store.set_tenant_policy("acme", OPEN, expected_version=1)
    store.set_tenant_policy("globex", OPEN, expected_version=None)
    store.set_safety_config("acme", SafetyConfig(text="Be kind."), expected_version=None)
    assert [v.version for v in store.tenant_policy_versions("acme")] == [1, 2]
    assert store.tenant_policy_versions("acme")[0].policy == CAPPED
    assert store.get_tenant_policy("acme").policy == OPEN
    assert store.get_tenant_policy("globex").version == 1
    assert store.get_safety_config("acme").version == 1 and len(store.safety_audit("acme")) == 1


def test_a_stale_expected_version_is_a_conflict_and_stores_nothing(store):
    store.set_tenant_policy("acme", CAPPED, expected_version=None)
    with pytest.raises(VersionConflict) as err:
        store.set_tenant_policy("acme", OPEN, expected_version=None)
    assert err.value.code == "version_conflict" and "version 1" in err.value.message
    with pytest.raises(VersionConflict):
        store.set_tenant_policy("acme", OPEN, expected_version=7)
    with pytest.raises(VersionConflict):
        store.activate_tenant_policy("acme", 1, expected_version=None)
    assert [v.version for v in store.tenant_policy_versions("acme")] == [1]
    assert len(store.tenant_policy_audit("acme")) == 1


def test_concurrent_writers_one_wins_the_others_get_a_conflict(store_url):
    with TenantStore.open(store_url) as setup:
        setup.set_tenant_policy("acme", OPEN, expected_version=None)
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def writer(i: int) -> None:
        with TenantStore.open(store_url) as mine:
            barrier.wait()
            try:
                mine.set_tenant_policy("acme", TenantPolicy(priority=i), expected_version=1)
                outcomes.append("won")
            except VersionConflict:
                outcomes.append("conflict")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict"] * 3 + ["won"]
    with TenantStore.open(store_url) as check:
        assert [v.version for v in check.tenant_policy_versions("acme")] == [1, 2]


def test_rollback_and_the_audit_log(store):
    before = datetime.now(UTC) - timedelta(seconds=1)
    store.set_tenant_policy("acme", CAPPED, expected_version=None, actor="key_aaaaaaaaaaaa")
    store.set_tenant_policy("acme", OPEN, expected_version=1, actor="key_bbbbbbbbbbbb")
    back = store.activate_tenant_policy("acme", 1, expected_version=2, actor="key_aaaaaaaaaaaa")
    assert back.version == 1 and store.get_tenant_policy("acme").policy == CAPPED
    with pytest.raises(NotFound):
        store.activate_tenant_policy("acme", 9, expected_version=1)
    store.set_tenant_policy("globex", OPEN, expected_version=None)
    log = store.tenant_policy_audit("acme", since=before)
    assert [(e.action, e.old_version, e.new_version, e.actor) for e in log] == [
        ("set", None, 1, "key_aaaaaaaaaaaa"),
        ("set", 1, 2, "key_bbbbbbbbbbbb"),
        ("activate", 2, 1, "key_aaaaaaaaaaaa"),
    ]
    assert log[0].content_hash == CAPPED.content_hash() == log[2].content_hash
    assert [e.tenant for e in store.tenant_policy_audit()] == ["acme"] * 3 + ["globex"]
    assert store.tenant_policy_audit("acme", since=datetime.now(UTC) + timedelta(hours=1)) == []
    assert store.safety_audit("acme") == []  # policy changes are not safety-config changes


def test_bad_tenant_names_are_refused(store):
    for call in (
        lambda: store.set_tenant_policy("Bad Name", OPEN, expected_version=None),
        lambda: store.get_tenant_policy("../acme"),
        lambda: store.tenant_policy_versions(""),
    ):
        with pytest.raises(InvalidRequest) as err:
            call()
        assert err.value.field == "tenant"


def test_policy_audit_times_are_the_databases_in_commit_order_whatever_a_writers_clock(store, monkeypatch):
    """A writer whose clock is 5 minutes slow neither reorders the policy log nor hides its change from
    `since`. Failed before this fix: policy rows were stamped with the writer's own clock."""
    from aligner.tenants import records, versioned_table

    store.set_tenant_policy("acme", CAPPED, expected_version=None, actor="key_aaaaaaaaaaaa")
    first = store.tenant_policy_audit("acme")[-1]
    slow = lambda: datetime.now(UTC) - timedelta(minutes=5)  # noqa: E731
    monkeypatch.setattr(versioned_table, "now", slow, raising=False)
    monkeypatch.setattr(records, "now", slow)
    store.set_tenant_policy("acme", TenantPolicy(weight=2.0), expected_version=1, actor="key_bbbbbbbbbbbb")
    store.activate_tenant_policy("acme", 1, expected_version=2, actor="key_bbbbbbbbbbbb")
    log = store.tenant_policy_audit("acme")
    assert [(e.action, e.new_version) for e in log] == [("set", 1), ("set", 2), ("activate", 1)]
    assert [e.id for e in log] == sorted(e.id for e in log)
    assert log[0].at <= log[1].at <= log[2].at and log[2].at - log[0].at < timedelta(minutes=1)
    assert [e.id for e in store.tenant_policy_audit("acme", since=first.at)] == [e.id for e in log]
