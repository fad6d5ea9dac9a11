"""Safety configs in the tenant store: versions, the active one, optimistic concurrency, the audit log.

Runs on a real SQLite file and a real PostgreSQL server (the `store` fixture of test_tenants).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from aligner.errors import InvalidRequest, NotFound, VersionConflict
from aligner.safety.config import SafetyConfig
from aligner.tenants import MIGRATIONS

KIDS = SafetyConfig(
    text="Users are children aged 8-12. No violence, no dating, no gambling.",
    thresholds={"harmlessness": 0.8},
    disallowed=["violence", "dating"],
)
MEDICAL = SafetyConfig(text="Give general medical information; never give dosages.", action="flag")


def test_the_first_write_expects_no_config_and_creates_version_1(store):
    assert store.get_safety_config("acme") is None
    first = store.set_safety_config("acme", KIDS, expected_version=None, actor="key_000000000001")
    assert first.version == 1 and first.config == KIDS and first.created_by == "key_000000000001"
    assert store.get_safety_config("acme").config == KIDS
    assert store.schema_version() == len(MIGRATIONS) >= 2


def test_versions_are_immutable_and_numbered_per_tenant(store):
    store.set_safety_config("acme", KIDS, expected_version=None)
    store.set_safety_config("acme", MEDICAL, expected_version=1)
    store.set_safety_config("globex", MEDICAL, expected_version=None)
    assert [v.version for v in store.safety_config_versions("acme")] == [1, 2]
    assert store.safety_config_versions("acme")[0].config == KIDS  # the old version is unchanged
    assert store.get_safety_config("globex").version == 1
    assert store.get_safety_config("acme").config == MEDICAL


def test_a_stale_expected_version_is_a_conflict_and_stores_nothing(store):
    store.set_safety_config("acme", KIDS, expected_version=None)
    with pytest.raises(VersionConflict) as err:
        store.set_safety_config("acme", MEDICAL, expected_version=None)
    assert err.value.code == "version_conflict" and "version 1" in err.value.message
    with pytest.raises(VersionConflict):
        store.set_safety_config("acme", MEDICAL, expected_version=7)
    assert [v.version for v in store.safety_config_versions("acme")] == [1]
    assert len(store.safety_audit("acme")) == 1


def test_concurrent_writers_one_wins_the_other_gets_a_conflict(store_url):
    from aligner.tenants import TenantStore

    with TenantStore.open(store_url) as setup:
        setup.set_safety_config("acme", KIDS, expected_version=None)
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def writer(i: int) -> None:
        with TenantStore.open(store_url) as mine:
            barrier.wait()
            try:
                mine.set_safety_config("acme", SafetyConfig(text=f"writer {i}"), expected_version=1)
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
        assert [v.version for v in check.safety_config_versions("acme")] == [1, 2]


def test_rollback_activates_an_older_version_and_delete_keeps_the_history(store):
    store.set_safety_config("acme", KIDS, expected_version=None)
    store.set_safety_config("acme", MEDICAL, expected_version=1)
    back = store.activate_safety_config("acme", 1, expected_version=2, actor="key_000000000009")
    assert back.version == 1 and store.get_safety_config("acme").config == KIDS
    with pytest.raises(NotFound):
        store.activate_safety_config("acme", 9, expected_version=1)
    store.delete_safety_config("acme", expected_version=1)
    assert store.get_safety_config("acme") is None
    assert [v.version for v in store.safety_config_versions("acme")] == [1, 2]
    with pytest.raises(NotFound):
        store.delete_safety_config("acme", expected_version=None)
    again = store.set_safety_config("acme", MEDICAL, expected_version=None)
    assert again.version == 3


def test_every_change_is_audited_with_actor_versions_and_content_hash(store):
    before = datetime.now(UTC) - timedelta(seconds=1)
    store.set_safety_config("acme", KIDS, expected_version=None, actor="key_aaaaaaaaaaaa")
    store.set_safety_config("acme", MEDICAL, expected_version=1, actor="key_bbbbbbbbbbbb")
    store.activate_safety_config("acme", 1, expected_version=2, actor="key_aaaaaaaaaaaa")
    store.delete_safety_config("acme", expected_version=1, actor="key_cccccccccccc")
    store.set_safety_config("globex", KIDS, expected_version=None)
    log = store.safety_audit("acme", since=before)
    assert [(e.action, e.old_version, e.new_version, e.actor) for e in log] == [
        ("set", None, 1, "key_aaaaaaaaaaaa"),
        ("set", 1, 2, "key_bbbbbbbbbbbb"),
        ("activate", 2, 1, "key_aaaaaaaaaaaa"),
        ("delete", 1, None, "key_cccccccccccc"),
    ]
    assert (
        log[0].content_hash == KIDS.content_hash() == log[2].content_hash
        and log[1].content_hash == MEDICAL.content_hash()
    )
    assert [e.tenant for e in store.safety_audit()] == ["acme"] * 4 + ["globex"]
    assert store.safety_audit("acme", since=datetime.now(UTC) + timedelta(hours=1)) == []


def test_bad_tenant_names_are_refused(store):
    with pytest.raises(InvalidRequest) as err:
        store.set_safety_config("Bad Name", KIDS, expected_version=None)
    assert err.value.field == "tenant"


@pytest.mark.parametrize(
    "data, field",
    [
        ({"text": "  "}, "text"),
        ({"text": "ok", "thresholds": {"harmlessness": float("nan")}}, "thresholds.harmlessness"),
        ({"text": "ok", "thresholds": {"bad name": 0.5}}, "thresholds.bad name"),
        ({"text": "ok", "action": "ignore"}, "action"),
        ({"text": "ok", "disallowed": [""]}, "disallowed[0]"),
        ({"text": "x" * 20_001}, "text"),
        ({"text": "ok", "max_resamples": 0}, "max_resamples"),
        ({"text": "ok\ud800"}, "text"),
        ({"text": "ok", "tone": "friendly"}, "tone"),
    ],
)
def test_config_validation_names_the_field(data, field):
    from aligner.contract import parse_model

    with pytest.raises(InvalidRequest) as err:
        parse_model(SafetyConfig, data)
    assert err.value.field == field


def test_thresholds_must_name_served_objectives_within_their_range():
    ranges = {"harmlessness": (0.0, 1.0), "quality": (-5.0, 5.0)}
    SafetyConfig(text="ok", thresholds={"harmlessness": 0.8, "quality": -2}).check_objectives(ranges)
    with pytest.raises(InvalidRequest) as err:
        SafetyConfig(text="ok", thresholds={"harmlessness": 1.5}).check_objectives(ranges)
    assert err.value.field == "thresholds.harmlessness" and "[0, 1]" in err.value.message
    with pytest.raises(InvalidRequest) as err:
        SafetyConfig(text="ok", thresholds={"policy_compliance": 0.5}).check_objectives(ranges)
    assert err.value.field == "thresholds.policy_compliance" and "harmlessness, quality" in err.value.message


def test_audit_times_are_the_databases_in_commit_order_whatever_a_writers_clock(store, monkeypatch):
    """A writer whose clock is 5 minutes slow neither reorders the log nor hides its change from
    `since`. Failed before this fix: every row was stamped with the writer's own clock."""
    from aligner.tenants import records, versioned_table

    store.set_safety_config("acme", KIDS, expected_version=None, actor="key_aaaaaaaaaaaa")
    first = store.safety_audit("acme")[-1]
    slow = lambda: datetime.now(UTC) - timedelta(minutes=5)  # noqa: E731
    monkeypatch.setattr(versioned_table, "now", slow, raising=False)
    monkeypatch.setattr(records, "now", slow)
    store.set_safety_config("acme", MEDICAL, expected_version=1, actor="key_bbbbbbbbbbbb")
    store.activate_safety_config("acme", 1, expected_version=2, actor="key_bbbbbbbbbbbb")
    log = store.safety_audit("acme")
    assert [(e.action, e.new_version) for e in log] == [("set", 1), ("set", 2), ("activate", 1)]
    assert [e.id for e in log] == sorted(e.id for e in log)
    assert log[0].at <= log[1].at <= log[2].at and log[2].at - log[0].at < timedelta(minutes=1)
    # A reader polling from the last entry it saw misses nothing written after it.
    assert [e.id for e in store.safety_audit("acme", since=first.at)] == [e.id for e in log]
    versions = store.safety_config_versions("acme")
    assert versions[0].created_at <= versions[1].created_at == log[1].at
