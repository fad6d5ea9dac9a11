"""`AlignerServer`: the model deployment. One replica = one vLLM engine + its reward catalog.

The replica only adapts the core to calls through a DeploymentHandle, with typed objects both ways
(serve/gateway/messages.py): the `AlignRequest` the ingress parsed and the `TenantContext` it admitted
it under come in; a `ReplicaResult`, or a stream of `Accepted`, the core's events and `ErrorInfo`,
goes out. Nothing depends on pickling exception classes, and nothing is validated twice.

Ray Serve constructs it with `AlignerServer(config, hub)`: it starts its own engine and catalog.
Tests construct it without Ray: `AlignerServer.sync_init(config, aligner=...)` over an `Aligner` they
already have, then `await server.start()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.serve.exceptions import RayServeException
from ray.serve.handle import DeploymentHandle

from aligner.contract import AlignRequest
from aligner.core import Aligner, Search
from aligner.engine.base import engine_priority
from aligner.engine.vllm import Engine, on_cpu
from aligner.errors import ErrorInfo, InvalidRequest
from aligner.events import Done
from aligner.rewards import build_catalog
from aligner.safety.config import SafetyConfig
from aligner.safety.fit import check_config_fits
from aligner.tenants import TenantStore, default_store_url
from serve.config import ServerConfig
from serve.deployments.metrics_hub import MetricsPusher
from serve.gateway.messages import (
    NO_SAFETY_CONFIG,
    Accepted,
    ModelInfo,
    ObjectiveInfo,
    Readiness,
    ReplicaResult,
    StreamItem,
    TenantContext,
)
from serve.gateway.metering import UsageMeter
from serve.metrics import Metrics

log = logging.getLogger("aligner.serve")
READY_CACHE_S = 2.0


def node_rank() -> int:
    """This replica's rank among its deployment's replicas on the same node (0 outside Serve)."""
    try:
        rank = serve.get_replica_context().rank
    except RayServeException:  # not inside a replica
        return 0
    return rank.local_rank if rank is not None else 0


async def start_aligner(config: ServerConfig) -> Aligner:
    """This replica's engine and objective catalog, warmed up: no request or probe pays for a first run."""
    log.info("model replica: preparing the model and starting the engine (tens of seconds on CPU)")
    engine = await asyncio.to_thread(
        Engine.start, config.engine, progress=log.info, share=(node_rank(), config.replicas_per_node())
    )
    catalog = build_catalog(
        config.rewards, tokenizer=engine.tokenizer, engine=engine, device="cpu" if on_cpu() else "cuda"
    )
    # Reward models load and capture their CUDA graphs now, never inside a request.
    await asyncio.to_thread(catalog.warm_up)
    # And every objective scores once, the judges' prefills included: an engine's first forward
    # passes (its decoding threads start, kernels are set up) took 13 s on one core, longer than a
    # readiness probe waits, and no request or probe should pay for them.
    await catalog.probe()
    return Aligner(engine, catalog, limits=config.search_limits, safety_min_free_context=config.safety_min_free_context)


