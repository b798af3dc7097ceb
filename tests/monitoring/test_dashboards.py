"""Dashboards are JSON that Grafana imports as is; alert rules pass promtool's checks and unit tests."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

DASHBOARDS = sorted((ROOT / "grafana/dashboards").glob("*.json"))
RULES_DIR = ROOT / "deploy/prometheus"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: `make test` installs the Debian package prometheus")
    return path


def panel_targets(dashboard: dict) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_there_are_dashboards_for_cost_routing_and_latency() -> None:
    assert {path.stem for path in DASHBOARDS} >= {"cost", "routing", "latency", "learning"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_is_importable_as_is(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        assert panel["targets"], f"panel {panel['title']!r} has no query"
    for expr in panel_targets(dashboard):
        assert not re.search(r"instance\s*=|localhost|127\.0\.0\.1", expr), f"hard-coded instance in {expr}"


def test_alert_rules_check_and_unit_tests_pass() -> None:
    check = subprocess.run([promtool(), "check", "rules", "alerts.yaml"], cwd=RULES_DIR, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(
        [promtool(), "test", "rules", "alerts_test.yaml"], cwd=RULES_DIR, capture_output=True, text=True
    )
    assert test.returncode == 0, test.stdout + test.stderr
