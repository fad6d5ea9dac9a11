"""The transport-neutral core of the ingress: what HTTP routes and gRPC methods both do.

Admit (API key, the tenant's safety config in force), parse the request once, call a model replica
with typed objects (serve/gateway/messages.py), relay its stream, and keep each request's metrics in
a `Call`. The transports (serve/ingress/) only convert their wire formats to and from these calls,
and map errors to their statuses in one place each; nothing here knows HTTP or gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator

from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from aligner.contract import AlignRequest, AlignResponse
from aligner.errors import AlignerError, EngineUnavailable, ErrorInfo, Overloaded, Reported, error_code
from aligner.events import Chunk, Delta, Done
from aligner.safety.config import SafetyConfig
from aligner.tenants import ApiKey, TenantStore, parse_request
from aligner.tenants.policy_apply import effective_limits
from serve.config import ServerConfig
from serve.deployments.metrics_hub import MetricsPusher
from serve.errors import PayloadTooLarge
from serve.gateway.admin import AdminService
from serve.gateway.answer_headers import with_answer_headers
from serve.gateway.auth import ActiveSafetyConfigs, Authenticator
from serve.gateway.call import Call
from serve.gateway.fair_queue import FairQueue, FairShare, request_cost, request_sequences
from serve.gateway.messages import (
    Accepted,
    ModelInfo,
    ObjectiveInfo,
    Readiness,
    ReplicaResult,
    StreamItem,
)
from serve.gateway.metering import UsageMeter
from serve.gateway.policies import ActivePolicies
from serve.gateway.quotas import QuotaLeaser, keeper_exchange, limits_of
from serve.gateway.readiness import ReadinessCache, ReadinessRecord
from serve.gateway.reservations import over_the_limit, reserved_tokens
from serve.metrics import Metrics

log = logging.getLogger("aligner.serve")

# What a relayed stream yields to a transport: text as it comes, then Done, or an ErrorInfo instead.
Relayed = Delta | Chunk | Done | ErrorInfo
# How long an admin's config write waits for a model replica to measure the config while tenants hold them.
ADMIN_MODEL_WAIT_S = 30.0


class Gateway:
    """One per ingress replica, over the handles of the model and metrics deployments."""

    def __init__(
        self,
        config: ServerConfig,
        model: DeploymentHandle,
        hub: DeploymentHandle,
        store: TenantStore,
        keeper: DeploymentHandle | None = None,
    ):
        self.config = config
        self.model = model
        self.hub = hub
        self.auth = Authenticator(store, config.auth_cache_s)
        self.safety = ActiveSafetyConfigs(store, config.auth_cache_s)
        self.policies = ActivePolicies(store, config.auth_cache_s)
        self.admin = AdminService(store, self.objectives, config.search_limits, self.config_fits)
        self.metrics = Metrics()
        self.readiness = ReadinessRecord()
        # /readyz and gRPC Health answer from this, refreshed by one probe per interval at most.
        self.health = ReadinessCache(self._probe, self.readiness, config.readiness_interval_s, model=self._model_name)
        self.health.start()
        self.pusher = MetricsPusher(
            hub, self.metrics, config.metrics_interval_s, "ingress", refresh=self.metrics.forget_idle_tenants
        )
        self.meter = UsageMeter(store, config.usage_flush_s)  # per-tenant usage, batched into the store
        self.meter.start()
        # Each tenant's quotas over every replica, leased from the keeper in batches (serve/gateway/quotas.py).
        self.quotas = None if keeper is None else QuotaLeaser(keeper_exchange(keeper), self.metrics)
        if self.quotas is not None:
            self.quotas.start()
        # This ingress's share of the replicas' slots, handed out in fair order (serve/gateway/fair_queue.py).
        self.queue = FairQueue(
            config.fair_queue_capacity(),
            fair=config.fair_scheduling,
            queue_limit=(config.tenant_queue_limit or config.max_queued_requests)
            if config.fair_scheduling
            else config.max_queued_requests,
            retry_after_s=config.retry_after_s,
            busy_sequences=config.fair_busy_sequences,
        )
        self._info: ModelInfo | None = None
        # The first call through the model handle starts its router, which then learns the replicas.
        # Made now: otherwise the first burst of clients all queue while it learns, and overflow
        # max_queued_requests (429) on a server that has free replicas.
        self._priming = asyncio.get_running_loop().create_task(self._prime_model_handle())

    async def _prime_model_handle(self) -> None:
        try:
            await self.info()
        except Exception as exc:  # the first request tries again and reports whatever is wrong
            log.warning("ingress: the model replicas did not answer at start (%s); requests will retry", exc)

    # -- admission ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def call(self) -> AsyncIterator[Call]:
        """A generation request's `Call`: a request that fails or is cancelled here is counted under
        its error code (or `cancelled`), and the error goes on to the transport's one handler."""
        call = Call(self.metrics, self.readiness, self.meter)
        try:
            yield call
        except asyncio.CancelledError:  # the client went away: Serve cancels us and the replica's search
            call.finish("cancelled")
            raise
        except Exception as exc:  # a replica's error carries what its search had cost (metered)
            call.finish(error_code(exc), exc.info.usage if isinstance(exc, Reported) else None)
            with_answer_headers(exc, call.safety_headers())  # after finish: what is left once it is refunded
            raise

    async def admit(self, call: Call, authorization: str | None) -> None:
        """Authenticate a generation request and fix the safety config and the policy it is served under."""
        key = await self.auth.authenticate(authorization)
        call.tenant, call.key = key.tenant, key
        # One version per request: the one active now, whatever changes while it runs.
        call.context = await self.safety.for_request(key)
        call.policy = await self.policies.for_request(key)
        if self.quotas is not None and call.policy.applies:  # 429 rate_limited over one of its quotas
            call.quotas = self.quotas
            call.quota = await self.quotas.admit(key.tenant, limits_of(call.policy.policy))
        call.context = dataclasses.replace(call.context, priority=call.policy.policy.priority)
        self.metrics.safety_config_served(key.tenant, call.context.version)

    async def authenticate(self, authorization: str | None) -> ApiKey:
        return await self.auth.authenticate(authorization)

    async def check_admin(self, authorization: str | None) -> ApiKey:
        return await self.auth.admin(authorization)

    def check_size(self, size: int, what: str) -> None:
        """The request-size limit, before anything is parsed (HTTP bodies, gRPC messages)."""
        limit = self.config.max_body_bytes
        if size > limit:
            raise PayloadTooLarge(f"{what}: {size} bytes exceeds the limit of {limit} bytes")

    def parse(self, call: Call, data: object) -> AlignRequest:
        """The request, validated once under the tenant's policy (its defaults, caps, allowed strategies and
        objectives): the replica receives this object and does not check it again."""
        policy = call.policy.policy if call.policy.applies else None
        request = parse_request(data, self.config.search_limits, policy)
        call.strategy = request.search.strategy
        if call.key is not None:  # the replica meters a cancelled search itself, and prices under the caps
            limits = None if policy is None else effective_limits(self.config.search_limits, policy)
            call.context = dataclasses.replace(call.context, tenant=call.tenant, limits=limits)
        return request

    # -- the model replica --------------------------------------------------------------------

    async def reserve(self, call: Call, request: AlignRequest) -> None:
        """Reserve the request's worst case of candidate tokens from its tenant's allowance (429 when it
        cannot be now; 400 when its search alone is above the whole per-minute limit); refunded as it ends."""
        limit = call.policy.policy.candidate_tokens_per_minute
        if self.quotas is None or not call.policy.applies or limit is None:
            return
        too_large = over_the_limit(request, call.tenant, limit)
        if too_large is not None:
            raise too_large
        if call.quota is not None:  # None: the keeper is unreachable, the request is admitted uncounted
            await call.quota.reserve(min(limit, reserved_tokens(request, call.context.config)))

    async def dispatch(self, call: Call, request: AlignRequest) -> None:
        """Reserve its tokens, then wait for a slot on the model replicas in the tenant's fair order
        (Overloaded when the tenant's queue is full); the call gives it back when it finishes."""
        await self.reserve(call, request)
        policy = call.policy.policy
        share = FairShare(call.tenant, weight=policy.weight, tier=policy.priority)
        asked, arrival = time.monotonic(), not self.queue.active(call.tenant)
        try:
            call.slot = await self.queue.acquire(
                share, request_cost(request), request_sequences(request, call.context.config)
            )
        except asyncio.CancelledError:  # an arrival given up while it waited: it waited that long, unserved
            if arrival:
                self.metrics.arrival_wait.observe(time.monotonic() - asked)
            raise
        if call.slot.arrival:
            call.arrival_wait = time.monotonic() - asked

    async def generate(self, call: Call, request: AlignRequest) -> AlignResponse:
        """The replica's response (its id in `call.replica`); its error is raised."""
        await self.dispatch(call, request)
        sent = time.monotonic()
        try:
            result: ReplicaResult = await self.model.generate.remote(request, call.context)
        except (BackPressureError, RayActorError) as exc:
            raise self.replica_failure(exc) from None
        call.replica = result.replica
        call.arrived(time.monotonic() - sent - result.service_s)
        response = result.unwrap()
        call.ok(response)
        return response

    async def open_stream(self, call: Call, request: AlignRequest) -> DeploymentResponseGenerator:
        """The replica's stream once it has accepted the request (errors raise before any byte is sent)."""
        await self.dispatch(call, request)
        sent = time.monotonic()
        stream = self.model.options(stream=True).stream.remote(request, call.context)
        try:
            first: StreamItem = await stream.__anext__()
        except (BackPressureError, RayActorError) as exc:
            raise self.replica_failure(exc) from None
        except asyncio.CancelledError:
            stream.cancel()
            raise
        if isinstance(first, ErrorInfo):
            raise first.error()
        assert isinstance(first, Accepted), first
        call.arrived(time.monotonic() - sent - first.service_s)
        call.replica = first.replica
        return stream

    async def config_fits(self, config: SafetyConfig) -> ErrorInfo | None:
        """A model replica's measure of a safety config (the admin service's, before it stores one). Tenants
        may hold every replica's slots: an admin's write waits for one, up to `ADMIN_MODEL_WAIT_S`, rather
        than failing with the tenants' 429 (found under load: concurrent PUTs got it)."""
        delay, deadline = 0.05, time.monotonic() + ADMIN_MODEL_WAIT_S
        while True:
            try:
                left = max(0.1, deadline - time.monotonic())
                answer: ErrorInfo | None = await asyncio.wait_for(self.model.check_safety_config.remote(config), left)
                return answer
            except TimeoutError:  # a replica that took it and hangs: the write is not stored
                raise EngineUnavailable(
                    f"no model replica measured the safety config within {ADMIN_MODEL_WAIT_S:g} s; retry shortly"
                ) from None
            except BackPressureError as exc:
                if time.monotonic() + delay > deadline:
                    raise self.replica_failure(exc) from None
            except RayActorError as exc:
                raise self.replica_failure(exc) from None
            await asyncio.sleep(delay)
            delay = min(2 * delay, 1.0)

    def replica_failure(self, exc: BaseException) -> AlignerError:
        """What a failed call to the model deployment means for the client: a full queue (429) or a
        replica that died with its engine (503; Ray Serve replaces it)."""
        if isinstance(exc, BackPressureError):
            queued = self.config.max_queued_requests
            return Overloaded(
                f"the server is at capacity ({queued} requests queued per ingress); retry later",
                retry_after_s=self.config.retry_after_s,
            )
        return EngineUnavailable("the model replica serving this request died; it is being replaced, retry shortly")

    async def _items(self, stream: DeploymentResponseGenerator) -> AsyncIterator[StreamItem]:
        """The replica's items; a replica that dies mid-stream ends them with an error."""
        try:
            async for item in stream:
                yield item
        except RayActorError as exc:
            yield ErrorInfo.of(self.replica_failure(exc))

    def relay(self, call: Call, stream: DeploymentResponseGenerator) -> AsyncGenerator[Relayed, None]:
        """The replica's events, with the call's metrics kept; closing the relay before the end (the
        client went away) cancels the replica's search."""
        relayed = self._relay(call, stream)
        # A relay its transport never starts (the client went away before the first byte) runs no
        # `finally`: when it is dropped, the search is cancelled and the call's slot given back all the same.
        weakref.finalize(relayed, self._abandoned, call, stream)
        return relayed

    @staticmethod
    def _abandoned(call: Call, stream: DeploymentResponseGenerator) -> None:
        if not call.done:
            stream.cancel()
            call.finish("cancelled")

    async def _relay(self, call: Call, stream: DeploymentResponseGenerator) -> AsyncGenerator[Relayed, None]:
        first_text = True
        try:
            async for item in self._items(stream):
                if isinstance(item, (Delta, Chunk)) and first_text:
                    first_text = False
                    self.metrics.first_chunk.labels(strategy=call.strategy).observe(time.monotonic() - call.started)
                elif isinstance(item, Done):
                    call.ok(item.response)
                elif isinstance(item, ErrorInfo):
                    call.finish(item.code, item.usage)
                elif isinstance(item, Accepted):  # only ever the first item, which open_stream took
                    continue
                yield item
        finally:
            if not call.done:
                stream.cancel()
                call.finish("cancelled")

    # -- discovery, health, metrics ---------------------------------------------------------------

    async def info(self) -> ModelInfo:
        if self._info is None:
            self._info = await self.model.info.remote()
        return self._info

    async def objectives(self) -> list[ObjectiveInfo]:
        return (await self.info()).objectives

    async def ready(self) -> Readiness:
        """Whether a model replica serves, from this ingress's cached readiness: no replica call per
        caller (serve/gateway/readiness.py says when it probes and what a late answer means)."""
        return await self.health.get()

    async def _probe(self) -> Readiness:
        """One readiness probe: a model replica's engine answers and its objectives score a probe."""
        self.metrics.readiness_probes.inc()
        answer: Readiness = await self.model.ready.remote()
        return answer

    def _model_name(self) -> str | None:
        return self._info.model if self._info is not None else None

    async def metrics_text(self, authorization: str | None) -> bytes:
        """Prometheus text format: every replica's metrics, merged (see serve/metrics.py). They name every
        tenant and its traffic: only an admin key reads them, unless `metrics_auth` is `none`."""
        if self.config.metrics_auth == "admin":
            await self.auth.admin(authorization)
        return await self.hub.render.remote()

    # -- shutdown -----------------------------------------------------------------------------------

    async def close(self) -> None:
        """The replica is stopping (Ingress.__del__): write the usage counted since the last flush."""
        await self.meter.close()
        if self.quotas is not None:
            await self.quotas.close()
