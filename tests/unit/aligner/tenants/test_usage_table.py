"""Metered usage in the tenant store: upserts that add, writers that add up, hours, the query bounds.

Runs on a real SQLite file and a real PostgreSQL server (the `store` / `store_url` fixtures).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from aligner.errors import InvalidRequest
from aligner.tenants import (
    MIGRATIONS,
    TenantStore,
    UsageCounts,
    UsageKey,
    hour_of,
    hour_range,
    summarize,
    usage_report,
)

H17 = datetime(2026, 12, 1, 17, tzinfo=UTC)
H18 = H17 + timedelta(hours=1)


def counts(**values: int) -> UsageCounts:
    return UsageCounts(**values)


def test_an_upsert_adds_to_the_hours_row(store):
    key = UsageKey("acme", H17, "ok")
    store.add_usage({key: counts(requests=2, prompt_tokens=10, generated_tokens=40, safety_refused=1)})
    store.add_usage({key: counts(requests=1, prompt_tokens=5, generated_tokens=7, reward_calls=3)})
    [row] = store.usage()
    assert row.key == key
    assert row.counts == counts(requests=3, prompt_tokens=15, generated_tokens=47, reward_calls=3, safety_refused=1)
    assert store.schema_version() == len(MIGRATIONS) >= 3


def test_statuses_tenants_and_hours_are_rows_of_their_own(store):
    store.add_usage(
        {
            UsageKey("acme", H17, "ok"): counts(requests=2, completion_tokens=9),
            UsageKey("acme", H17, "cancelled"): counts(requests=1),
            UsageKey("acme", H18, "ok"): counts(requests=1, completion_tokens=4),
            UsageKey("globex", H17, "invalid_argument"): counts(requests=5),
        }
    )
    keys = [(r.key.tenant, r.key.hour, r.key.status) for r in store.usage()]
    assert keys == [
        ("acme", H17, "cancelled"),
        ("acme", H17, "ok"),
        ("acme", H18, "ok"),
        ("globex", H17, "invalid_argument"),
    ]
    assert [r.key.status for r in store.usage("globex")] == ["invalid_argument"]


def test_a_key_inside_an_hour_lands_in_that_hours_row(store):
    store.add_usage({UsageKey("acme", H17 + timedelta(minutes=59, seconds=59), "ok"): counts(requests=1)})
    store.add_usage({UsageKey("acme", H17 + timedelta(minutes=1), "ok"): counts(requests=1)})
    [row] = store.usage()
    assert row.key.hour == H17 and row.counts.requests == 2


def test_hours_are_utc_whatever_the_zone_given():
    plus_five = datetime(2026, 12, 1, 22, 45, tzinfo=UTC).astimezone(
        datetime.now(UTC).astimezone().tzinfo  # the machine's zone, whichever it is
    )
    assert hour_of(plus_five) == datetime(2026, 12, 1, 22, tzinfo=UTC)
    assert hour_of(datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)) == datetime(2026, 12, 31, 23, tzinfo=UTC)


def test_the_query_returns_every_hour_overlapping_since_until(store):
    for hour in (H17 - timedelta(hours=1), H17, H18, H18 + timedelta(hours=1)):
        store.add_usage({UsageKey("acme", hour, "ok"): counts(requests=1)})
    hours = [r.key.hour for r in store.usage(since=H17 + timedelta(minutes=30), until=H18 + timedelta(minutes=1))]
    assert hours == [H17, H18]  # 17:00 overlaps [17:30, …); 18:00 starts before 18:01
    assert [r.key.hour for r in store.usage(since=H17, until=H18)] == [H17]  # until is exclusive
    assert len(store.usage(until=H17)) == 1 and len(store.usage(since=H18)) == 2


def test_two_stores_writing_at_once_add_up_exactly(store_url):
    """Two ingress replicas (each its own store and connection pool) flushing the same rows together."""
    stores = [TenantStore.open(store_url), TenantStore.open(store_url)]
    flushes_each = 20
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def flush_many(store: TenantStore) -> None:
        try:
            barrier.wait()
            for i in range(flushes_each):
                # Both write the same two rows in opposite orders: the sorted writes must not deadlock.
                keys = [UsageKey("acme", H17, "ok"), UsageKey("globex", H17, "ok")]
                store.add_usage({k: counts(requests=1, generated_tokens=i) for k in (keys if i % 2 else keys[::-1])})
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=flush_many, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors
        rows = {r.key.tenant: r.counts for r in stores[0].usage()}
        expected_tokens = len(stores) * sum(range(flushes_each))
        assert rows["acme"] == rows["globex"] == counts(requests=2 * flushes_each, generated_tokens=expected_tokens)
    finally:
        for s in stores:
            s.close()


def test_a_tenant_name_is_checked_before_anything_is_written(store):
    with pytest.raises(InvalidRequest) as err:
        store.add_usage({UsageKey("Not A Tenant", H17, "ok"): counts(requests=1)})
    assert err.value.field == "tenant"
    assert store.usage() == []
    with pytest.raises(InvalidRequest):
        store.usage("../etc")


def test_the_report_groups_statuses_per_hour_and_totals_per_tenant(store):
    store.add_usage(
        {
            UsageKey("acme", H17, "ok"): counts(requests=2, prompt_tokens=10, safety_passed=2),
            UsageKey("acme", H17, "cancelled"): counts(requests=1),
            UsageKey("acme", H18, "ok"): counts(requests=1, prompt_tokens=3, safety_refused=1),
        }
    )
    report = usage_report(store.usage(), H17, None)
    assert report["since"] == "2026-12-01T17:00:00+00:00" and report["until"] is None
    first, second = report["hours"]
    assert first["hour"] == "2026-12-01T17:00:00+00:00" and first["requests"] == {"cancelled": 1, "ok": 2}
    assert first["prompt_tokens"] == 10 and first["safety_actions"] == {"passed": 2}
    assert second["requests"] == {"ok": 1} and second["safety_actions"] == {"refused": 1}
    [total] = report["totals"]
    assert "hour" not in total and total["requests"] == {"cancelled": 1, "ok": 3} and total["prompt_tokens"] == 13
    assert total["safety_actions"] == {"passed": 2, "refused": 1}
    assert summarize([]) == ([], [])


@pytest.mark.parametrize(
    ("since", "until"),
    [
        ("2026-12-01", None),
        ("2026-12-01T17", None),
        ("2026-12-01T17:00:00Z", "2026-12-01T18:00:00+00:00"),
        ("2026-12-01T22:30+05:30", None),  # 17:00 UTC
        (None, "2027-01-01"),
        ("2024-02-29T00:00", "2024-03-01"),  # a leap day
    ],
)
def test_good_bounds_are_read_as_utc(since, until):
    start, end = hour_range(since, until)
    if since is not None:
        assert start is not None and start.tzinfo is UTC
        assert start.astimezone(UTC).date().isoformat() in ("2026-12-01", "2024-02-29")
    if until is not None:
        assert end is not None and end.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("since", "until", "field", "said"),
    [
        ("2026-02-30", None, "since", "day is out of range"),
        ("2025-02-29T00:00", None, "since", "day is out of range"),  # not a leap year
        ("2026-13-01", None, "since", "month must be in 1..12"),
        ("2026-12-01T24:00", None, "since", "hour must be in 0..23"),
        ("2026-12-31T23:59:60Z", None, "since", "second must be in 0..59"),  # no leap seconds
        ("0001-01-01T00:00+01:00", None, "since", "outside the times"),
        ("9999-12-31T23:00+00:00", "9999-12-31T23:30-01:00", "until", "outside the times"),
        ("", None, "since", "ISO 8601"),
        ("yesterday", None, "since", "ISO 8601"),
        (None, "1733072400", "until", "ISO 8601"),
        ("2026-12-01T18:00Z", "2026-12-01T18:00Z", "until", "not after since"),
        ("2026-12-01T18:00Z", "2026-12-01T17:00Z", "until", "not after since"),
    ],
)
def test_bad_bounds_are_400_naming_the_bound(since, until, field, said):
    with pytest.raises(InvalidRequest) as err:
        hour_range(since, until)
    assert err.value.field == field and said in err.value.message, err.value.message


def test_a_huge_bound_is_not_echoed_back():
    with pytest.raises(InvalidRequest) as err:
        hour_range("2026-12-01T17:00" + "9" * 100_000, None)
    assert err.value.field == "since" and len(err.value.message) < 200
