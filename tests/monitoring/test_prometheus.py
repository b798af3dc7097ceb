"""Every panel query of every dashboard returns data from a real Prometheus scraping a real gateway."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from distill.report import push_metrics
from tests.conftest import TEACHER_MODEL, GatewayFactory, Server, gateway_config
from tests.monitoring.prom import (
    DASHBOARDS,
    panel_queries,
    queries_without_data,
    running_prometheus,
    running_pushgateway,
)


@pytest.fixture(scope="module")
def monitored_gateway(start_gateway: GatewayFactory, fake_student: Server, fake_teacher: Server) -> Server:
    config = gateway_config(fake_student.url, fake_teacher.url)
    config["student"]["price"] = {"gpu_usd_per_hour": 2.0, "prompt_tokens_per_s": 5000, "completion_tokens_per_s": 500}
    config["teacher"]["price"] = {"input_usd_per_mtok": 3.0, "output_usd_per_mtok": 15.0}
    config["log_store"] = {"shadow_share": 1.0}  # every accepted answer also asked of the teacher
    return start_gateway(config)


@pytest.fixture(scope="module")
def prometheus(monitored_gateway: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prometheus scraping the gateway and a Pushgateway holding a re-distillation cycle's metrics."""
    with running_pushgateway() as pushgateway:
        push_metrics(
            f"http://{pushgateway}",
            success_time=time.time(),
            candidate_agreement=0.8,
            serving_agreement=0.6,
            promoted=True,
            examples=120,
            duration_s=95.0,
        )
        targets = {"cascade-gateway": monitored_gateway.root.removeprefix("http://"), "pushgateway": pushgateway}
        with running_prometheus(targets, tmp_path_factory.mktemp("prometheus")) as url:
            yield url


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


def test_every_gateway_panel_query_returns_data(prometheus: str, monitored_gateway: Server) -> None:
    end = time.monotonic() + 8  # traffic across several 1 s scrapes, so every rate has two points
    while time.monotonic() < end:
        send_traffic(monitored_gateway)
        time.sleep(0.5)
    missing = queries_without_data(prometheus, panel_queries(vllm=False))
    assert not missing, "queries without data:\n" + "\n".join(missing)


def test_every_metric_a_dashboard_names_is_exposed(monitored_gateway: Server) -> None:
    exposed = {
        family.name for family in text_string_to_metric_families(httpx.get(monitored_gateway.root + "/metrics").text)
    }
    exposed |= {f"{name}_total" for name in exposed}
    named = set()
    for path in DASHBOARDS:
        named |= set(re.findall(r"\b(cascade_[a-z0-9_]+)", path.read_text()))
    named = {re.sub(r"_(bucket|count|sum)$", "", name) for name in named if not name.startswith("cascade_distill_")}
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
