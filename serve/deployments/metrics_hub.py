"""The metrics hub: one deployment holding every replica's latest snapshot, so `/metrics` shows all
replicas through any proxy; and the pusher each replica runs to feed it."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable

from ray.serve.handle import DeploymentHandle

from serve.metrics import Metrics, MetricsAggregate, Snapshot

log = logging.getLogger("aligner.serve")
HUB = "metrics-hub"  # the hub's own entry among the replicas' snapshots


class MetricsHub:
    """Holds the latest metrics snapshot of every replica reporting now, and the retained totals of those
    that stopped (`MetricsAggregate` folds them); `render()` is what GET /metrics returns."""

    def __init__(self, stale_after_s: float, expected_replicas: dict[str, int] | None = None):
        self.aggregate = MetricsAggregate(stale_after_s)
        # The hub's own gauge (the replicas each deployment should have): fixed, so its snapshot is too.
        own = Metrics()
        for deployment, count in (expected_replicas or {}).items():
            own.replicas_expected.labels(deployment=deployment).set(count)
        # Only that family: the zeros of the others would make "no replica reports" look like "replicas report 0".
        self.own = [family for family in own.snapshot() if family[0] == "aligner_replicas_expected"]

    def report(self, replica: str, snapshot: Snapshot) -> None:
        self.aggregate.report(replica, snapshot)

    def render(self) -> bytes:
        # Fresh at every scrape, and set directly rather than reported: a hub scraped rarely must not be
        # folded (and then ignored for good) like a replica gone silent.
        self.aggregate.snapshots[HUB] = (self.aggregate.clock(), self.own)
        return self.aggregate.render()


class MetricsPusher:
    """Sends this replica's metrics snapshot to the hub every `interval` seconds."""

    def __init__(
        self,
        hub: DeploymentHandle,
        metrics: Metrics,
        interval: float,
        deployment: str,
        refresh: Callable[[], None] | None = None,
        replica: str | None = None,
    ):
        self.hub, self.metrics, self.interval, self.refresh = hub, metrics, interval, refresh
        self.replica = replica or uuid.uuid4().hex
        metrics.replicas_reporting.labels(deployment=deployment).set(1)  # summed over fresh snapshots: a count
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                if self.refresh is not None:
                    self.refresh()
                await self.hub.report.remote(self.replica, self.metrics.snapshot())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("could not send metrics to the hub", exc_info=True)
            await asyncio.sleep(self.interval)
