"""The alert rules (deploy/prometheus/): valid for Prometheus, unit-tested with promtool, and about
metrics the service really exports."""

from __future__ import annotations

import re
import subprocess

import yaml
from fastapi.testclient import TestClient

from tests.deploy.tools import prometheus_tool
from tests.server import REPO

RULES = REPO / "deploy" / "prometheus"


def test_rules_are_valid_and_their_unit_tests_pass() -> None:
    promtool = prometheus_tool("promtool")
    for argv in (["check", "rules", "rules.yml"], ["test", "rules", "rules.test.yml"]):
        result = subprocess.run([promtool, *argv], cwd=RULES, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    alerts = {
        rule["alert"]
        for group in yaml.safe_load((RULES / "rules.yml").read_text())["groups"]
        for rule in group["rules"]
    }
    tests = yaml.safe_load((RULES / "rules.test.yml").read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    quiet = {case["alertname"] for test in tests for case in test["alert_rule_test"] if not case["exp_alerts"]}
    assert alerts == fired == quiet


def test_rules_read_only_metrics_the_service_exports(client: TestClient) -> None:
    """Every series a rule reads is one the service declares (labelled series appear only once used)."""
    text = client.get("/metrics").text
    exported: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        base = name.removesuffix("_total")
        if kind == "histogram":
            exported |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
        elif kind == "counter":
            exported |= {f"{base}_total"}
        else:
            exported.add(name)
    expressions = " ".join(
        rule["expr"] for group in yaml.safe_load((RULES / "rules.yml").read_text())["groups"] for rule in group["rules"]
    )
    used = set(re.findall(r"\b(denoise_[a-z_]+)", expressions))
    assert used
    assert used <= exported, used - exported
