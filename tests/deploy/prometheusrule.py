"""Render deploy/prometheus/alerts.yaml as the Prometheus Operator's PrometheusRule (one source of truth).

``python -m tests.deploy.prometheusrule > deploy/k8s/base/prometheusrule.yaml`` regenerates the manifest;
tests/deploy/test_kubernetes.py fails when the committed manifest differs from this rendering.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yaml"

HEADER = (
    "# The alert and recording rules of deploy/prometheus/alerts.yaml for the Prometheus Operator.\n"
    "# Generated, do not edit: after changing alerts.yaml run\n"
    "#   python -m tests.deploy.prometheusrule > deploy/k8s/base/prometheusrule.yaml\n"
)


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _strip(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_strip(value) for value in node]
    if isinstance(node, str):
        return " ".join(node.split())
    return node


def rule_groups() -> list[dict[str, Any]]:
    """The rule groups of alerts.yaml, with folded expressions normalised to one line."""
    groups: list[dict[str, Any]] = _strip(yaml.safe_load(ALERTS.read_text())["groups"])
    return groups


def render() -> str:
    document = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "cascade", "labels": {"app.kubernetes.io/name": "cascade"}},
        "spec": {"groups": rule_groups()},
    }
    return HEADER + yaml.safe_dump(document, sort_keys=False, width=200)


if __name__ == "__main__":
    print(render(), end="")
