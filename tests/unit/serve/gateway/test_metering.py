"""serve/gateway/metering.py: requests counted in memory, flushed in batches into a real tenant store
(SQLite and PostgreSQL), two meters (two ingress replicas) adding up, nothing lost on a failed flush
or at close; and the `Call` hook: every finished request of an admitted tenant is metered."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from aligner.contract import AlignResponse, SafetyInfo, Usage
from aligner.tenants import ApiKey, TenantStore, UsageCounts
from serve.gateway.call import GENERATED_TOKENS_HEADER, Call
from serve.gateway.metering import UsageMeter, counts_of
from serve.gateway.readiness import ReadinessRecord
from serve.metrics import Metrics

H17 = datetime(2026, 12, 1, 17, 5, tzinfo=UTC)


def usage(**values) -> Usage:
    base = {"prompt_tokens": 12, "completion_tokens": 5, "generated_tokens": 40, "wall_time_s": 0.1}
    return Usage(**{**base, **values})


def response(verdict: str | None = None, **values) -> AlignResponse:
    return AlignResponse(
        id="r1",
        model="m",
        text="hi",
        finish_reason="stop",
        usage=usage(**values),
        safety=None if verdict is None else SafetyInfo(version=1, verdict=verdict),
    )


def test_a_request_counts_its_usage_and_its_safety_action():
    counts = counts_of(
        usage(candidate_tokens=32, prefill_tokens=60, reward_calls=4, engine_requests=2), verdict="resampled"
    )
    assert counts == UsageCounts(
        requests=1,
        prompt_tokens=12,
        completion_tokens=5,
        generated_tokens=40,
        candidate_tokens=32,
        prefill_tokens=60,
        reward_calls=4,
        engine_requests=2,
        safety_resampled=1,
    )
    assert counts_of(None, None) == UsageCounts(requests=1)  # failed, refused, cancelled: the request only


def test_records_are_batched_in_memory_and_one_flush_writes_them(store):
    meter = UsageMeter(store, interval_s=60)
    for _ in range(50):
        meter.record("acme", "ok", usage(), at=H17)
    meter.record("acme", "rate_limited", at=H17)
    meter.record("acme", "ok", usage(), at=H17 + timedelta(hours=1))
    assert store.usage() == []  # nothing written per request
    assert asyncio.run(meter.flush()) == 3  # rows: (17:00, ok), (17:00, rate_limited), (18:00, ok)
    rows = {(r.key.hour.hour, r.key.status): r.counts for r in store.usage()}
    assert rows[(17, "ok")].requests == 50 and rows[(17, "ok")].generated_tokens == 2000
    assert rows[(17, "rate_limited")] == UsageCounts(requests=1)
    assert rows[(18, "ok")].requests == 1
    assert asyncio.run(meter.flush()) == 0 and meter.pending == {}


def test_two_meters_flushing_into_one_store_add_up(store_url):
    """Two ingress replicas: each its own meter and store connection, flushing the same hour's rows."""

    async def replica(store: TenantStore, requests: int) -> None:
        meter = UsageMeter(store, interval_s=60)
        for i in range(requests):
            meter.record("acme", "ok", usage(generated_tokens=i), at=H17)
            if i % 10 == 0:
                await meter.flush()
        await meter.close()

    async def both(stores: list[TenantStore]) -> None:
        await asyncio.gather(replica(stores[0], 35), replica(stores[1], 41))

    stores = [TenantStore.open(store_url), TenantStore.open(store_url)]
    try:
        asyncio.run(both(stores))
        [row] = stores[0].usage()
        assert row.counts.requests == 76
        assert row.counts.generated_tokens == sum(range(35)) + sum(range(41))
        assert row.counts.prompt_tokens == 76 * 12
    finally:
        for s in stores:
            s.close()


class FlakyStore:
    """A real store whose first `failures` writes fail, as a database that is briefly down."""

    def __init__(self, store: TenantStore, failures: int):
        self.store, self.failures = store, failures

    def add_usage(self, counts) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database is down")
        self.store.add_usage(counts)

    def reason(self, exc: BaseException) -> str:
        return self.store.reason(exc)


def test_a_failed_flush_keeps_its_counts_for_the_next(store):
    meter = UsageMeter(FlakyStore(store, failures=1), interval_s=60)  # type: ignore[arg-type]
    meter.record("acme", "ok", usage(), at=H17)

    async def two_flushes() -> None:
        assert await meter.flush() == 0  # the database is down: kept
        meter.record("acme", "ok", usage(), at=H17)  # arrives meanwhile
        assert await meter.flush() == 1

    asyncio.run(two_flushes())
    [row] = store.usage()
    assert row.counts.requests == 2 and row.counts.generated_tokens == 80


