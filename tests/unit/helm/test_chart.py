"""The Helm chart (helm/aligner), rendered by the real Helm engine (helm-python-sdk, no binary).

Standard resources are checked against the Kubernetes schemas of a pinned version, the RayService
against KubeRay's own CRD schema (vendored, tests/data/kuberay), and the Serve config it carries
against Ray Serve's own schema and the project's ServerConfig.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

from serve.chart import CHART_OWNED, SCHEMA_PATH, render_schema
from serve.config import ServerConfig
from serve.ingress.grpc_methods import SERVICER_FUNCTIONS

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "helm" / "aligner"
EXAMPLES = ROOT / "helm" / "examples"
KUBERNETES_VERSION = "1.32.0"
CRD = ROOT / "tests" / "data" / "kuberay" / "ray.io_rayservices.yaml"
VALUE_FILES = {"default": None, "cpu": EXAMPLES / "values-cpu.yaml", "gpu": EXAMPLES / "values-gpu.yaml"}


def render(values: dict | None = None) -> list[dict]:
    chart = helm_python.Chart.load(CHART)
    try:
        files = chart.render(values or {}, name="demo", namespace="ai")
    finally:
        chart.close()
    return [
        doc
        for name, text in sorted(files.items())
        if name.endswith((".yaml", ".yml"))
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def values_of(name: str) -> dict:
    return yaml.safe_load(VALUE_FILES[name].read_text()) if VALUE_FILES[name] else {}


def one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind}s"
    return found[0]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {name: render(values_of(name)) for name in VALUE_FILES}


@pytest.fixture(scope="module")
def rayservice_schema() -> dict:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def test_the_chart_lints_without_errors():
    report = helm_python.lint(str(CHART), strict=False, kube_version=f"v{KUBERNETES_VERSION}")
    errors = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not errors, errors


def test_the_values_schema_is_generated_from_the_code():
    assert SCHEMA_PATH.read_text() == render_schema(), "run `python -m serve.chart` to regenerate it"


@pytest.mark.parametrize("name", list(VALUE_FILES))
def test_standard_resources_are_valid_kubernetes(rendered, name):
    kinds = set()
    for doc in rendered[name]:
        if doc["apiVersion"] in ("ray.io/v1", "monitoring.coreos.com/v1"):
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        kinds.add(doc["kind"])
    assert {"ConfigMap", "Secret", "Service"} <= kinds


def unknown_fields(instance, schema: dict, path: str = "") -> list[str]:
    """Fields the schema does not declare (the API server would drop them: a typo goes unnoticed)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(instance, dict) and "properties" in schema:
        found = [f"{path}.{k}" for k in instance if k not in schema["properties"]]
        for key, value in instance.items():
            if key in schema["properties"]:
                found += unknown_fields(value, schema["properties"][key], f"{path}.{key}")
        return found
    if isinstance(instance, dict) and isinstance(schema.get("additionalProperties"), dict):
        return [
            f for k, v in instance.items() for f in unknown_fields(v, schema["additionalProperties"], f"{path}.{k}")
        ]
    if isinstance(instance, list) and "items" in schema:
        return [f for i, v in enumerate(instance) for f in unknown_fields(v, schema["items"], f"{path}[{i}]")]
    return []


@pytest.mark.parametrize("name", list(VALUE_FILES))
def test_the_rayservice_matches_kuberays_crd_schema(rendered, rayservice_schema, name):
    service = one(rendered[name], "RayService")
    assert service["apiVersion"] == "ray.io/v1"
    jsonschema.validate(service, rayservice_schema)
    assert unknown_fields(service["spec"], rayservice_schema["properties"]["spec"], "spec") == []


def test_the_crd_check_catches_a_misspelt_field(rendered, rayservice_schema):
    service = json.loads(json.dumps(one(rendered["default"], "RayService")))
    service["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParam"] = {}
    service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicas"] = "two"
    assert unknown_fields(service["spec"], rayservice_schema["properties"]["spec"], "spec") == [
        "spec.rayClusterConfig.headGroupSpec.rayStartParam"
    ]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(service, rayservice_schema)


def serve_config(docs: list[dict]) -> dict:
    return yaml.safe_load(one(docs, "RayService")["spec"]["serveConfigV2"])


@pytest.mark.parametrize("name", list(VALUE_FILES))
def test_the_serve_config_builds_the_real_app_from_a_valid_server_config(rendered, name):
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.deployment import Application
    from ray.serve.schema import ServeDeploySchema

    config = serve_config(rendered[name])
    ServeDeploySchema.model_validate(config)  # Ray Serve's own schema of serveConfigV2
    (app,) = config["applications"]
    module, _, attribute = app["import_path"].partition(":")
    builder = getattr(importlib.import_module(module), attribute)
    from serve.app import build_app

    assert builder is build_app
    server = ServerConfig.load(app["args"])
    assert server.model_dump(exclude_unset=True).keys() >= set(values_of(name).get("server", {}))
    assert isinstance(call_user_app_builder_with_args_if_necessary(builder, app["args"]), Application)
    assert config["grpc_options"]["grpc_servicer_functions"] == SERVICER_FUNCTIONS
    assert config["proxy_location"] == "EveryNode"


