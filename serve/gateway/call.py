"""`Call`: one generation request's bookkeeping at the ingress, from admission to its end: who it is for,
the safety config and policy it is served under, its quota ticket and fair-queue slot, its metrics, its
metered usage, and the headers its answer carries."""

from __future__ import annotations

import time

from aligner.contract import AlignResponse, Usage
from aligner.tenants import ApiKey
from serve.gateway.fair_queue import Slot
from serve.gateway.messages import NO_SAFETY_CONFIG
from serve.gateway.metering import UsageMeter
from serve.gateway.policies import NO_POLICY
from serve.gateway.quotas import QuotaLeaser, QuotaTicket
from serve.gateway.readiness import ReadinessRecord
from serve.metrics import Metrics

GENERATED_TOKENS_HEADER = "x-aligner-generated-tokens"
# Error codes of requests the model replica refuses in phase 1, before the engine is asked for anything.
REFUSED_BEFORE_WORK = frozenset({"invalid_argument", "prompt_too_long", "invalid_config"})


class Call:
    """One request's bookkeeping at the ingress: tenant, strategy, timing, and its final metric."""

    def __init__(self, metrics: Metrics, readiness: ReadinessRecord, meter: UsageMeter | None = None):
        self.metrics = metrics
        self.readiness = readiness
        self.meter = meter
        self.response: AlignResponse | None = None  # set when answered: its usage is metered and billed
        self.spent: Usage | None = None  # set when it failed after engine work: what it had cost
        self.key: ApiKey | None = None  # set when admitted: only a known tenant's requests are metered
        self.started = time.monotonic()
        self.tenant = "unauthenticated"
        self.strategy = "none"
        self.context = NO_SAFETY_CONFIG  # the tenant's safety config this request is served under
        self.policy = NO_POLICY  # the tenant's policy it is admitted and parsed under
        self.quota: QuotaTicket | None = None  # its part of the tenant's quotas, from admission to finish
        self.quotas: QuotaLeaser | None = None  # whose headers the answer carries, admitted or refused
        self.replica: str | None = None
        self.slot: Slot | None = None  # its place on the model replicas, from dispatch to finish
        # Its tenant's arrival: how long it waited for its slot, until `arrived` adds the replica's queue.
        self.arrival_wait: float | None = None
        self.done = False
        readiness.began()

    def arrived(self, replica_queue_s: float) -> None:
        """An arrival reached its model replica, `replica_queue_s` after it was sent: the whole wait, slot
        and Ray Serve's queue, is observed once (aligner_arrival_wait_seconds)."""
        if self.arrival_wait is not None:
            self.metrics.arrival_wait.observe(self.arrival_wait + max(0.0, replica_queue_s))
            self.arrival_wait = None

    def ok(self, response: AlignResponse) -> None:
        self.response = response
        self.metrics.response(self.strategy, response, time.monotonic() - self.started)
        self.metrics.tenant_generated_tokens.labels(tenant=self.tenant).inc(response.usage.generated_tokens)
        verdict = response.safety.verdict if response.safety is not None else None
        if verdict is not None:
            self.metrics.safety_actions.labels(tenant=self.tenant, action=verdict).inc()
        self.readiness.served()
        self.finish("ok")

    def finish(self, status: str, spent: Usage | None = None) -> None:
        """The request ended with `status`; `spent`: what it had cost when it failed after engine work (the
        replica's error says), metered and charged like an answer's usage."""
        if not self.done:
            self.done = True
            # An arrival given up or failed after it was sent: its slot wait only, a bound no tenant can
            # inflate by cancelling long searches or sending prompts that take long to refuse.
            self.arrived(0.0)
            self.spent = self.spent or spent
            self.readiness.ended()
            self.readiness.failed(status)
            self.metrics.finished(self.tenant, self.strategy, status)
            if self.quota is not None:  # its slot back; what it did not generate of its reservation refunded
                self.quota.finish(*self.quota_use(status))
            if self.slot is not None:
                self.slot.release(self.charged_tokens(status))
            usage = self.response.usage if self.response is not None else self.spent
            if self.response is None and self.spent is not None:
                self.metrics.tenant_generated_tokens.labels(tenant=self.tenant).inc(self.spent.generated_tokens)
            if self.meter is not None and self.key is not None:
                safety = self.response.safety if self.response is not None else None
                self.meter.record(self.tenant, status, usage, safety.verdict if safety is not None else None)

    def charged_tokens(self, status: str) -> int | None:
        """What the request cost its tenant in the fair queue: the candidate tokens it generated, answered or
        failed (a search cut short inside an engine request has them only as generated tokens); nothing when
        the replica refused it before any engine work; unknown otherwise (cancelled: its worst case stays,
        and its replica meters what it generated)."""
        usage = self.response.usage if self.response is not None else self.spent
        if usage is not None:
            return usage.candidate_tokens or usage.generated_tokens
        return 0 if status in REFUSED_BEFORE_WORK else None

    def quota_use(self, status: str) -> tuple[int | None, bool]:
        """What the request used of its tenant's quotas: its candidate tokens (None: unknown, so its
        reservation stays spent: cancelled or failed after it reached a model replica), and whether its
        request unit comes back (refused before any engine work: bad input, over a quota, a full queue)."""
        if self.response is not None:
            return self.response.usage.candidate_tokens, False
        if self.spent is not None:  # failed after engine work: what it generated (metering's hook)
            return self.charged_tokens(status), False
        if self.slot is None or status in REFUSED_BEFORE_WORK or status == "overloaded":
            return 0, status != "cancelled"
        return None, False

    def quota_headers(self) -> dict[str, str]:
        """OpenAI's x-ratelimit-* for the tenant's limits (none without limits)."""
        if self.quota is not None:
            return self.quota.headers()
        return {} if self.quotas is None else self.quotas.headers_for(self.tenant)

    def safety_headers(self) -> dict[str, str]:
        """Which versions of the tenant's safety config and policy the request is served under (none: no
        header)."""
        version = self.context.version
        safety = {} if version is None else {"x-aligner-safety-version": str(version)}
        return {**safety, **self.policy.headers(), **self.quota_headers()}

    def headers(self) -> dict[str, str]:
        """Who served the answer, under which safety config, and the tokens it cost (a gateway in
        front bills the fan-out: every candidate's tokens and the judge's, not only the completion)."""
        billed = {} if self.response is None else {GENERATED_TOKENS_HEADER: str(self.response.usage.generated_tokens)}
        return {"x-aligner-replica": self.replica or "", **self.safety_headers(), **billed}
