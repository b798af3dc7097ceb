"""Every panel query of every dashboard returns data from a real Prometheus scraping a real gateway."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, TEACHER_MODEL, GatewayFactory, Server, free_port, gateway_config, stop, wait_http

DASHBOARDS = sorted((ROOT / "grafana/dashboards").glob("*.json"))
RATE_WINDOW = "30s"  # stands in for Grafana's $__rate_interval
# vLLM's own metrics need a real vLLM server: they are checked where one runs (tests/serving).
VLLM_PREFIX = "vllm:"


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is missing in CI: `make test` installs the Debian package")
        pytest.skip("prometheus is not installed (Debian package prometheus; `make test` installs it)")
    return path


def gateway_queries() -> list[tuple[str, str]]:
    queries = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                if VLLM_PREFIX not in target["expr"]:
                    queries.append((f"{path.stem}: {panel['title']}", target["expr"]))
    return queries


@pytest.fixture(scope="module")
def monitored_gateway(start_gateway: GatewayFactory, fake_student: Server, fake_teacher: Server) -> Server:
    config = gateway_config(fake_student.url, fake_teacher.url)
    config["student"]["price"] = {"gpu_usd_per_hour": 2.0, "prompt_tokens_per_s": 5000, "completion_tokens_per_s": 500}
    config["teacher"]["price"] = {"input_usd_per_mtok": 3.0, "output_usd_per_mtok": 15.0}
    return start_gateway(config)


@pytest.fixture(scope="module")
def prometheus(monitored_gateway: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = prometheus_binary()
    folder = tmp_path_factory.mktemp("prometheus")
    shutil.copy(ROOT / "deploy/prometheus/alerts.yaml", folder / "alerts.yaml")
    target = monitored_gateway.root.removeprefix("http://")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yaml"],
        "scrape_configs": [{"job_name": "cascade-gateway", "static_configs": [{"targets": [target]}]}],
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
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/-/ready", proc, timeout_s=60)
    yield url
    stop(proc)


def send_traffic(gateway: Server) -> None:
    """Accepted, escalated, degraded, streamed, pinned and failed requests."""
    client = openai.OpenAI(base_url=gateway.url, api_key="unused", max_retries=0)
    for model, text in (
        ("cascade", "hello"),
        ("cascade", "student=unsure"),
        ("cascade", "student=unsure teacher=fail"),
        (TEACHER_MODEL, "teacher=fail"),
    ):
        with contextlib.suppress(openai.APIStatusError):
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}])
    list(client.chat.completions.create(model="cascade", messages=[{"role": "user", "content": "hi"}], stream=True))


def query(prometheus: str, expr: str) -> list[dict]:
    response = httpx.get(prometheus + "/api/v1/query", params={"query": expr}, timeout=10).json()
    assert response["status"] == "success", response
    return response["data"]["result"]


def test_every_gateway_panel_query_returns_data(prometheus: str, monitored_gateway: Server) -> None:
    end = time.monotonic() + 8  # traffic across several 1 s scrapes, so every rate has two points
    while time.monotonic() < end:
        send_traffic(monitored_gateway)
        time.sleep(0.5)
    missing = []
    for title, expr in gateway_queries():
        if not query(prometheus, expr.replace("$__rate_interval", RATE_WINDOW)):
            missing.append(f"{title}: {expr}")
    assert not missing, "queries without data:\n" + "\n".join(missing)


def test_every_metric_a_dashboard_names_is_exposed(monitored_gateway: Server) -> None:
    exposed = {
        family.name for family in text_string_to_metric_families(httpx.get(monitored_gateway.root + "/metrics").text)
    }
    exposed |= {f"{name}_total" for name in exposed}
    named = set()
    for path in DASHBOARDS:
        named |= set(re.findall(r"\b(cascade_[a-z0-9_]+)", path.read_text()))
    named = {re.sub(r"_(bucket|count|sum)$", "", name) for name in named}
    assert named and named <= exposed, f"named but not exposed: {sorted(named - exposed)}"


def test_rules_load_into_prometheus(prometheus: str) -> None:
    groups = httpx.get(prometheus + "/api/v1/rules").json()["data"]["groups"]
    names = {rule["name"] for group in groups for rule in group["rules"]}
    assert {
        "CascadeEscalationRateJump",
        "CascadeStudentDown",
        "CascadeTeacherErrorRate",
        "CascadeRedistillationStale",
    } <= names
