"""`AlignerServer`: the model deployment. One replica = one vLLM engine + its reward catalog.

The replica only adapts the core to calls through a DeploymentHandle: requests
arrive as JSON-safe dicts, answers and errors leave as dicts (`{"response": …}`
or `{"error": …}`), so nothing depends on pickling exception classes.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from aligner.core import Aligner
from aligner.engine.vllm import Engine, on_cpu
from aligner.rewards import build_catalog
from aligner.safety.config import SafetyConfig
from aligner.contract import AlignRequest, AlignResponse, SafetyInfo
from serve.config import ServerConfig
from serve.errors import error_payload
from serve.deployments.metrics_hub import MetricsPusher
from serve.metrics import Metrics

log = logging.getLogger("aligner.serve")
READY_CACHE_S = 2.0


def node_rank() -> int:
    """This replica's rank among its deployment's replicas on the same node (0 outside Serve)."""
    from ray import serve
    from ray.serve.exceptions import RayServeException

    try:
        rank = serve.get_replica_context().rank
    except RayServeException:  # not inside a replica
        return 0
    return rank.local_rank if rank is not None else 0


class AlignerServer:
    async def __init__(self, config: dict[str, Any], hub: Any):
        self.config = ServerConfig.load(config)
        self.metrics = Metrics()
        log.info("model replica: preparing the model and starting the engine (tens of seconds on CPU)")
        self.engine = await asyncio.to_thread(
            Engine.start, self.config.engine, progress=log.info, share=(node_rank(), self.config.replicas_per_node())
        )
        self.catalog = build_catalog(
            self.config.rewards, tokenizer=self.engine.tokenizer, engine=self.engine, device="cpu" if on_cpu() else "cuda"
        )
        self.catalog.add_batch_observer(self._on_batch)
        # Reward models load and capture their CUDA graphs now, never inside a request.
        await asyncio.to_thread(self.catalog.warm_up)
        # And every objective scores once, the judges' prefills included: an engine's first forward
        # passes (its decoding threads start, kernels are set up) took 13 s on one core, longer than a
        # readiness probe waits, and no request or probe should pay for them.
        await self.catalog.probe()
        self.aligner = Aligner(self.engine, self.catalog)
        self.model_name = self.config.model_name or self.engine.model_name
        self._graph_replays = 0
        self._ready_at = 0.0
        self.pusher = MetricsPusher(hub, self.metrics, self.config.metrics_interval_s, "model", refresh=self._refresh)
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

    def info(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "max_model_len": self.engine.max_model_len,
            "objectives": self.catalog.describe(),
        }

    def engine_state(self) -> dict[str, Any]:
        """What this replica's engine holds now (tests and operators check cancellation and the CPU
        binding with it)."""
        self._refresh()
        return {
            "cores": list(self.engine.cores),
            "unfinished_requests": self.engine.unfinished_requests(),
            "running": int(self.metrics.engine_running._value.get()),
            "waiting": int(self.metrics.engine_waiting._value.get()),
        }

    async def ready(self) -> dict[str, Any]:
        """The engine answers and every objective scores a probe (cached for a moment)."""
        try:
            if time.monotonic() - self._ready_at > READY_CACHE_S:
                await self.engine.health()
                await self.catalog.probe()
                self._ready_at = time.monotonic()
            return {"ready": True, "model": self.model_name}
        except Exception as exc:
            self._ready_at = 0.0
            return {"ready": False, "error": error_payload(exc)}

    async def check_health(self) -> None:
        """Ray Serve's health check: a dead engine makes Serve replace this replica."""
        await self.engine.health()

    def _parse(self, data: dict[str, Any]) -> AlignRequest:
        return AlignRequest.parse(data, self.config.search_limits)

    @staticmethod
    def _config(safety: dict[str, Any] | None) -> SafetyConfig | None:
        return None if safety is None else SafetyConfig.model_validate(safety["config"])

    async def generate(self, data: dict[str, Any], safety: dict[str, Any] | None = None) -> dict[str, Any]:
        """`safety`: the tenant's active config as the ingress found it ({version, config, reveal}) or None."""
        try:
            response = await self.aligner.generate(self._parse(data), safety=self._config(safety))
            return {"response": self._served_under(response, safety), "replica": self.pusher.replica}
        except Exception as exc:
            return {"error": error_payload(exc)}

    async def stream(self, data: dict[str, Any], safety: dict[str, Any] | None = None) -> AsyncIterator[dict[str, Any]]:
        """`start` once accepted, then the core's `delta` / `chunk` / `done` events, or one `error` event."""
        try:
            events = self.aligner.stream(
                self._parse(data), safety=self._config(safety), announce_start=True
            )
        except Exception as exc:
            yield {"type": "error", "error": error_payload(exc)}
            return
        try:
            async for event in events:
                if event.kind == "start":
                    yield {"type": "start"}
                elif event.kind == "done":
                    yield {"type": "done", "response": self._served_under(event.response, safety)}
                else:
                    yield event.to_dict()
        except Exception as exc:
            yield {"type": "error", "error": error_payload(exc)}
        finally:
            await events.aclose()

    @staticmethod
    def _served_under(response: AlignResponse, safety: dict[str, Any] | None) -> dict[str, Any]:
        """The response as sent: the config version it was served under, and for a tenant key the
        config's text in `prompt` replaced by a placeholder (only admins may read a config)."""
        if safety is not None:
            response.safety = (response.safety or SafetyInfo()).model_copy(update={"version": safety["version"]})
            if response.prompt is not None and not safety["reveal"]:
                placeholder = f"[tenant safety config, version {safety['version']}]"
                text = safety["config"]["text"].strip()
                response.prompt = [
                    m.model_copy(update={"content": m.content.replace(text, placeholder)})
                    for m in response.prompt
                ]
        return response.model_dump(exclude_none=True)

    def __del__(self):
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()
