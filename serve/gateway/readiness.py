"""Whether the model replicas serve, as one ingress sees them: the answer of `/readyz` and gRPC Health.

`/readyz`, Health.Check/List and every Health.Watch stream answer from `ReadinessCache`, which one
background task per ingress refreshes every `readiness_interval_s`: the replicas see at most one probe
per interval from each ingress, however many callers there are, and a probe flood costs tenants no
request slot. A fresh ingress has no answer until its first probe: callers wait for that probe (the
one the background task sends; callers never send their own), bounded by its timeout.

A probe asks a replica to check its engine and score a probe on every objective, and takes one of the
replica's request slots. So it is sent only when it tells something requests do not: a request served
within the interval shows the replicas serve, and while requests are in flight and a replica answered
one (or a probe) within `grace_s` they are busy serving, which is not "not ready" either, and a probe
would only wait behind tenants for a slot. A probe that times out, or finds the queue full, counts as
ready under that same rule: with nothing in flight, a late probe means nobody answers (a replica gone
while idle), and it is not ready at once.

Failures that show a replica cannot serve — its engine found dead, the replica gone — clear the
record, and the cache answers "not ready" from that moment, whatever was served before; only a probe
sent after the failure can make it ready again (one sent before it may have been answered by the
engine that then died).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from ray.serve.exceptions import BackPressureError

from aligner.errors import AlignerError, ErrorInfo
from serve.gateway.messages import Readiness

log = logging.getLogger("aligner.serve")

PROBE_TIMEOUT_S = 10.0  # short: while replicas are being replaced nobody answers, and "not ready" must come fast
BUSY_GRACE_S = 60.0
# Error codes that say a replica cannot serve (as opposed to a request that was refused).
REPLICA_DOWN = frozenset({"engine_unavailable", "model_unavailable"})
REPLICA_DOWN_ERROR = ErrorInfo(
    "engine_unavailable", "a model replica reported that it cannot serve; waiting for the next readiness probe"
)


def probe_error(exc: BaseException, timeout_s: float) -> ErrorInfo:
    """What a probe that got no answer says (not an internal error: the replicas are busy or gone)."""
    if isinstance(exc, BackPressureError):
        return ErrorInfo("overloaded", "the model replicas' queue is full: the readiness probe was refused")
    if isinstance(exc, TimeoutError):
        return ErrorInfo("engine_unavailable", f"no model replica answered a readiness probe within {timeout_s:g} s")
    if isinstance(exc, AlignerError):
        return ErrorInfo.of(exc)
    return ErrorInfo("engine_unavailable", f"the readiness probe failed ({type(exc).__name__}): no replica answers")


class ReadinessRecord:
    """When a model replica last showed it serves (a request answered, a probe passed), if since then
    none has shown it cannot."""

    def __init__(self, grace_s: float = BUSY_GRACE_S, clock: Callable[[], float] = time.monotonic):
        self.grace_s = grace_s
        self.clock = clock
        self.last_served: float | None = None
        self.in_flight = 0  # requests of this ingress waiting on a replica right now
        self.downs = 0  # how many times a replica showed it cannot serve: probes sent before the last are stale

    def began(self) -> None:
        self.in_flight += 1

    def ended(self) -> None:
        self.in_flight -= 1

    def served(self) -> None:
        self.last_served = self.clock()

    def down(self) -> None:
        """A replica showed it cannot serve (a probe answered not ready, the replica died)."""
        self.last_served = None
        self.downs += 1

    def failed(self, code: str) -> None:
        """A request failed with `code`: only an error saying the replica cannot serve clears the record."""
        if code in REPLICA_DOWN:
            self.down()

    def served_within(self, seconds: float) -> bool:
        return self.last_served is not None and self.clock() - self.last_served <= seconds

    def busy_means_ready(self) -> bool:
        """What a probe that timed out (or was refused for a full queue) means: ready while requests are
        in flight and a replica served recently (it is busy serving), not ready otherwise (nobody answers)."""
        return self.served_within(self.grace_s) and self.in_flight > 0


Probe = Callable[[], Awaitable[Readiness]]


class ReadinessCache:
    """The readiness every health caller of one ingress reads, refreshed by one background task."""

    def __init__(
        self,
        probe: Probe,
        record: ReadinessRecord,
        interval_s: float,
        model: Callable[[], str | None] = lambda: None,
        probe_timeout_s: float = PROBE_TIMEOUT_S,
    ):
        self.probe = probe  # asks one model replica (through the handle): its Readiness, or raises
        self.record = record
        self.interval_s = interval_s
        self.model = model  # the served model's name, once known (for answers made without a probe)
        self.probe_timeout_s = probe_timeout_s
        self.answer: Readiness | None = None
        self.answer_downs = 0  # record.downs when the answer was made: a later down() overrides it
        self.probes = 0  # probes sent to a replica (the aligner_readiness_probes_total metric counts them too)
        self._answered = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- what callers read ----------------------------------------------------------------------

    def now(self) -> Readiness | None:
        """The answer now (None: no probe has answered yet). A replica seen down since the answer was
        made means not ready, at once."""
        if self.answer is None:
            return None
        if self.record.downs != self.answer_downs:
            return Readiness(ready=False, error=REPLICA_DOWN_ERROR)
        return self.answer

    async def get(self) -> Readiness:
        """The answer now; on a fresh ingress, the first probe's (every caller waits for that one)."""
        if self.answer is None:
            await self._answered.wait()
        answer = self.now()
        assert answer is not None
        return answer

    # -- the background task --------------------------------------------------------------------

    def start(self) -> None:
        """Refresh every `interval_s` in a task of the running loop, from now on."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._refresh_forever())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _refresh_forever(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # never let the task die: every caller would wait on a dead answer
                log.exception("readiness refresh failed")
            await asyncio.sleep(self.interval_s)

    async def refresh(self) -> Readiness:
        """Make the answer: from what requests show, or else from one probe."""
        downs = self.record.downs
        record = self.record
        if self.answer is not None and (record.served_within(self.interval_s) or record.busy_means_ready()):
            # Requests are being answered: that says more than a probe would, and costs no slot.
            return self._set(Readiness(ready=True, model=self.model()), downs)
        return self._set(await self._probe(downs), downs)

    async def _probe(self, downs: int) -> Readiness:
        """One probe, sent after `downs` downs of the record."""
        self.probes += 1
        try:
            answer = await asyncio.wait_for(self.probe(), self.probe_timeout_s)
        except (TimeoutError, BackPressureError) as exc:  # no answer: busy, or nobody there
            if self.record.busy_means_ready():
                return Readiness(ready=True, model=self.model())
            return Readiness(ready=False, error=probe_error(exc, self.probe_timeout_s))
        except Exception as exc:  # the replica is gone, or the call failed: it cannot serve
            log.warning("readiness probe failed: %r", exc)
            self.record.down()
            return Readiness(ready=False, error=probe_error(exc, self.probe_timeout_s))
        if answer.ready:
            if self.record.downs == downs:  # a pass that predates a replica seen down proves nothing
                self.record.served()
        else:
            self.record.down()
        return answer

    def _set(self, answer: Readiness, downs: int) -> Readiness:
        """Keep `answer` as the one callers read. It was made after `downs` downs: a "ready" made before a
        replica was seen down since is stale, and a "not ready" of a probe counts from after its own."""
        if answer.ready and self.record.downs != downs:
            answer = Readiness(ready=False, error=REPLICA_DOWN_ERROR)
        self.answer = answer
        self.answer_downs = self.record.downs
        self._answered.set()
        return answer
