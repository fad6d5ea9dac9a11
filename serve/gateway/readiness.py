"""Whether the model replicas serve, as one ingress sees them: the answer of `/readyz` and gRPC Health.

A probe asks a replica to check its engine and score a probe on every objective. A replica that is
busy serving answers late, or its queue is full and the probe is refused: neither means "not ready"
when requests are in flight and the replicas have just answered some. So a probe that times out, or
finds the queue full, counts as ready only while this ingress has requests in flight and a replica
served a request (or passed a probe) within `grace_s`: with nothing in flight, a late probe means
nobody answers (a replica gone while idle), and it is not ready at once. Failures that show a replica
cannot serve — its engine found dead, the replica gone — clear the record, so a dead engine is
reported as not ready at once, whatever was served before it died.
"""

from __future__ import annotations

import time
from collections.abc import Callable

PROBE_TIMEOUT_S = 10.0  # short: while replicas are being replaced nobody answers, and "not ready" must come fast
BUSY_GRACE_S = 60.0
# Error codes that say a replica cannot serve (as opposed to a request that was refused).
REPLICA_DOWN = frozenset({"engine_unavailable", "model_unavailable"})


class ReadinessRecord:
    """When a model replica last showed it serves (a request answered, a probe passed), if since then
    none has shown it cannot."""

    def __init__(self, grace_s: float = BUSY_GRACE_S, clock: Callable[[], float] = time.monotonic):
        self.grace_s = grace_s
        self.clock = clock
        self.last_served: float | None = None
        self.in_flight = 0  # requests of this ingress waiting on a replica right now

    def began(self) -> None:
        self.in_flight += 1

    def ended(self) -> None:
        self.in_flight -= 1

    def served(self) -> None:
        self.last_served = self.clock()

    def down(self) -> None:
        """A replica showed it cannot serve (a probe answered not ready, the replica died)."""
        self.last_served = None

    def failed(self, code: str) -> None:
        """A request failed with `code`: only an error saying the replica cannot serve clears the record."""
        if code in REPLICA_DOWN:
            self.down()

    def busy_means_ready(self) -> bool:
        """What a probe that timed out (or was refused for a full queue) means: ready while requests are
        in flight and a replica served recently (it is busy serving), not ready otherwise (nobody answers)."""
        recent = self.last_served is not None and self.clock() - self.last_served <= self.grace_s
        return recent and self.in_flight > 0
