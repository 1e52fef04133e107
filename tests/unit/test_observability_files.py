"""The shipped Grafana dashboard and Prometheus alert rules read metrics the gateway really exports, and the
rules pass Prometheus' own checker (`promtool`, from Debian's `prometheus` package)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from compoundry.gateway.app import create_app

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "compoundry.json"
RULES = ROOT / "deploy" / "prometheus" / "compoundry-alerts.yml"
METRIC = re.compile(r"\b((?:compoundry|process|python)_[a-z_]+)\b")
SUFFIXES = ("", "_total", "_bucket", "_count", "_sum", "_created")


@pytest.fixture
def exported(parts) -> set[str]:
    """Every sample name the gateway's /metrics can carry (families without samples yet included)."""
    with TestClient(create_app(parts)) as client:
        client.post("/v1/pipelines/both", json={"inputs": {"q": "refund"}})
        text = client.get("/metrics").text
    return {family.name + suffix for family in text_string_to_metric_families(text) for suffix in SUFFIXES}


def _dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def _rule_queries() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def test_every_dashboard_and_alert_query_names_an_exported_metric(exported):
    queries = _dashboard_queries() + _rule_queries()
    assert len(_dashboard_queries()) >= 12 and len(_rule_queries()) >= 6
    named = {name for query in queries for name in METRIC.findall(query)}
    assert named and named <= exported, sorted(named - exported)


def test_every_dashboard_panel_has_a_unique_id_and_a_place():
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert all({"h", "w", "x", "y"} <= set(p["gridPos"]) for p in panels)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)")
def test_the_alert_rules_pass_promtool():
    checked = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
