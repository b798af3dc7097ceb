"""A real Prometheus (the Debian package) for tests: start it on loopback, query it, list dashboard queries."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import ROOT, free_port, stop, wait_http

DASHBOARDS = sorted((ROOT / "grafana/dashboards").glob("*.json"))
RATE_WINDOW = "30s"  # stands in for Grafana's $__rate_interval


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is missing in CI: `make test` installs the Debian package")
        pytest.skip("prometheus is not installed (Debian package prometheus; `make test` installs it)")
    return path


@contextmanager
def running_prometheus(targets: dict[str, str], folder: Path) -> Iterator[str]:
    """Prometheus scraping ``{job: host:port}`` every second, with the project's alert rules; yields its URL."""
    binary = prometheus_binary()
    shutil.copy(ROOT / "deploy/prometheus/alerts.yaml", folder / "alerts.yaml")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yaml"],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]} for job, target in targets.items()
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(folder / "prometheus.log").open("w"),
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/-/ready", proc, timeout_s=60)
        yield url
    finally:
        stop(proc)


def query(prometheus: str, expr: str) -> list[dict]:
    response = httpx.get(prometheus + "/api/v1/query", params={"query": expr}, timeout=10).json()
    assert response["status"] == "success", response
    return response["data"]["result"]


def panel_queries(vllm: bool) -> list[tuple[str, str]]:
    """(title, PromQL) of every panel target; those over vLLM's own metrics when ``vllm``, the others if not."""
    queries = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                if ("vllm:" in target["expr"]) == vllm:
                    queries.append(
                        (f"{path.stem}: {panel['title']}", target["expr"].replace("$__rate_interval", RATE_WINDOW))
                    )
    return queries


def queries_without_data(prometheus: str, queries: list[tuple[str, str]]) -> list[str]:
    return [f"{title}: {expr}" for title, expr in queries if not query(prometheus, expr)]


@contextmanager
def running_pushgateway() -> Iterator[str]:
    """A real Pushgateway (Debian package prometheus-pushgateway) on loopback; yields host:port."""
    binary = shutil.which("prometheus-pushgateway")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus-pushgateway is missing in CI: `make test` installs the Debian package")
        pytest.skip("prometheus-pushgateway is not installed (`make test` installs it)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", proc, timeout_s=30)
        yield f"127.0.0.1:{port}"
    finally:
        stop(proc)
