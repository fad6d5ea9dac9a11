"""serve/metrics.py MetricsAggregate, the merge behind the metrics hub: replicas that stopped reporting are
folded into a retained total, so memory holds the live replicas while counters never go back. Real
registries (`Metrics`), a clock the test moves."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from serve.metrics import FOLD_AFTER_STALE, FOLDED_KEPT, Metrics, MetricsAggregate


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def replica(requests: int, queued: int = 0) -> Metrics:
    metrics = Metrics()
    for _ in range(requests):
        metrics.finished("acme", "sample", "ok")
        metrics.latency.labels(strategy="sample").observe(0.2)
    metrics.engine_waiting.set(queued)
    return metrics


def rendered(aggregate: MetricsAggregate) -> dict[tuple, float]:
    values = {}
    for family in text_string_to_metric_families(aggregate.render().decode()):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


REQUESTS = ("aligner_requests_total", (("status", "ok"), ("strategy", "sample"), ("tenant", "acme")))
LATENCY_COUNT = ("aligner_request_latency_seconds_count", (("strategy", "sample"),))
QUEUED = ("aligner_engine_waiting_requests", ())


def test_replicas_that_stopped_reporting_are_folded_and_their_counts_kept():
    clock = Clock()
    aggregate = MetricsAggregate(stale_after_s=10.0, clock=clock)
    assert aggregate.fold_after_s == FOLD_AFTER_STALE * 10.0
    # An autoscaling deployment: 200 short-lived replicas, each reporting once with 3 requests, then gone.
    for i in range(200):
        aggregate.report(f"gone-{i}", replica(3, queued=5).snapshot())
        clock.now += 10.0
    live = replica(1, queued=2)
    aggregate.report("live", live.snapshot())
    values = rendered(aggregate)
    assert values[REQUESTS] == 601 and values[LATENCY_COUNT] == 601
    # Before: every replica that ever reported was kept. Now: those silent for the fold interval are totals.
    assert len(aggregate.snapshots) <= FOLD_AFTER_STALE + 2
    assert len(aggregate.folded) <= FOLDED_KEPT
    clock.now += aggregate.fold_after_s + 1  # everyone is silent now, "live" too
    values = rendered(aggregate)
    assert values[REQUESTS] == 601 and values[LATENCY_COUNT] == 601  # counters never go back
    assert aggregate.snapshots == {}
    assert values.get(QUEUED, 0) == 0  # a gauge of a silent replica is not a fact any more


def test_a_stale_replicas_gauges_go_before_it_is_folded():
    clock = Clock()
    aggregate = MetricsAggregate(stale_after_s=10.0, clock=clock)
    aggregate.report("a", replica(2, queued=4).snapshot())
    aggregate.report("b", replica(1, queued=3).snapshot())
    assert rendered(aggregate)[QUEUED] == 7
    clock.now += 11
    aggregate.report("b", replica(1, queued=3).snapshot())
    values = rendered(aggregate)
    assert values[QUEUED] == 3 and values[REQUESTS] == 3 and "a" in aggregate.snapshots


def test_a_folded_replica_that_reports_again_is_not_counted_twice():
    clock = Clock()
    aggregate = MetricsAggregate(stale_after_s=1.0, clock=clock)
    metrics = replica(4)
    aggregate.report("slow", metrics.snapshot())
    clock.now += aggregate.fold_after_s + 1
    assert rendered(aggregate)[REQUESTS] == 4 and "slow" in aggregate.folded
    metrics.finished("acme", "sample", "ok")  # its counters went on from where they were
    aggregate.report("slow", metrics.snapshot())
    assert rendered(aggregate)[REQUESTS] == 5 and "slow" not in aggregate.folded


def test_a_replica_folded_too_long_ago_is_ignored_when_it_reports_again_not_counted_twice():
    """Failed before this fix: once FOLDED_KEPT later replicas had been folded, its snapshot was gone, and
    a report of it added its whole count again beside the part in the retained total."""
    clock = Clock()
    aggregate = MetricsAggregate(stale_after_s=1.0, clock=clock)
    zombie = replica(4)
    aggregate.report("zombie", zombie.snapshot())
    for i in range(FOLDED_KEPT + 5):  # others come and go after it
        clock.now += aggregate.fold_after_s + 1
        aggregate.report(f"r{i}", replica(1).snapshot())
    clock.now += aggregate.fold_after_s + 1
    total = FOLDED_KEPT + 5 + 4
    assert rendered(aggregate)[REQUESTS] == total and "zombie" not in aggregate.folded
    zombie.finished("acme", "sample", "ok")
    aggregate.report("zombie", zombie.snapshot())
    assert rendered(aggregate)[REQUESTS] == total  # its earlier part stays; it is not added again
    assert "zombie" not in aggregate.snapshots


def test_counters_never_go_back_whatever_the_order_of_reports_and_silences():
    clock = Clock()
    aggregate = MetricsAggregate(stale_after_s=1.0, fold_after_s=5.0, clock=clock)
    registries = {name: Metrics() for name in "abcd"}
    last = 0.0
    for step in range(120):
        name = "abcd"[(step * 7) % 4]
        for _ in range(step % 3):
            registries[name].finished("acme", "sample", "ok")
        if step % 5:
            aggregate.report(name, registries[name].snapshot())
        clock.now += (step % 4) * 2.5  # some gaps fold replicas, some do not
        total = rendered(aggregate).get(REQUESTS, 0.0)
        assert total >= last
        last = total
    for name, metrics in registries.items():
        aggregate.report(name, metrics.snapshot())
    expected = sum(sum(step % 3 for step in range(120) if "abcd"[(step * 7) % 4] == name) for name in "abcd")
    assert rendered(aggregate)[REQUESTS] == expected


def test_replicas_disagreeing_on_a_safety_config_show_as_newest_and_oldest_version():
    clock = Clock()
    aggregate = MetricsAggregate(stale_after_s=10.0, clock=clock)
    up_to_date, behind, other = Metrics(), Metrics(), Metrics()
    up_to_date.safety_config_served("acme", 4, now=0.0)
    behind.safety_config_served("acme", 3, now=0.0)
    other.safety_config_served("globex", None, now=0.0)
    for name, metrics in (("a", up_to_date), ("b", behind), ("c", other)):
        aggregate.report(name, metrics.snapshot())
    values = rendered(aggregate)
    assert values[("aligner_safety_config_version", (("tenant", "acme"),))] == 4
    assert values[("aligner_safety_config_version_oldest", (("tenant", "acme"),))] == 3
    assert values[("aligner_safety_config_version_oldest", (("tenant", "globex"),))] == 0  # no config: 0


def test_a_replica_forgets_the_version_of_a_tenant_it_stopped_serving():
    from serve.metrics import SAFETY_VERSION_SEEN_S

    metrics = Metrics()
    metrics.safety_config_served("acme", 3, now=100.0)
    metrics.safety_config_served("globex", 1, now=100.0 + SAFETY_VERSION_SEEN_S)
    metrics.forget_idle_tenants(now=100.0 + SAFETY_VERSION_SEEN_S + 1)
    aggregate = MetricsAggregate(stale_after_s=10.0, clock=Clock())
    aggregate.report("a", metrics.snapshot())
    versions = {k[1]: v for k, v in rendered(aggregate).items() if k[0] == "aligner_safety_config_version"}
    assert versions == {(("tenant", "globex"),): 1}  # acme's old version is no longer claimed
    metrics.forget_idle_tenants(now=1e9)  # forgetting twice, or everything, raises nothing
    assert metrics._safety_seen == {}


def test_the_hub_reports_the_replicas_each_deployment_should_have():
    from serve.deployments.metrics_hub import MetricsHub

    hub = MetricsHub(10.0, {"model": 2, "ingress": 1})
    hub.report("m1", replica(1).snapshot())
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(hub.render().decode())
        for s in family.samples
    }
    assert values[("aligner_replicas_expected", (("deployment", "model"),))] == 2
    assert values[("aligner_replicas_expected", (("deployment", "ingress"),))] == 1
    assert values[REQUESTS] == 1
    alone = MetricsHub(10.0, {"model": 2}).render().decode()
    assert "aligner_engine_waiting_requests " not in alone  # no zeros of its own: no replica, no engine gauge
    assert 'aligner_replicas_expected{deployment="model"} 2.0' in alone


def test_the_hubs_own_gauge_survives_a_long_time_unscraped():
    from serve.deployments.metrics_hub import MetricsHub

    clock = Clock()
    hub = MetricsHub(10.0, {"model": 2})
    hub.aggregate.clock = clock
    hub.render()
    for i in range(100):  # autoscaling churn while nobody scrapes: many replicas folded after the hub's entry
        clock.now += hub.aggregate.fold_after_s + 1
        hub.report(f"gone-{i}", replica(1).snapshot())
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(hub.render().decode())
        for s in family.samples
    }
    assert values[("aligner_replicas_expected", (("deployment", "model"),))] == 2
