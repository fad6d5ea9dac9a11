"""The Helm chart's values schema (helm/aligner/values.schema.json), generated from the code.

The chart's own values are described here; its `server` value is the app's ServerConfig, so that
part of the schema is pydantic's schema of ServerConfig itself — a field added to the server is
accepted by the chart the moment the schema is regenerated, and a test fails while it is stale.
The fields the chart sets itself (host, ports, app name, tenant store) are left out, so setting
them under `server` is an error rather than silently ignored.

Regenerate with `python -m serve.chart`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import AliasChoices

from aligner.rewards.catalog import RewardsConfig
from serve.config import ServerConfig

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "helm" / "aligner" / "values.schema.json"
CHART_OWNED = ("http_host", "http_port", "grpc_port", "app_name", "tenant_store")


def _obj(properties: dict[str, Any], required: tuple[str, ...] = (), description: str | None = None) -> dict:
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        schema["required"] = list(required)
    if description:
        schema["description"] = description
    return schema


def _str(description: str, **extra: Any) -> dict:
    return {"type": "string", "description": description, **extra}


def _int(description: str, minimum: int = 0, **extra: Any) -> dict:
    return {"type": "integer", "minimum": minimum, "description": description, **extra}


QUANTITY = {
    "anyOf": [
        {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"},
        {"type": "number", "minimum": 0},
    ]
}
RESOURCES = _obj(
    {
        "requests": {"type": "object", "additionalProperties": QUANTITY, "description": "Resource requests."},
        "limits": {"type": "object", "additionalProperties": QUANTITY, "description": "Resource limits."},
    },
    description="Kubernetes resources of the container (nvidia.com/gpu is added from `gpus`).",
)
NODE_SELECTOR = {"type": "object", "additionalProperties": {"type": "string"}, "description": "Node labels to match."}
TOLERATIONS = {"type": "array", "items": {"type": "object"}, "description": "Pod tolerations (Kubernetes form)."}
LABELS = {"type": "object", "additionalProperties": {"type": "string"}, "description": "Extra labels."}

WORKER = _obj(
    {
        "name": _str("Worker group name.", pattern="^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$"),
        "type": {"enum": ["cpu", "gpu"], "description": "cpu: no GPU; gpu: every pod gets `gpus` nvidia.com/gpu."},
        "replicas": _int("Worker pods at start."),
        "minReplicas": _int("Fewest worker pods (autoscaler)."),
        "maxReplicas": _int("Most worker pods (autoscaler).", 1),
        "gpus": _int("GPUs per worker pod (Ray's num-gpus and the nvidia.com/gpu request)."),
        "rayCpus": _int("CPUs Ray schedules on a worker pod."),
        "rayResources": {
            "type": "object",
            "additionalProperties": {"type": "number", "minimum": 0},
            "description": "Custom Ray resources of a worker pod (model replicas ask for them).",
        },
        "shmSize": {**QUANTITY, "description": "Size of /dev/shm (Ray's object store, vLLM's processes)."},
        "resources": RESOURCES,
        "nodeSelector": NODE_SELECTOR,
        "tolerations": TOLERATIONS,
    },
    required=(
        "name",
        "type",
        "replicas",
        "minReplicas",
        "maxReplicas",
        "gpus",
        "rayCpus",
        "rayResources",
        "shmSize",
        "resources",
    ),
)
# A GPU group without a GPU, or a CPU group asking for one, is a mistake worth refusing.
WORKER["allOf"] = [
    {"if": {"properties": {"type": {"const": "gpu"}}}, "then": {"properties": {"gpus": {"minimum": 1}}}},
    {"if": {"properties": {"type": {"const": "cpu"}}}, "then": {"properties": {"gpus": {"const": 0}}}},
]


def server_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """(ServerConfig's schema without the chart-owned fields, its $defs)."""
    schema = ServerConfig.model_json_schema()
    defs = schema.pop("$defs", {})
    _add_old_names(defs)
    for name in CHART_OWNED:
        schema["properties"].pop(name)
    owned = ", ".join(CHART_OWNED)
    schema["description"] = (
        f"The app's ServerConfig (aligner.yaml fields, docs/configuration.md); the chart sets {owned}."
    )
    return schema, defs


def _add_old_names(defs: dict[str, Any]) -> None:
    """A renamed field's old names (its AliasChoices after the first), which the app still reads: values
    written for an older chart stay valid."""
    for model in (RewardsConfig,):
        properties = defs[model.__name__]["properties"]
        for name, field in model.model_fields.items():
            if isinstance(field.validation_alias, AliasChoices):
                for old in field.validation_alias.choices[1:]:
                    properties[str(old)] = {
                        **properties[name],
                        "deprecated": True,
                        "description": f"Old name of `{name}`.",
                    }


def values_schema() -> dict[str, Any]:
    server, defs = server_schema()
    schema = _obj(
        {
            "nameOverride": _str("Chart name override."),
            "fullnameOverride": _str("Full resource name override."),
            "image": _obj(
                {
                    "repository": _str("Image repository.", minLength=1),
                    "flavor": {
                        "enum": ["cpu", "gpu"],
                        "description": "Which Dockerfile built the image; the default tag is <appVersion>-<flavor>.",
                    },
                    "tag": _str("Image tag (default <appVersion>-<flavor>)."),
                    "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"], "description": "Image pull policy."},
                },
                required=("repository", "flavor", "pullPolicy"),
            ),
            "imagePullSecrets": {
                "type": "array",
                "items": _obj({"name": _str("Secret name.")}, ("name",)),
                "description": "Image pull secrets.",
            },
            "rayVersion": _str("Ray version in the image.", pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$"),
            "ports": _obj(
                {
                    "http": _int("HTTP port of the Serve proxies.", 1, maximum=65535),
                    "grpc": _int("gRPC (h2c) port of the Serve proxies.", 1, maximum=65535),
                },
                ("http", "grpc"),
            ),
            "service": _obj(
                {
                    "type": {
                        "enum": ["ClusterIP", "NodePort", "LoadBalancer"],
                        "description": "Type of the serve Service.",
                    }
                },
                ("type",),
            ),
            "logLevel": {"enum": ["DEBUG", "INFO", "WARNING", "ERROR"], "description": "Ray Serve log level."},
            "server": server,
            "tenantStore": _obj(
                {
                    "url": _str(
                        "PostgreSQL URL of the tenant store, without the password.",
                        pattern=r"^(postgresql(\+psycopg)?://.+|sqlite:///.+)?$",
                    ),
                    "passwordSecret": _obj(
                        {"name": _str("Secret name (empty: no password)."), "key": _str("Key in the Secret.")},
                        description="Where the database password is (set as PGPASSWORD).",
                    ),
                },
                ("url",),
            ),
            "secrets": _obj(
                {
                    "existingSecret": _str("Existing Secret with keys tenant-store-url and admin-key."),
                    "adminKey": _str(
                        "Bootstrap admin key; empty: generated.", pattern=r"^(alk_[0-9a-f]{12}_[A-Za-z0-9_-]{22,200})?$"
                    ),
                }
            ),
            "head": _obj(
                {
                    "resources": RESOURCES,
                    "nodeSelector": NODE_SELECTOR,
                    "tolerations": TOLERATIONS,
                    "rayStartParams": {
                        "type": "object",
                        "additionalProperties": {"type": "string"},
                        "description": "Extra `ray start` parameters.",
                    },
                },
                ("resources",),
            ),
            "workers": {
                "type": "array",
                "minItems": 1,
                "items": WORKER,
                "description": "Ray worker groups (the model replicas run here).",
            },
            "autoscaler": _obj(
                {
                    "enabled": {"type": "boolean", "description": "KubeRay's in-tree autoscaler."},
                    "idleTimeoutSeconds": _int("Idle seconds before a worker pod is removed."),
                },
                ("enabled",),
            ),
            "monitoring": _obj(
                {
                    "serviceMonitor": _obj(
                        {
                            "enabled": {"type": "boolean", "description": "Render a ServiceMonitor."},
                            "interval": _str("Scrape interval."),
                            "labels": LABELS,
                            "keySecret": _obj(
                                {
                                    "name": _str("Secret name (empty: the chart's Secret)."),
                                    "key": _str("Key in the Secret holding an admin key.", minLength=1),
                                },
                                description="The admin key Prometheus sends to /metrics (server.metrics_auth admin).",
                            ),
                        },
                        ("enabled",),
                    ),
                    "podMonitor": _obj(
                        {
                            "enabled": {"type": "boolean", "description": "Render a PodMonitor."},
                            "interval": _str("Scrape interval."),
                            "labels": LABELS,
                        },
                        ("enabled",),
                    ),
                    "prometheusRule": _obj(
                        {
                            "enabled": {"type": "boolean", "description": "Render the alert rules' PrometheusRule."},
                            "labels": LABELS,
                        },
                        ("enabled",),
                    ),
                    "grafanaDashboard": _obj(
                        {
                            "enabled": {"type": "boolean", "description": "Render the dashboard ConfigMap."},
                            "labels": LABELS,
                        },
                        ("enabled",),
                    ),
                }
            ),
            "extraEnv": {"type": "array", "items": {"type": "object"}, "description": "Extra container env."},
            "extraVolumes": {"type": "array", "items": {"type": "object"}, "description": "Extra pod volumes."},
            "extraVolumeMounts": {"type": "array", "items": {"type": "object"}, "description": "Extra mounts."},
        },
        required=("image", "rayVersion", "ports", "server", "tenantStore", "head", "workers"),
    )
    # Helm adds `global` to every chart's values.
    schema["properties"]["global"] = {"type": "object", "description": "Helm's global values."}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Aligner chart values",
        **schema,
        "$defs": defs,
    }


def render_schema() -> str:
    return json.dumps(values_schema(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    SCHEMA_PATH.write_text(render_schema())
    print(f"wrote {SCHEMA_PATH}")