def test_ports_match_the_servers_defaults(rendered):
    defaults = ServerConfig()
    docs = rendered["default"]
    config = serve_config(docs)
    args = ServerConfig.load(config["applications"][0]["args"])
    assert (config["http_options"]["port"], config["grpc_options"]["port"]) == (defaults.http_port, defaults.grpc_port)
    assert (args.http_port, args.grpc_port, args.http_host) == (defaults.http_port, defaults.grpc_port, "0.0.0.0")
    assert args.tenant_store is None, "the store URL comes from the Secret, never the RayService"
    ports = {p["name"]: p for p in one(docs, "RayService")["spec"]["serveService"]["spec"]["ports"]}
    assert ports["serve"]["port"] == defaults.http_port
    assert (ports["serve-grpc"]["port"], ports["serve-grpc"]["appProtocol"]) == (
        defaults.grpc_port,
        "kubernetes.io/h2c",
    )
    head = one(docs, "RayService")["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in head["ports"]}["serve-grpc"] == defaults.grpc_port


def gpu_requests(docs: list[dict]) -> dict[str, tuple]:
    cluster = one(docs, "RayService")["spec"]["rayClusterConfig"]
    groups = {"head": (cluster["headGroupSpec"], cluster["headGroupSpec"]["template"])}
    groups.update({g["groupName"]: (g, g["template"]) for g in cluster["workerGroupSpecs"]})
    out = {}
    for name, (group, template) in groups.items():
        (container,) = template["spec"]["containers"]
        resources = container["resources"]
        out[name] = (
            resources.get("requests", {}).get("nvidia.com/gpu"),
            resources.get("limits", {}).get("nvidia.com/gpu"),
            group["rayStartParams"].get("num-gpus"),
        )
    return out


def test_gpus_appear_exactly_where_the_values_ask(rendered):
    assert gpu_requests(rendered["default"]) == {"head": (None, None, None), "cpu": (None, None, "0")}
    assert gpu_requests(rendered["gpu"]) == {"head": (None, None, None), "gpu": (1, 1, "1")}
    gpu_args = ServerConfig.load(serve_config(rendered["gpu"])["applications"][0]["args"])
    assert gpu_args.replica_num_gpus == 1 and gpu_args.engine.gpu_memory_utilization == 0.8
    gpu_group = one(rendered["gpu"], "RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    # Model replicas ask for the custom resource the GPU group offers (Helm merges maps: one name).
    resources = gpu_group["rayStartParams"]["resources"]
    assert resources.startswith("'") and resources.endswith("'"), "a shell word, as KubeRay writes it"
    assert json.loads(resources.strip("'")) == gpu_args.replica_resources == {"aligner_model": 1}
    assert gpu_group["template"]["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"


WORKER = {
    "name": "w",
    "type": "cpu",
    "replicas": 1,
    "minReplicas": 1,
    "maxReplicas": 1,
    "gpus": 0,
    "rayCpus": 1,
    "rayResources": {},
    "shmSize": "1Gi",
    "resources": {},
}


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"workers": [{**WORKER, "replicas": -1}]}, "/workers/0/replicas"),
        ({"server": {"num_replicas": -1}}, "/server/num_replicas"),
        ({"replicas": 2}, "'replicas' not allowed"),
        ({"server": {"enigne": {}}}, "'enigne' not allowed"),
        ({"server": {"http_port": 8080}}, "'http_port' not allowed"),
        ({"workers": [{**WORKER, "type": "gpu", "gpus": 0}]}, "/workers/0/gpus"),
        ({"workers": [{**WORKER, "gpus": 1}]}, "/workers/0/gpus"),
        ({"workers": []}, "/workers"),
        ({"ports": {"http": 70000, "grpc": 9000}}, "/ports/http"),
        ({"secrets": {"adminKey": "hunter2"}}, "/secrets/adminKey"),
        ({"server": {"engine": {"dtype": "float8"}}}, "/server/engine/dtype"),
        ({"server": {"metrics_auth": "tenants"}}, "/server/metrics_auth"),
        ({"monitoring": {"serviceMonitor": {"enabled": True, "keySecret": {"key": ""}}}}, "keySecret/key"),
    ],
)
def test_the_schema_rejects_bad_values(values, where):
    with pytest.raises(helm_python.HelmValuesError) as err:
        render(values)
    assert where in str(err.value), str(err.value)


def test_every_server_field_but_the_charts_own_is_a_value():
    schema = json.loads(SCHEMA_PATH.read_text())["properties"]["server"]["properties"]
    assert set(schema) == set(ServerConfig.model_fields) - set(CHART_OWNED)


