"""Every metric of the server, declared once, and their aggregation over replicas.

Each replica (ingress and model) records into its own registry and sends a
snapshot to the `MetricsHub` deployment every `metrics_interval_s`; `GET
/metrics` renders the hub's merge: counters and histograms summed over every
replica that ever reported (so totals never go back when a replica is
replaced), gauges summed over the replicas that reported recently (those in
`MAX_MERGED` by max and those in `MIN_MERGED` by min: the same fact seen by several
replicas). A replica that
has not reported for `FOLD_AFTER_STALE` × the staleness interval is folded into
a retained total (its counters and histograms; its gauges are gone already), so
the hub's memory holds the replicas alive now, not every replica that ever ran
under autoscaling. This works
wherever the replicas run (other processes, other nodes), because snapshots
travel through Ray like any other call. Labels are bounded: tenants, strategies,
error codes, objectives and budget limits, never request ids.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.metrics_core import Metric

from aligner.contract import AlignResponse

log = logging.getLogger("aligner.serve")

disable_created_metrics()

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
COUNT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# A replica reports the safety-config version of a tenant it served within this many seconds.
SAFETY_VERSION_SEEN_S = 60.0
SCORE_BUCKETS = (-5, -1, 0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 5)
Snapshot = list[tuple[str, str, str, list[tuple[str, dict[str, str], float]]]]


class Metrics:
    """One replica's metrics (a private registry, so several can live in one process)."""

    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "aligner_requests",
            "Requests finished, by tenant, strategy and status (ok or the error code).",
            ["tenant", "strategy", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "aligner_request_latency_seconds",
            "Wall time of successful requests at the ingress.",
            ["strategy"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.arrival_wait = Histogram(
            "aligner_arrival_wait_seconds",
            "Time a tenant's arrival (a request when nothing else of its tenant was queued or in flight at "
            "this ingress) took to reach a model replica: a fair-queue slot, then Ray Serve's queue. The "
            "server's saturation, which no request lengthens by its own cost.",
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.first_chunk = Histogram(
            "aligner_time_to_first_chunk_seconds",
            "Streaming: time from arrival to the first text sent.",
            ["strategy"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.generated_tokens = Counter(
            "aligner_generated_tokens",
            "Tokens the engine generated: every candidate's and the judge's.",
            ["strategy"],
            registry=r,
        )
        self.tenant_generated_tokens = Counter(
            "aligner_tenant_generated_tokens",
            "Tokens the engine generated for each tenant's answered requests: every candidate's and the judge's "
            "(what x-aligner-generated-tokens bills).",
            ["tenant"],
            registry=r,
        )
        self.candidates = Histogram(
            "aligner_candidates_per_request",
            "Final candidates a search compared.",
            ["strategy"],
            buckets=COUNT_BUCKETS,
            registry=r,
        )
        self.reward_calls = Counter("aligner_reward_calls", "Candidates (or partial candidates) scored.", registry=r)
        self.reward_batch_size = Histogram(
            "aligner_reward_batch_size",
            "Responses per merged reward-model batch (across requests).",
            buckets=COUNT_BUCKETS,
            registry=r,
        )
        self.reward_scoring = Histogram(
            "aligner_reward_scoring_seconds",
            "Wall time of one merged reward-model batch.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.graph_replays = Counter("aligner_cuda_graph_replays", "Reward-scoring CUDA graph replays.", registry=r)
        self.chosen_reward = Histogram(
            "aligner_chosen_reward",
            "Raw score of the chosen response, by objective.",
            ["objective"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.budget_stops = Counter(
            "aligner_budget_stops", "Searches cut short by a budget limit.", ["limit"], registry=r
        )
        self.replicas_expected = Gauge(
            "aligner_replicas_expected",
            "Replicas each deployment is configured to keep at least (model: num_replicas or autoscaling's "
            "min_replicas; ingress: ingress_replicas), reported by the metrics hub.",
            ["deployment"],
            registry=r,
        )
        self.replicas_reporting = Gauge(
            "aligner_replicas_reporting",
            "Replicas whose metrics this scrape includes (fresh ones), by deployment "
            "(model, ingress): a scrape through any proxy covers them all.",
            ["deployment"],
            registry=r,
        )
        self.engine_running = Gauge("aligner_engine_running_requests", "Requests the engines are decoding.", registry=r)
        self.engine_waiting = Gauge(
            "aligner_engine_waiting_requests", "Requests waiting in the engines' schedulers.", registry=r
        )
        self.queue_rejections = Counter(
            "aligner_queue_rejections", "Requests refused because the queue was full (429).", registry=r
        )
        self.rate_limited = Counter(
            "aligner_rate_limited",
            "Requests refused over a tenant's quota (429 rate_limited), by tenant and limit: requests_per_minute, "
            "candidate_tokens_per_minute or max_concurrent_requests.",
            ["tenant", "limit"],
            registry=r,
        )
        self.safety_actions = Counter(
            "aligner_safety_actions",
            "Verdicts of tenants' safety configs on answered requests: passed, resampled, refused, flagged.",
            ["tenant", "action"],
            registry=r,
        )
        self.readiness_probes = Counter(
            "aligner_readiness_probes",
            "Readiness probes the ingress replicas sent to a model replica (at most one per readiness_interval_s "
            "each, however many /readyz and Health callers).",
            registry=r,
        )
        self.safety_version = Gauge(
            "aligner_safety_config_version",
            "Version of each tenant's safety config in force (0: none): the newest any ingress replica served "
            f"a request under in the last {SAFETY_VERSION_SEEN_S:.0f} s.",
            ["tenant"],
            registry=r,
        )
        self.safety_version_oldest = Gauge(
            "aligner_safety_config_version_oldest",
            "The oldest version of each tenant's safety config that an ingress replica served a request under "
            f"in the last {SAFETY_VERSION_SEEN_S:.0f} s: below aligner_safety_config_version, replicas disagree.",
            ["tenant"],
            registry=r,
        )
        self._safety_seen: dict[str, float] = {}  # tenant -> when a request was last served under its config

    def safety_config_served(self, tenant: str, version: int | None, now: float | None = None) -> None:
        """A request of `tenant` is served under its config `version` (None: no config) on this replica."""
        self.safety_version.labels(tenant=tenant).set(version or 0)
        self.safety_version_oldest.labels(tenant=tenant).set(version or 0)
        self._safety_seen[tenant] = time.monotonic() if now is None else now

    def forget_idle_tenants(self, now: float | None = None) -> None:
        """Drop the safety-config versions of tenants this replica has not served for SAFETY_VERSION_SEEN_S:
        a version seen long ago is no evidence of what the replica would serve now (a drift alert on it
        would never clear)."""
        now = time.monotonic() if now is None else now
        for tenant, seen in list(self._safety_seen.items()):
            if now - seen > SAFETY_VERSION_SEEN_S:
                del self._safety_seen[tenant]
                self.safety_version.remove(tenant)
                self.safety_version_oldest.remove(tenant)

    def finished(self, tenant: str, strategy: str, status: str) -> None:
        self.requests.labels(tenant=tenant, strategy=strategy, status=status).inc()
        if status == "overloaded":
            self.queue_rejections.inc()

    def response(self, strategy: str, response: AlignResponse, seconds: float) -> None:
        """Everything a successful AlignResponse says about the work done."""
        usage = response.usage
        self.latency.labels(strategy=strategy).observe(seconds)
        self.generated_tokens.labels(strategy=strategy).inc(usage.generated_tokens)
        self.candidates.labels(strategy=strategy).observe(usage.candidates)
        self.reward_calls.inc(usage.reward_calls)
        if usage.stopped_by:
            self.budget_stops.labels(limit=usage.stopped_by).inc()
        for objective, value in (response.scores or {}).items():
            self.chosen_reward.labels(objective=objective).observe(value)

    def snapshot(self) -> Snapshot:
        return [
            (m.name, m.type, m.documentation, [(s.name, dict(s.labels), float(s.value)) for s in m.samples])
            for m in self.registry.collect()
        ]


# Gauges whose replicas' values are the same fact seen from several places: merged by max or min, not summed.
MAX_MERGED = {"aligner_safety_config_version", "aligner_replicas_expected"}
MIN_MERGED = {"aligner_safety_config_version_oldest"}


def _add(a: float, b: float) -> float:
    return a + b


# A replica silent for this many staleness intervals (5 minutes with the defaults) is folded into the
# retained total; a live replica reports every metrics_interval_s, a tenth of the staleness interval.
FOLD_AFTER_STALE = 30
# Snapshots of the replicas folded last, kept so one that reports again is taken back out of the total.
FOLDED_KEPT = 64
# Names of replicas folded before those (no snapshot: a name is all): one that reports again is ignored,
# since its part is in the total and could not be taken out; the oldest names go past this many.
GONE_KEPT = 100_000

Families = dict[str, tuple[str, str, dict[tuple, float]]]


class MetricsAggregate:
    """Merges the snapshots of every replica (see the module docstring)."""

    def __init__(
        self,
        stale_after_s: float = 10.0,
        fold_after_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.stale_after_s = stale_after_s
        self.fold_after_s = FOLD_AFTER_STALE * stale_after_s if fold_after_s is None else fold_after_s
        self.clock = clock
        self.snapshots: dict[str, tuple[float, Snapshot]] = {}
        # Counters and histograms of the replicas folded (stopped reporting): summed into every render.
        self.retained: Families = {}
        self.folded: OrderedDict[str, Snapshot] = OrderedDict()
        self.gone: OrderedDict[str, bool] = OrderedDict()  # name -> warned

    def report(self, replica: str, snapshot: Snapshot) -> None:
        """Take `replica`'s latest snapshot; a replica folded too long ago to be taken out of the retained
        total again is ignored (counted twice otherwise), with a warning the first time."""
        if replica in self.gone:
            if not self.gone[replica]:
                log.warning("metrics: replica %s reported again after it was folded long ago; ignored", replica)
                self.gone[replica] = True
            return
        now = self.clock()
        folded = self.folded.pop(replica, None)
        if folded is not None:
            # Back after it was folded: its snapshot counts from its start again, folded part included.
            _accumulate(self.retained, folded, sign=-1.0)
        self.snapshots[replica] = (now, snapshot)
        self.fold_silent(now)

    def fold_silent(self, now: float) -> None:
        """Fold every replica silent for `fold_after_s` into the retained total."""
        silent = [replica for replica, (seen, _) in self.snapshots.items() if now - seen > self.fold_after_s]
        for replica in silent:
            _, snapshot = self.snapshots.pop(replica)
            _accumulate(self.retained, snapshot, sign=1.0)
            self.folded[replica] = snapshot
            while len(self.folded) > FOLDED_KEPT:
                oldest, _ = self.folded.popitem(last=False)  # its part stays in the total for good
                self.gone[oldest] = False
                while len(self.gone) > GONE_KEPT:
                    self.gone.popitem(last=False)

    def merged(self) -> Families:
        now = self.clock()
        self.fold_silent(now)
        families: Families = {name: (kind, doc, dict(values)) for name, (kind, doc, values) in self.retained.items()}
        for seen, snapshot in self.snapshots.values():
            fresh = now - seen <= self.stale_after_s
            for name, kind, doc, samples in snapshot:
                if kind == "gauge" and not fresh:
                    continue
                _, _, values = families.setdefault(name, (kind, doc, {}))
                merge = max if name in MAX_MERGED else min if name in MIN_MERGED else _add
                for sample, labels, value in samples:
                    key = (sample, tuple(sorted(labels.items())))
                    values[key] = value if key not in values else merge(values[key], value)
        return families

    def render(self) -> bytes:
        families = self.merged()

        class Collector:
            def collect(self):
                for name, (kind, doc, values) in families.items():
                    metric = Metric(name, doc, kind)
                    for sample, labels in sorted(values, key=_sample_order):
                        metric.add_sample(sample, dict(labels), values[(sample, labels)])
                    yield metric

        registry = CollectorRegistry(auto_describe=False)
        registry.register(Collector())
        return generate_latest(registry)


def _accumulate(total: Families, snapshot: Snapshot, sign: float) -> None:
    """Add (sign 1) or take back (sign -1) a snapshot's counters and histograms in `total` (gauges are not
    totals: a silent replica's gauges are not shown)."""
    for name, kind, doc, samples in snapshot:
        if kind == "gauge":
            continue
        _, _, values = total.setdefault(name, (kind, doc, {}))
        for sample, labels, value in samples:
            key = (sample, tuple(sorted(labels.items())))
            values[key] = values.get(key, 0.0) + sign * value


def _sample_order(key: tuple) -> tuple:
    sample, labels = key
    series = tuple((k, v) for k, v in labels if k != "le")
    le = dict(labels).get("le")
    bound = math.inf if le in (None, "+Inf") else float(le)
    return (series, sample.endswith("_count") or sample.endswith("_sum"), sample, bound)
