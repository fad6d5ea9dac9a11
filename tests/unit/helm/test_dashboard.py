"""The Grafana dashboard stays in step with serve/metrics.py: it queries every declared metric and nothing else."""

import itertools
import json
import re
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase

from serve.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[3] / "helm" / "aligner" / "dashboards" / "aligner.json"
# What in a PromQL text is not a metric name: strings, label matchers, range windows and grouping label lists.
NOT_METRIC_TEXT = re.compile(
    r'"[^"]*"|\{[^}]*\}|\[[^\]]*\]|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)'
)
# Any identifier not called like a function, so vLLM's `vllm:*` or `process_*` series are caught as well as ours.
IDENTIFIER = re.compile(r"(?<![\w:.$])[a-zA-Z_:][\w:]*\b(?!\s*\()")
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
LABEL_VALUES_METRIC = re.compile(r"label_values\(\s*([a-zA-Z_:][\w:]*)")


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def declared_families() -> dict[str, str]:
    """Family name -> type, for every metric a replica's registry holds (read from the module, not listed here)."""
    return {family.name: family.type for family in Metrics().registry.collect()}


def family_of_each_series() -> dict[str, str]:
    """Exposed series name (with its suffix) -> declared family name, read off a replica's registry after one
    observation in every family (so a histogram with negative buckets shows no `_sum`, as Prometheus sees it)."""
    metrics = Metrics()
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            names = metric._labelnames
            child = metric.labels(*["x"] * len(names)) if names else metric
            (getattr(child, "observe", None) or child.inc)(1)
    return {sample.name: family.name for family in metrics.registry.collect() for sample in family.samples}


def all_panels(dashboard: dict) -> list[dict]:
    """Top-level panels plus those a collapsed row keeps inside itself."""
    return [p for top in dashboard["panels"] for p in [top, *top.get("panels", [])]]


def metric_names(expr: str) -> set[str]:
    return set(IDENTIFIER.findall(NOT_METRIC_TEXT.sub(" ", expr))) - PROMQL_WORDS


def queried_series(dashboard: dict) -> set[str]:
    """Every series the panels' targets and the template variables' label_values() read."""
    exprs = [t["expr"] for p in all_panels(dashboard) for t in p.get("targets", [])]
    variables = [v.get("definition", "") for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return {name for expr in exprs for name in metric_names(expr)} | {
        name for text in variables for name in LABEL_VALUES_METRIC.findall(text)
    }


def overlaps(a: dict, b: dict) -> bool:
    side_by_side = a["x"] + a["w"] <= b["x"] or b["x"] + b["w"] <= a["x"]
    one_above_other = a["y"] + a["h"] <= b["y"] or b["y"] + b["h"] <= a["y"]
    return not (side_by_side or one_above_other)


def test_dashboard_identity_and_datasource_variable(dashboard):
    assert dashboard["uid"] == "aligner"
    assert dashboard["title"] == "Aligner"
    assert dashboard["schemaVersion"] == 39
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


def test_panel_ids_are_unique(dashboard):
    ids = [p["id"] for p in all_panels(dashboard)]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, f"duplicate panel ids: {duplicates}"


def test_panels_fit_the_grid_without_overlapping(dashboard):
    placed = [(p["title"], p["gridPos"]) for p in dashboard["panels"]]
    for title, pos in placed:
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["h"] > 0 and pos["x"] + pos["w"] <= 24, title
    clashes = [(a, b) for (a, pa), (b, pb) in itertools.combinations(placed, 2) if overlaps(pa, pb)]
    assert not clashes, f"overlapping panels: {clashes}"


def test_every_panel_has_a_title_and_queries_through_the_datasource_variable(dashboard):
    for panel in all_panels(dashboard):
        assert panel.get("title"), f"panel {panel['id']} has no title"
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"{panel['title']}: no targets"
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_dashboard_queries_only_declared_series(dashboard):
    unknown = sorted(queried_series(dashboard) - set(family_of_each_series()))
    assert not unknown, f"the dashboard queries series serve/metrics.py does not expose: {unknown}"


def test_every_declared_metric_is_on_the_dashboard(dashboard):
    family_of = family_of_each_series()
    on_dashboard = {family_of[s] for s in queried_series(dashboard) if s in family_of}
    missing = sorted(set(declared_families()) - on_dashboard)
    assert not missing, f"metrics declared in serve/metrics.py but on no dashboard panel: {missing}"
