"""ServerConfig: everything `build_app` needs, one pydantic model, loadable from YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from aligner.contract import SearchLimits, parse_model
from aligner.engine.vllm import EngineConfig
from aligner.errors import ConfigError
from aligner.rewards import RewardsConfig
from aligner.safety.fit import DEFAULT_MIN_FREE_SHARE


class AutoscalingSpec(BaseModel):
    """Ray Serve autoscaling of the model deployment (replaces `num_replicas` when set)."""

    model_config = ConfigDict(extra="forbid")

    min_replicas: int = Field(1, ge=0, description="Fewest model replicas kept running.")
    max_replicas: int = Field(4, ge=1, description="Most model replicas.")
    target_ongoing_requests: float = Field(
        8.0, gt=0, description="Requests in flight per replica that autoscaling aims for."
    )

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} exceeds max_replicas {self.max_replicas}")
        return self


class ServerConfig(BaseModel):
    """The Aligner server: engine, rewards, limits, replicas, queues, tenant store and ports."""

    model_config = ConfigDict(extra="forbid")

    engine: EngineConfig = Field(default_factory=EngineConfig, description="The policy engine of every model replica.")
    rewards: RewardsConfig = Field(
        default_factory=RewardsConfig, description="Reward objectives served beside the engine."
    )
    search_limits: SearchLimits = Field(
        default_factory=SearchLimits, description="Server-side maximums of request parameters."
    )
    safety_min_free_context: float = Field(
        DEFAULT_MIN_FREE_SHARE,
        gt=0,
        lt=1,
        description="Share of the model's context (engine max_model_len) a tenant's safety config must leave to "
        "the conversation and the answer: a config whose composed operator section (measured with the policy "
        "model's tokenizer and template) leaves less is refused at PUT and activate (400 naming `text`); a "
        "stored one that leaves less makes its tenant's over-long requests fail with `invalid_config`.",
    )
    model_name: str | None = Field(
        None, description="Name clients use in `model` (OpenAI route); default: the model directory's name."
    )
    num_replicas: int = Field(
        1, ge=1, description="Model replicas (one engine + reward models each), without autoscaling."
    )
    autoscaling: AutoscalingSpec | None = Field(
        None, description="Autoscale the model replicas instead of a fixed count."
    )
    replica_num_cpus: float = Field(
        1.0,
        ge=0,
        description="CPUs Ray reserves for each model replica (a scheduling reservation: a CPU engine decodes on the "
        "cores set by engine.cpu_threads, whatever this says).",
    )
    replica_num_gpus: float = Field(
        0.0,
        ge=0,
        description="GPUs per model replica (1 on a GPU node). Engine and reward models share it: set "
        "engine.gpu_memory_utilization below 1 so the reward models fit beside the KV cache.",
    )
    replica_resources: dict[str, float] = Field(
        default_factory=dict,
        description='Custom Ray resources each model replica needs, e.g. {"aligner_model": 1} to place '
        "replicas only on nodes started with that resource (a GPU worker group).",
    )
    max_replicas_per_node: int | None = Field(
        None,
        ge=1,
        description="Most model replicas on one Ray node (1: spread replicas over nodes); null: no limit. CPU engines "
        "of replicas on one node split its cores: each takes 1/min(this, replica count) of them.",
    )
    max_ongoing_requests: int = Field(
        32, ge=1, description="Requests one model replica runs at once (they share the engine's continuous batching)."
    )
    max_queued_requests: int = Field(
        64,
        ge=1,
        description="Requests waiting for a model replica, per ingress replica; beyond it requests get 429 at once.",
    )
    retry_after_s: int = Field(1, ge=1, description="Retry-After seconds sent with 429 (queue full).")
    fair_scheduling: bool = Field(
        True,
        description="When the model replicas are saturated, serve the queued requests in weighted fair order "
        "across tenants (higher priority tier first, then the tenant with the fewest generated candidate tokens "
        "per unit of weight), each tenant in its own queue of tenant_queue_limit; false: one first-come, "
        "first-served queue of max_queued_requests shared by every tenant.",
    )
    fair_queue_slots: int | None = Field(
        None,
        ge=1,
        description="Requests one ingress replica sends to the model replicas at once; the others wait in its "
        "queues. Null: its share of the replicas' slots, num_replicas (autoscaling: max_replicas) x "
        "max_ongoing_requests / ingress_replicas, rounded up.",
    )
    fair_busy_sequences: int | None = Field(
        None,
        ge=1,
        description="With fair_scheduling: candidate sequences the requests in flight from one ingress replica may "
        "decode at once; a request that would pass it waits unless nothing else is in flight, except a tenant's "
        "arrival (nothing of it queued or in flight), which goes whenever a slot is free, so the rest of the engine's "
        "batch stays free for it (best_of_n counts n, beam its widest step, rejection its batch, a resample "
        "action max_resamples). Trades a lone tenant's throughput for a newcomer's latency. Null: no bound.",
    )
    tenant_queue_limit: int | None = Field(
        None,
        ge=1,
        description="Requests of one tenant waiting for a model replica, per ingress replica, with fair_scheduling; "
        "beyond it that tenant's requests get 429 (overloaded) while other tenants' are still queued. Null: "
        "max_queued_requests.",
    )
    ingress_replicas: int = Field(1, ge=1, description="HTTP ingress replicas (auth, validation, protocol conversion).")
    ingress_max_ongoing_requests: int = Field(
        1024, ge=1, description="Requests one ingress replica holds at once (mostly waiting on the model replicas)."
    )
    tenant_store: str | None = Field(
        None,
        description="Tenant store URL: sqlite:///PATH (one machine) or postgresql://… (replicas on several "
        "machines). Default: a SQLite file under the Aligner cache (~/.cache/aligner/tenants.db).",
    )
    auth_cache_s: float = Field(
        0.5,
        ge=0,
        le=1.0,
        description="How long a checked key is trusted before the store is asked again (≤ 1 s, "
        "so a revoked key is refused within a second everywhere).",
    )
    usage_flush_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="How often each ingress replica adds the usage it metered to the tenant store (one write per "
        "interval, not per request); a replica that dies unstopped loses at most this much usage.",
    )
    http_host: str = Field("127.0.0.1", description="Address the HTTP proxy listens on (0.0.0.0 in a cluster).")
    http_port: int = Field(
        8000, ge=1, le=65535, description="HTTP port (REST, OpenAI-compatible API, /metrics with an admin key)."
    )
    grpc_port: int = Field(
        9000, ge=1, le=65535, description="gRPC port (services aligner.v1.Aligner and aligner.v1.Admin, h2c)."
    )
    max_body_bytes: int = Field(1 << 20, ge=1024, description="Largest accepted request body; larger gets 413.")
    metrics_interval_s: float = Field(
        2.0,
        gt=0,
        le=60,
        description="How often each replica sends its metrics to the aggregator behind /metrics (so /metrics lags by "
        "at most this; scrapes come every 15-60 s, and each push costs CPU that the engine could use).",
    )
    readiness_interval_s: float = Field(
        5.0,
        gt=0,
        le=60,
        description="How often each ingress replica refreshes the readiness that /readyz and gRPC Health answer "
        "from: at most one probe of a model replica per interval, however many callers (none while requests "
        "show the replicas serve).",
    )
    max_health_watches: int = Field(
        16,
        ge=0,
        description="Concurrent gRPC Health.Watch streams per ingress replica (each holds an ingress slot while "
        "open); beyond it Watch fails with RESOURCE_EXHAUSTED.",
    )
    metrics_auth: Literal["admin", "none"] = Field(
        "admin",
        description="Who may read GET /metrics (it names every tenant and its traffic): `admin`, callers with an "
        "admin key (Authorization: Bearer <admin key>); `none`, anyone who can reach the HTTP port.",
    )
    app_name: str = Field("aligner", description="Ray Serve application name.")

    def fair_queue_capacity(self) -> int:
        """This ingress replica's share of the model replicas' request slots (`fair_queue_slots`)."""
        if self.fair_queue_slots is not None:
            return self.fair_queue_slots
        replicas = self.autoscaling.max_replicas if self.autoscaling is not None else self.num_replicas
        return max(1, -(-replicas * self.max_ongoing_requests // self.ingress_replicas))

    def expected_replicas(self) -> dict[str, int]:
        """The fewest replicas each deployment should have running (`aligner_replicas_expected`)."""
        model = self.autoscaling.min_replicas if self.autoscaling is not None else self.num_replicas
        return {"model": model, "ingress": self.ingress_replicas}

    def replicas_per_node(self) -> int:
        """The most model replicas one node can hold (their CPU engines split its cores between them)."""
        most = self.autoscaling.max_replicas if self.autoscaling is not None else self.num_replicas
        return min(most, self.max_replicas_per_node or most)

    @classmethod
    def load(cls, data: Any) -> ServerConfig:
        """From a ServerConfig, a dict (KubeRay's serveConfigV2 `args`) or a YAML file path."""
        if isinstance(data, ServerConfig):
            return data
        if isinstance(data, (str, Path)):
            data = read_yaml(Path(data))
        try:
            return parse_model(cls, data or {})
        except Exception as exc:  # InvalidRequest from parse_model: a config error here
            raise ConfigError(f"server config: {getattr(exc, 'message', exc)}") from None


def read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of ServerConfig fields")
    return data or {}