class AlignerServer:
    # Ray Serve awaits an async constructor; type checkers do not know constructors can be.
    async def __init__(self, config: dict[str, Any] | ServerConfig, hub: DeploymentHandle | None = None):  # type: ignore[misc]
        server_config = ServerConfig.load(config)
        store = TenantStore.open(server_config.tenant_store or default_store_url())
        self._init(server_config, await start_aligner(server_config), store=store)
        await self.start(hub)

    @classmethod
    def sync_init(
        cls, config: dict[str, Any] | ServerConfig, *, aligner: Aligner, store: TenantStore | None = None
    ) -> AlignerServer:
        """A replica over an `aligner` that is already running (its engine is not this replica's to stop);
        with a `store`, it meters what cancelled searches generated into it."""
        server = cls.__new__(cls)
        server._init(ServerConfig.load(config), aligner, owns_engine=False, store=store)
        return server

    def _init(
        self, config: ServerConfig, aligner: Aligner, *, owns_engine: bool = True, store: TenantStore | None = None
    ) -> None:
        self.config = config
        self.aligner = aligner
        self.engine, self.catalog = aligner.engine, aligner.catalog
        self._owns_engine = owns_engine
        self.metrics = Metrics()
        self.model_name = config.model_name or self.engine.model_name
        self.replica = uuid.uuid4().hex
        self._graph_replays = 0
        self._ready_at = 0.0
        self.pusher: MetricsPusher | None = None
        # What cancelled searches generated, per tenant: their ingress counts the request but never hears
        # from the search again (serve/gateway/metering.py). Batched into the store like the ingress's.
        self.usage = None if store is None else UsageMeter(store, config.usage_flush_s)

    async def start(self, hub: DeploymentHandle | None = None) -> None:
        """Observe the catalog's batches, and send this replica's metrics to `hub` (none: keep them here)."""
        self.catalog.add_batch_observer(self._on_batch)
        if self.usage is not None:
            self.usage.start()
        if hub is not None:
            self.pusher = MetricsPusher(
                hub, self.metrics, self.config.metrics_interval_s, "model", refresh=self._refresh, replica=self.replica
            )
        log.info("model replica ready: %s with objectives %s", self.model_name, ", ".join(self.catalog.names))

    def _on_batch(self, model: str, requests: int, sequences: int, seconds: float) -> None:
        self.metrics.reward_batch_size.observe(sequences)
        self.metrics.reward_scoring.observe(seconds)

    def _refresh(self) -> None:
        # The scheduler's last report can predate an abort; with no request left it is 0 for sure.
        busy = self.engine.unfinished_requests() > 0
        self.metrics.engine_running.set(self.engine.scheduler.running if busy else 0)
        self.metrics.engine_waiting.set(self.engine.scheduler.waiting if busy else 0)
        replays = int(self.catalog.scorer_stats().get("graph_replays", 0))
        self.metrics.graph_replays.inc(replays - self._graph_replays)
        self._graph_replays = replays

    async def check_safety_config(self, config: SafetyConfig) -> ErrorInfo | None:
        """Whether a tenant's safety config fits this model (the admin service asks before it stores or
        activates one): None, or the `InvalidRequest` naming `text`, as data."""
        try:
            await asyncio.to_thread(check_config_fits, self.aligner, config)  # tokenizing 20,000 characters
        except InvalidRequest as exc:
            return ErrorInfo.of(exc)
        return None

    def info(self) -> ModelInfo:
        objectives = [ObjectiveInfo(**o) for o in self.catalog.describe()]
        return ModelInfo(model=self.model_name, max_model_len=self.engine.max_model_len, objectives=objectives)

    def engine_state(self) -> dict[str, int | list[int]]:
        """What this replica's engine holds now (tests and operators check cancellation and the CPU
        binding with it)."""
        self._refresh()
        return {
            "cores": list(self.engine.cores),
            "unfinished_requests": self.engine.unfinished_requests(),
            "running": int(self.metrics.engine_running._value.get()),
            "waiting": int(self.metrics.engine_waiting._value.get()),
        }

    async def ready(self) -> Readiness:
        """The engine answers and every objective scores a probe (cached for a moment)."""
        try:
            if time.monotonic() - self._ready_at > READY_CACHE_S:
                await self.engine.health()
                await self.catalog.probe()
                self._ready_at = time.monotonic()
            return Readiness(ready=True, model=self.model_name)
        except Exception as exc:
            self._ready_at = 0.0
            return Readiness(ready=False, error=ErrorInfo.of(exc))

    async def check_health(self) -> None:
        """Ray Serve's health check: a dead engine makes Serve replace this replica."""
        await self.engine.health()

    async def _start(self, request: AlignRequest, tenant: TenantContext) -> Search:
        """The core's phase 1 under the tenant's config and caps; a caller who may not read the config sees
        a placeholder."""
        return await self.aligner.start(
            request,
            safety=tenant.config,
            safety_version=tenant.version,
            reveal_safety=tenant.reveal,
            limits=tenant.limits,
            tenant=tenant.tenant,  # whose operator marker (aligner/prompting_guard.py)
        )

    def _cancelled(self, tenant: TenantContext, search: Search | None) -> None:
        """Meter what a cancelled search generated (its ingress counts the request, not the tokens)."""
        spent = None if search is None else search.spent()
        if self.usage is not None and tenant.tenant is not None and spent is not None and spent.engine_requests:
            self.usage.record(tenant.tenant, "cancelled", spent, requests=0)

    async def generate(self, request: AlignRequest, tenant: TenantContext = NO_SAFETY_CONFIG) -> ReplicaResult:
        began = time.monotonic()
        search: Search | None = None
        try:
            with engine_priority(tenant.priority):  # the tenant's tier, for every engine request of the search
                search = await self._start(request, tenant)
                response = await search.result()
        except asyncio.CancelledError:  # the client went away: its ingress will never see what it cost
            self._cancelled(tenant, search)
            raise
        except Exception as exc:  # what the search had generated before it failed travels with the error
            spent = None if search is None else search.spent()
            return ReplicaResult(self.replica, error=ErrorInfo.of(exc, spent), service_s=time.monotonic() - began)
        return ReplicaResult(self.replica, response=response, service_s=time.monotonic() - began)

    async def stream(
        self, request: AlignRequest, tenant: TenantContext = NO_SAFETY_CONFIG
    ) -> AsyncIterator[StreamItem]:
        """`Accepted` once phase 1 passed (before it, an error is the only item), then the core's
        `Delta` / `Chunk` events and `Done`, or an `ErrorInfo`. Closing the stream cancels the search."""
        began = time.monotonic()
        try:
            search = await self._start(request, tenant)
        except Exception as exc:
            yield ErrorInfo.of(exc)
            return
        yield Accepted(self.replica, service_s=time.monotonic() - began)
        ended = False  # the ingress was sent the end (Done or an error), with what the search cost
        try:
            # The search's task starts inside the block and keeps the tenant's tier for its engine requests.
            with engine_priority(tenant.priority):
                async with contextlib.aclosing(search.events()) as events:
                    async for event in events:
                        ended = isinstance(event, Done)
                        yield event
        except Exception as exc:
            ended = True
            yield ErrorInfo.of(exc, search.spent())
        finally:
            # Closed before its end (cancelled, or the ingress went away): the search is stopped by now
            # (aclosing), so what it generated is all counted.
            if not ended:
                self._cancelled(tenant, search)

    async def __del__(self) -> None:
        """Ray Serve awaits this when it stops the replica: the usage metered since the last flush is
        written, then the engine stops."""
        usage = getattr(self, "usage", None)
        if usage is not None:
            await usage.close()
        engine = getattr(self, "engine", None)
        if engine is not None and getattr(self, "_owns_engine", False):
            engine.shutdown()
