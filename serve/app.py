"""`build_app(config) -> Application`: the one builder, used by `aligner serve` and KubeRay.

KubeRay's serveConfigV2 imports `serve.app:build_app` and passes the
ServerConfig fields as `args` (a dict); Ray Serve calls builders that way.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from ray import serve
from ray.serve import Application

from aligner.prompting_guard import OPERATOR_SECRET_ENV
from serve.config import ServerConfig
from serve.deployments.aligner_server import AlignerServer
from serve.deployments.metrics_hub import MetricsHub
from serve.deployments.quota_keeper import QuotaKeeper
from serve.ingress.grpc_methods import SERVICER_FUNCTIONS
from serve.ingress.ingress import Ingress


def proxy_options(config: ServerConfig) -> dict[str, Any]:
    """`serve.start` options for the app's HTTP and gRPC proxies (they apply to the first start only)."""
    return {
        "http_options": {"host": config.http_host, "port": config.http_port},
        "grpc_options": {"port": config.grpc_port, "grpc_servicer_functions": SERVICER_FUNCTIONS},
    }


def shared_operator_secret() -> dict[str, Any]:
    """Without $ALIGNER_OPERATOR_SECRET, one random secret for every model replica of this build (their
    runtime environment): each replica drawing its own would give one tenant's request a different
    operator marker, so a different prompt and answer, on each replica. Set, the environment's holds."""
    if os.environ.get(OPERATOR_SECRET_ENV, "").strip():
        return {}
    return {"runtime_env": {"env_vars": {OPERATOR_SECRET_ENV: secrets.token_urlsafe(48)}}}


def build_app(config: ServerConfig | dict[str, Any] | None = None) -> Application:
    config = ServerConfig.load(config or {})
    plain = config.model_dump(mode="json")
    hub = serve.deployment(MetricsHub, name="MetricsHub", num_replicas=1, ray_actor_options={"num_cpus": 0}).bind(
        max(10.0, 10 * config.metrics_interval_s), config.expected_replicas()
    )
    scaling: dict[str, Any] = (
        {"autoscaling_config": config.autoscaling.model_dump()}
        if config.autoscaling is not None
        else {"num_replicas": config.num_replicas}
    )
    model = serve.deployment(
        AlignerServer,
        name="AlignerServer",
        max_ongoing_requests=config.max_ongoing_requests,
        max_queued_requests=config.max_queued_requests,
        ray_actor_options={
            "num_cpus": config.replica_num_cpus,
            "num_gpus": config.replica_num_gpus,
            "resources": config.replica_resources,
            **shared_operator_secret(),
        },
        max_replicas_per_node=config.max_replicas_per_node,
        # Serve replaces a replica after 3 failed checks in a row; until then its router still sends it
        # requests, which fail with engine_unavailable if its engine died. Every 2 s, not Ray's 10 s, keeps
        # that window near 6 s; a check only asks vLLM whether its engine core is alive.
        health_check_period_s=2,
        health_check_timeout_s=60,
        graceful_shutdown_timeout_s=30,
        **scaling,
    ).bind(plain, hub)
    ingress = serve.deployment(
        Ingress,
        name="Ingress",
        num_replicas=config.ingress_replicas,
        max_ongoing_requests=config.ingress_max_ongoing_requests,
        ray_actor_options={"num_cpus": 0},
    )
    # One replica by design: it holds every tenant's buckets and slots for the cluster (docs/tenancy.md, Quotas).
    keeper = serve.deployment(
        QuotaKeeper, name="QuotaKeeper", num_replicas=1, max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0}
    ).bind()
    return ingress.bind(plain, model, hub, keeper)
