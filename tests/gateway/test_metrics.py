"""Metric values after a scripted mix of requests, and the cost arithmetic behind them."""

from __future__ import annotations

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cascade.config import PriceSettings
from tests.conftest import STUDENT_MODEL, TEACHER_MODEL, GatewayFactory, Server, gateway_config

STUDENT_PRICE = {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0}
TEACHER_PRICE = {"input_usd_per_mtok": 10.0, "output_usd_per_mtok": 20.0}


def samples(gateway: Server) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(gateway.root + "/metrics").text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def test_price_per_token_api_and_gpu() -> None:
    api = PriceSettings(input_usd_per_mtok=3, output_usd_per_mtok=15)
    assert api.cost_usd(1_000_000, 0) == pytest.approx(3.0)
    assert api.cost_usd(1000, 2000) == pytest.approx(0.003 + 0.03)
    gpu = PriceSettings(gpu_usd_per_hour=3.6, prompt_tokens_per_s=10_000, completion_tokens_per_s=1000)
    assert gpu.cost_usd(10_000, 1000) == pytest.approx(3.6 / 3600 * 2)
    assert PriceSettings().cost_usd(10**6, 10**6) == 0.0  # unpriced models cost nothing


def test_metrics_after_a_scripted_mix(
    start_gateway: GatewayFactory, fake_student: Server, fake_teacher: Server
) -> None:
    config = gateway_config(fake_student.url, fake_teacher.url)
    config["student"]["price"] = STUDENT_PRICE
    config["teacher"]["price"] = TEACHER_PRICE
    gateway = start_gateway(config)
    client = openai.OpenAI(base_url=gateway.url, api_key="unused", max_retries=0)
    hello = [{"role": "user", "content": "hello"}]
    unsure = [{"role": "user", "content": "student=unsure"}]

    client.chat.completions.create(model="cascade", messages=hello)
    list(
        client.chat.completions.create(
            model="cascade", messages=hello, stream=True, stream_options={"include_usage": True}
        )
    )
    client.chat.completions.create(model="cascade", messages=unsure)
    streamed = list(client.chat.completions.create(model="cascade", messages=unsure, stream=True))
    assert all(chunk.usage is None for chunk in streamed)  # counted by the gateway, not shown to the client
    client.chat.completions.create(model=TEACHER_MODEL, messages=hello)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="cascade", messages=hello, n=3)

    found = samples(gateway)
    assert value(found, "cascade_requests_total", tier="student", outcome="ok", status="200") == 2
    assert value(found, "cascade_requests_total", tier="teacher", outcome="ok", status="200") == 3
    assert value(found, "cascade_requests_total", tier="none", outcome="error", status="400") == 1
    assert value(found, "cascade_escalations_total", reason="not_confident") == 2
    assert value(found, "cascade_decisions_total", reason="confident") == 2
    assert value(found, "cascade_decisions_total", reason="pinned") == 1
    # Every call in the fake costs 6 prompt + 4 completion tokens; 4 student calls, 3 teacher calls
    # (the escalated stream's usage included although the client did not ask for it).
    assert value(found, "cascade_tokens_total", model=STUDENT_MODEL, kind="prompt") == 24
    assert value(found, "cascade_tokens_total", model=STUDENT_MODEL, kind="completion") == 16
    assert value(found, "cascade_tokens_total", model=TEACHER_MODEL, kind="prompt") == 18
    assert value(found, "cascade_tokens_total", model=TEACHER_MODEL, kind="completion") == 12
    assert value(found, "cascade_cost_usd_total", model=STUDENT_MODEL) == pytest.approx(24e-6 + 32e-6)
    assert value(found, "cascade_cost_usd_total", model=TEACHER_MODEL) == pytest.approx(180e-6 + 240e-6)
    assert value(found, "cascade_teacher_only_cost_usd_total") == pytest.approx(5 * (60e-6 + 80e-6))
    assert value(found, "cascade_router_confidence_count") == 4
    assert value(found, "cascade_request_duration_seconds_count", tier="teacher") == 3
    assert value(found, "cascade_time_to_first_token_seconds_count", tier="student") == 1
    assert value(found, "cascade_time_to_first_token_seconds_count", tier="teacher") == 1


def test_counts_are_exact_across_two_workers(
    start_gateway: GatewayFactory, fake_student: Server, fake_teacher: Server
) -> None:
    gateway = start_gateway(gateway_config(fake_student.url, fake_teacher.url), "--workers", "2")
    with httpx.Client(timeout=30) as http:  # one connection per request: requests spread over both workers
        for _ in range(20):
            body = {"model": "cascade", "messages": [{"role": "user", "content": "hello"}]}
            assert http.post(gateway.url + "/chat/completions", json=body, headers={"connection": "close"}).is_success
    for _ in range(4):  # whichever worker answers the scrape, the sum over workers is the same
        found = samples(gateway)
        assert value(found, "cascade_requests_total", tier="student", outcome="ok", status="200") == 20
