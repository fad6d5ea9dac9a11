"""The shipped alert rules (helm/aligner/rules/aligner-alerts.yaml): valid for Prometheus (`promtool check
rules`), each alert firing and staying quiet as its cases in alert_rules_test.yaml say (`promtool test rules`,
Debian's prometheus package, which `make test` installs), reading only metrics the server declares, and
shipped by the chart as a PrometheusRule."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from serve.errors import ERROR_TABLE
from tests.unit.helm.test_chart import one, render
from tests.unit.helm.test_dashboard import family_of_each_series, metric_names

HERE = Path(__file__).parent
RULES = HERE.parents[2] / "helm" / "aligner" / "rules" / "aligner-alerts.yaml"


def promtool(*args: str) -> subprocess.CompletedProcess:
    tool = shutil.which("promtool")
    assert tool, "promtool not found: install Debian's prometheus package (make test does)"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120, cwd=HERE)


def alerts() -> dict[str, dict]:
    return {rule["alert"]: rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}


def test_promtool_accepts_the_rules():
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_each_alert_fires_and_stays_quiet_as_its_cases_say():
    tested = promtool("test", "rules", "alert_rules_test.yaml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    cases = yaml.safe_load((HERE / "alert_rules_test.yaml").read_text())["tests"]
    exercised = {t["alertname"] for case in cases for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert exercised == set(alerts()), "every alert has a case where it fires"


def test_the_server_error_alert_counts_every_5xx_but_a_clients_own_deadline():
    expr = alerts()["AlignerServerErrors"]["expr"]
    codes = set(re.search(r'status=~"([^"]+)"', expr).group(1).split("|"))
    assert codes == {code for code, (status, _, _) in ERROR_TABLE.items() if status >= 500} - {"deadline_exceeded"}


def test_requests_refused_for_what_the_client_sent_are_left_out_of_the_ratios():
    client_caused = {code for code, (status, _, _) in ERROR_TABLE.items() if 400 <= status < 500} - {"overloaded"}
    for name in ("AlignerServerErrors", "AlignerQueueRejections"):
        expr = alerts()[name]["expr"]
        excluded = set(re.search(r'status!~"([^"]+)"', expr).group(1).split("|"))
        assert excluded == client_caused, name


def test_the_rules_read_only_metrics_the_server_declares():
    series = family_of_each_series()
    for name, rule in alerts().items():
        unknown = metric_names(rule["expr"]) - set(series)
        assert not unknown, f"{name} reads undeclared series {sorted(unknown)}"


def test_the_chart_ships_the_rules_as_a_prometheusrule():
    assert not [d for d in render() if d["kind"] == "PrometheusRule"]  # off by default: it needs the operator's CRD
    docs = render({"monitoring": {"prometheusRule": {"enabled": True, "labels": {"release": "kps"}}}})
    rule = one(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