def test_the_loop_flushes_every_interval_and_close_flushes_the_rest(store):
    async def scenario() -> None:
        meter = UsageMeter(store, interval_s=0.05)
        meter.start()
        meter.record("acme", "ok", usage(), at=H17)
        for _ in range(400):  # the loop's first flush (bounded wait: a busy core only slows it)
            if store.usage():
                break
            await asyncio.sleep(0.05)
        assert [r.counts.requests for r in store.usage()] == [1]
        meter.record("acme", "ok", usage(), at=H17)
        meter.record("acme", "cancelled", at=H17)
        await meter.close()  # the replica stops: what is pending is written, the loop ends
        assert meter.pending == {}

    asyncio.run(scenario())
    assert {r.key.status: r.counts.requests for r in store.usage()} == {"ok": 2, "cancelled": 1}


def key(tenant: str) -> ApiKey:
    return ApiKey(id="key_000000000001", tenant=tenant, admin=False, created_at=H17)


def test_every_finished_call_of_an_admitted_tenant_is_metered(store):
    meter = UsageMeter(store, interval_s=60)
    metrics, readiness = Metrics(), ReadinessRecord()

    answered = Call(metrics, readiness, meter)
    answered.tenant, answered.key = "acme", key("acme")
    answered.ok(response(verdict="refused", candidate_tokens=30))
    assert answered.headers()[GENERATED_TOKENS_HEADER] == "40"

    failed = Call(metrics, readiness, meter)
    failed.tenant, failed.key = "acme", key("acme")
    failed.finish("invalid_argument")
    assert GENERATED_TOKENS_HEADER not in failed.headers()

    Call(metrics, readiness, meter).finish("unauthenticated")  # no key: no tenant to bill
    named = Call(metrics, readiness, meter)
    named.tenant = "unauthenticated"  # a tenant may be called that: only an admitted key counts
    named.finish("unauthenticated")

    asyncio.run(meter.flush())
    rows = {(r.key.tenant, r.key.status): r.counts for r in store.usage()}
    assert set(rows) == {("acme", "ok"), ("acme", "invalid_argument")}
    assert rows[("acme", "ok")].candidate_tokens == 30 and rows[("acme", "ok")].safety_refused == 1
    assert rows[("acme", "invalid_argument")] == UsageCounts(requests=1)
    generated = metrics.tenant_generated_tokens.labels(tenant="acme")._value.get()
    assert generated == 40


def test_a_call_that_failed_after_engine_work_is_metered_and_charged_for_what_it_generated(store):
    """A dead reward model, a deadline: the replica's error carries what the search had generated (failed
    before this fix: such a request was metered as 0 tokens and the fair queue kept only its estimate)."""
    meter = UsageMeter(store, interval_s=60)
    metrics, readiness = Metrics(), ReadinessRecord()
    spent = usage(completion_tokens=0, generated_tokens=4000, candidate_tokens=0, engine_requests=1, reward_calls=8)
    failed = Call(metrics, readiness, meter)
    failed.tenant, failed.key = "acme", key("acme")
    failed.finish("internal", spent)
    assert failed.charged_tokens("internal") == 4000  # cut short inside its engine request: generated tokens
    assert GENERATED_TOKENS_HEADER not in failed.headers()  # an error answer bills nothing by header

    asyncio.run(meter.flush())
    [row] = store.usage()
    assert (row.key.status, row.counts.requests, row.counts.generated_tokens) == ("internal", 1, 4000)
    assert (row.counts.reward_calls, row.counts.engine_requests, row.counts.completion_tokens) == (8, 1, 0)
    assert metrics.tenant_generated_tokens.labels(tenant="acme")._value.get() == 4000


def test_a_replica_meters_tokens_only_and_the_ingress_the_request():
    """The two records of one cancelled request add up to one request with its tokens, counted once."""
    replica = counts_of(usage(completion_tokens=0, generated_tokens=4000, engine_requests=1), None, requests=0)
    ingress = counts_of(None, None)
    total = UsageCounts()
    total.add(replica)
    total.add(ingress)
    assert (total.requests, total.generated_tokens, total.engine_requests) == (1, 4000, 1)
