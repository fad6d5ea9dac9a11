"""Several ingress replicas (leasers) against one real quota keeper, on a fake clock: what the quota
tests of serve/gateway/ run on. The keeper and leasers are the real ones; only time is faked."""

from __future__ import annotations

from aligner.errors import RateLimited
from serve.deployments.quota_keeper import LeaseGrant, LeaseRequest, QuotaKeeper, QuotaLimits
from serve.gateway.quotas import SYNC_S, QuotaLeaser, QuotaTicket
from serve.metrics import Metrics

TICK = 0.05


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class QuotaCluster:
    """One keeper and `replicas` leasers on one fake clock; exchanges counted."""

    def __init__(self, replicas: int) -> None:
        self.clock = FakeClock()
        self.keeper = QuotaKeeper(self.clock)
        self.exchanges = 0
        self.metrics = Metrics()

        async def exchange(asks: list[LeaseRequest]) -> list[LeaseGrant]:
            self.exchanges += 1
            return await self.keeper.exchange(asks)

        self.leasers = [
            QuotaLeaser(exchange, self.metrics, clock=self.clock, leaser=f"ingress-{i}") for i in range(replicas)
        ]
        self.last_sync = self.clock.now

    async def advance(self, seconds: float) -> None:
        """Time passes; each replica's background loop runs every SYNC_S."""
        end = self.clock.now + seconds
        while self.clock.now + 1e-9 < end:
            self.clock.now = min(end, self.clock.now + TICK)
            if self.clock.now - self.last_sync >= SYNC_S - 1e-9:
                self.last_sync = self.clock.now
                for leaser in self.leasers:
                    await leaser.sync()

    async def try_admit(self, replica: int, tenant: str, limits: QuotaLimits) -> QuotaTicket | None:
        """Admit one request on `replica` (None: refused with 429)."""
        try:
            ticket = await self.leasers[replica].admit(tenant, limits)
        except RateLimited:
            return None
        assert ticket is not None
        return ticket