def test_secrets_env_and_a_generated_admin_key(rendered):
    from aligner.tenants import KEY_RE as _KEY_RE

    docs = rendered["default"]
    secret = one(docs, "Secret")
    assert _KEY_RE.fullmatch(secret["stringData"]["admin-key"])
    assert secret["stringData"]["tenant-store-url"].startswith("postgresql://")
    for group in [
        one(docs, "RayService")["spec"]["rayClusterConfig"]["headGroupSpec"],
        *one(docs, "RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"],
    ]:
        (container,) = group["template"]["spec"]["containers"]
        env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef", {}) for e in container["env"]}
        assert env["ALIGNER_TENANT_STORE"] == {"name": secret["metadata"]["name"], "key": "tenant-store-url"}
        assert env["ALIGNER_ADMIN_KEY"] == {"name": secret["metadata"]["name"], "key": "admin-key"}
        assert env["PGPASSWORD"] == {"name": "aligner-postgresql", "key": "password"}
        assert group["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    given = render({"secrets": {"existingSecret": "mine", "adminKey": ""}})
    assert not [d for d in given if d["kind"] == "Secret"]
    head = one(given, "RayService")["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") for e in head["env"]}[
        "ALIGNER_TENANT_STORE"
    ] == "mine"


def test_metrics_are_scraped_from_the_head_only_and_the_dashboard_ships(rendered):
    docs = render({"monitoring": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}})
    metrics = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("-metrics")][0]
    assert metrics["spec"]["selector"]["app.kubernetes.io/component"] == "head"
    monitor = one(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "metrics"
    assert one(docs, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["port"] == "ray-metrics"
    dashboard = [
        d for d in rendered["default"] if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")
    ][0]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["aligner.json"]) == json.loads(
        (CHART / "dashboards" / "aligner.json").read_text()
    )
    config = [d for d in rendered["default"] if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config")][
        0
    ]
    assert ServerConfig.load(yaml.safe_load(config["data"]["aligner.yaml"])) == ServerConfig.load(
        serve_config(rendered["default"])["applications"][0]["args"]
    )


def test_the_default_image_tags_match_the_dockerfile(rendered):
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert f"ARG APP_VERSION={chart['appVersion']}\n" in dockerfile
    assert 'org.opencontainers.image.version="${APP_VERSION}-${ALIGNER_DEVICE}"' in dockerfile
    for name, flavor in (("default", "cpu"), ("cpu", "cpu"), ("gpu", "gpu")):
        head = one(rendered[name], "RayService")["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]
        assert head["spec"]["containers"][0]["image"] == f"ghcr.io/aligner-dev/aligner:{chart['appVersion']}-{flavor}"


def test_the_image_installs_with_make_install_as_a_non_root_user():
    """No second install recipe: the image runs the Makefile's own install, then prepares the model."""
    lines = [line.strip() for line in (ROOT / "docker" / "Dockerfile").read_text().splitlines()]
    run = next(i for i, line in enumerate(lines) if line.startswith("RUN make install"))
    user = next(i for i, line in enumerate(lines) if line.startswith("USER "))
    assert user < run and lines[user] == "USER 1000:1000"
    assert "ALIGNER_DEVICE=${ALIGNER_DEVICE}" in lines[run] and "aligner prepare-model" in lines[run + 1]
    makefile = (ROOT / "Makefile").read_text()
    assert "EXTRAS ?= serve,test" in makefile and "install -q -e '.[$(EXTRAS)]'" in makefile
    # KubeRay's probes and `ray start` need these in the image.
    assert re.search(r"apt-get install .*\bwget\b", (ROOT / "docker" / "Dockerfile").read_text())


def test_prometheus_scrapes_metrics_with_the_admin_key_from_a_secret():
    """/metrics needs an admin key (server.metrics_auth): the ServiceMonitor sends the chart's, or the
    Secret `keySecret` names, and none when metrics_auth is none."""
    enabled = {"enabled": True}
    docs = render({"monitoring": {"serviceMonitor": enabled}})
    (endpoint,) = one(docs, "ServiceMonitor")["spec"]["endpoints"]
    secret = one(docs, "Secret")
    assert endpoint["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": secret["metadata"]["name"], "key": "admin-key"},
    }
    own = {"monitoring": {"serviceMonitor": {**enabled, "keySecret": {"name": "prometheus-aligner", "key": "token"}}}}
    (endpoint,) = one(render(own), "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["authorization"]["credentials"] == {"name": "prometheus-aligner", "key": "token"}
    existing = render({"secrets": {"existingSecret": "mine"}, "monitoring": {"serviceMonitor": enabled}})
    (endpoint,) = one(existing, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["authorization"]["credentials"] == {"name": "mine", "key": "admin-key"}
    open_metrics = render({"server": {"metrics_auth": "none"}, "monitoring": {"serviceMonitor": enabled}})
    (endpoint,) = one(open_metrics, "ServiceMonitor")["spec"]["endpoints"]
    assert "authorization" not in endpoint
