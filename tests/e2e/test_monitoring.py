"""The monitoring a deployment relies on, proved against a real Prometheus: it scrapes the e2e app (with the
admin key, as the chart's ServiceMonitor does), and after traffic of every strategy every PromQL expression
of the shipped Grafana dashboard returns data, the shipped alert rules load and evaluate, and `promtool
check metrics` accepts the server's /metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from aligner.safety.config import SafetyConfig
from aligner.search import registry
from aligner.tenants import TenantPolicy
from tests.prometheus import Prometheus, finite
from tests.unit.helm.test_dashboard import all_panels

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "helm" / "aligner" / "dashboards" / "aligner.json"
RULES = ROOT / "helm" / "aligner" / "rules" / "aligner-alerts.yaml"
QUESTION = {"prompt": "Name a colour.", "max_tokens": 6, "temperature": 0.8, "seed": 3}
VECTOR = {"preference_vector": {"verbosity": 1.0}}
SEARCHES = {
    "sample": {},
    "best_of_n": {"search": {"strategy": "best_of_n", "n": 2}, **VECTOR},
    "rejection": {"search": {"strategy": "rejection", "batch": 2, "threshold": 0.99, "max_rounds": 3}, **VECTOR},
    "beam": {"search": {"strategy": "beam", "beam_width": 2, "expansions": 2, "chunk_tokens": 3}, **VECTOR},
    "rps": {"search": {"strategy": "rps", "neighbors": 2, "n": 2}, **VECTOR},
    "particle_filter": {"search": {"strategy": "particle_filter", "particles": 2, "chunk_tokens": 3}, **VECTOR},
}


def dashboard_queries() -> list[tuple[str, str]]:
    panels = all_panels(json.loads(DASHBOARD.read_text()))
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]


@pytest.fixture(scope="module")
def prometheus(server, tmp_path_factory):
    host_port = server.url.removeprefix("http://")
    scrape = {
        "job_name": "aligner",
        "metrics_path": "/metrics",
        "authorization": {"type": "Bearer", "credentials": server.admin_key},
        "static_configs": [{"targets": [host_port]}],
    }
    instance = Prometheus(tmp_path_factory.mktemp("prometheus"), scrape, [RULES])
    try:
        yield instance
    finally:
        instance.stop()


def traffic(server) -> None:
    """A request of every strategy (one streamed), a budget stop, a tenant under a safety config and one
    over its rate limit."""
    with server.client() as client:
        for strategy, body in SEARCHES.items():
            reply = client.post("/v1/generate", json={**QUESTION, **body}, headers=server.headers(server.monitored))
            assert reply.status_code == 200, (strategy, reply.text)
        with client.stream(
            "POST", "/v1/generate", json={**QUESTION, "stream": True}, headers=server.headers(server.monitored)
        ) as stream:
            assert stream.status_code == 200 and "done" in stream.read().decode()
        stopped = client.post(
            "/v1/generate",
            json={**QUESTION, **SEARCHES["rejection"], "budget": {"max_reward_calls": 2}},
            headers=server.headers(server.monitored),
        )
        assert stopped.json()["usage"]["stopped_by"] == "max_reward_calls", stopped.text
        limited = [
            client.post("/v1/generate", json={**QUESTION, "max_tokens": 1}, headers=server.headers(server.metered))
            for _ in range(3)
        ]
        assert 429 in [reply.status_code for reply in limited]


def test_every_dashboard_query_returns_data_and_the_alert_rules_evaluate(server, prometheus):
    assert set(SEARCHES) == set(registry.names()), "traffic of every strategy"
    _, server.monitored = server.store.create_key("monitored")
    server.store.set_safety_config(
        "monitored",
        SafetyConfig(text="Answer kindly.", thresholds={"harmlessness": 0.01}, action="flag"),
        expected_version=None,
    )
    _, server.metered = server.store.create_key("metered")
    server.store.set_tenant_policy("metered", TenantPolicy(requests_per_minute=2), expected_version=None)
    time.sleep(1.0)  # configs and policies are in force on every replica within a second
    began = time.time()
    prometheus.wait_for_scrape_after(began)  # the first sample of every series that exists already
    # Two rounds with a scrape between and after: every counter has grown between two samples in the window.
    for _ in range(2):
        traffic(server)
        prometheus.wait_for_scrape_after(time.time() + 1.0)  # the hub's merge lags the replicas' pushes
    window = f"{int(time.time() - began) + 10}s"
    empty, undefined = [], []
    for title, expr in dashboard_queries():
        query = expr.replace("$__rate_interval", window).replace('=~"$tenant"', '=~".*"')
        assert "$" not in query, query
        samples = prometheus.query(query)
        if not samples:
            empty.append(f"{title}: {query}")
        elif not finite(samples):
            undefined.append(f"{title}: {query} -> {samples}")
    assert not empty, "dashboard queries with no data:\n" + "\n".join(empty)
    assert not undefined, "dashboard queries with only NaN/Inf:\n" + "\n".join(undefined)
    tenants = prometheus.api("label/tenant/values", **{"match[]": "aligner_requests_total"})
    assert {"monitored", "metered"} <= set(tenants)  # the dashboard's $tenant variable lists them
    assert finite(prometheus.query('sum(aligner_safety_actions_total{tenant="monitored"})'))[0] >= 2
    assert finite(prometheus.query('sum(aligner_rate_limited_total{tenant="metered"})'))[0] >= 2
    budget_stops = prometheus.query('aligner_budget_stops_total{limit="max_reward_calls"}')
    assert finite(budget_stops) and finite(budget_stops)[0] >= 2

    rules = [r for group in prometheus.api("rules")["groups"] for r in group["rules"]]
    assert len(rules) == len(re.findall(r"- alert:", RULES.read_text()))
    assert [r["name"] for r in rules if r["health"] != "ok"] == [], rules
    states = {r["name"]: r["state"] for r in rules}
    # Both model replicas and the ingress report, and none serves an old config: these stay quiet.
    assert states["AlignerReplicasMissing"] == "inactive", states
    assert states["AlignerMetricsAbsent"] == "inactive", states
    assert states["AlignerSafetyConfigDrift"] == "inactive", states


def test_promtool_accepts_the_servers_metrics(server):
    text = httpx.get(f"{server.url}/metrics", headers=server.headers(server.admin_key), timeout=30).text
    assert "aligner_requests_total" in text
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: install Debian's prometheus package (make test does)"
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
