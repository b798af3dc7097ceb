"""Staying in service: a student that forgets its adapter, readiness that means "can answer", and a teacher
that refuses the gateway (expired key, exhausted quota) all leave the alias answering."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    STUDENT_MODEL,
    TEACHER_MODEL,
    GatewayFactory,
    Server,
    free_port,
    gateway_config,
    start_fake,
    stop,
)
from tests.gateway.helpers import chat, eventually, post

ADMIN_KEY = "admin-key-for-tests-0123456789"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
ADAPTER = "student-model-distill-v0001"


@pytest.fixture()
def student() -> Iterator[Server]:
    """A student of this test's own: the tests make it forget its adapters, as a restarted vLLM does."""
    server = start_fake(STUDENT_MODEL, "student", api_key="student-key")
    yield server
    stop(server.proc)


def metric(gateway: Server, line_start: str) -> float:
    for line in httpx.get(gateway.root + "/metrics").text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no metric {line_start}")


def promoted_gateway(
    start_gateway: GatewayFactory, student: Server, teacher: Server, tmp_path: Path, **router: object
) -> Server:
    """A gateway whose student serves a promoted adapter, switched as `cascade distill run` does."""
    adapter_dir = tmp_path / "registry" / "v0001"
    adapter_dir.mkdir(parents=True)
    loaded = httpx.post(
        student.url + "/load_lora_adapter",
        json={"lora_name": ADAPTER, "lora_path": str(adapter_dir)},
        headers={"authorization": "Bearer student-key"},
    )
    assert loaded.status_code == 200
    config = gateway_config(student.url, teacher.url, **router)
    config["student"]["api_key"] = "student-key"
    config["server"] = {"admin_key": ADMIN_KEY, "health_check_s": 0.2}
    gateway = start_gateway(config)
    switched = httpx.post(
        gateway.root + "/admin/student", json={"model": ADAPTER, "lora_path": str(adapter_dir)}, headers=ADMIN
    )
    assert switched.status_code == 200, switched.text
    return gateway


def test_a_restarted_student_gets_its_adapter_back_and_the_teacher_answers_meanwhile(
    start_gateway: GatewayFactory, student: Server, fake_teacher: Server, tmp_path: Path
) -> None:
    gateway = promoted_gateway(start_gateway, student, fake_teacher, tmp_path)
    assert post(gateway, json=chat("cascade", "hello")).json()["model"] == ADAPTER

    httpx.post(student.root + "/_forget")  # the student restarted: it serves the base model only
    answers = [post(gateway, json=chat("cascade", "hello")) for _ in range(20)]
    assert all(answer.status_code == 200 for answer in answers)
    assert {answer.headers["x-cascade-tier"] for answer in answers} <= {"student", "teacher"}
    assert httpx.get(gateway.root + "/readyz").status_code == 200

    def student_answers_with_adapter() -> bool:
        answer = post(gateway, json=chat("cascade", "hello"))
        return answer.headers["x-cascade-tier"] == "student" and answer.json()["model"] == ADAPTER

    eventually(student_answers_with_adapter)
    served = httpx.get(student.url + "/models", headers={"authorization": "Bearer student-key"}).json()["data"]
    assert ADAPTER in {model["id"] for model in served}
    assert metric(gateway, 'cascade_student_adapter_reloads_total{outcome="ok"}') >= 1
    assert metric(gateway, "cascade_student_adapter_missing") == 0


def test_a_request_that_finds_the_adapter_gone_is_answered_by_the_teacher(
    start_gateway: GatewayFactory, student: Server, fake_teacher: Server, tmp_path: Path
) -> None:
    config = gateway_config(student.url, fake_teacher.url)
    config["student"]["api_key"] = "student-key"
    config["server"] = {"admin_key": ADMIN_KEY, "health_check_s": 300}  # only a request can notice
    adapter_dir = tmp_path / "v0001"
    adapter_dir.mkdir()
    headers = {"authorization": "Bearer student-key"}
    httpx.post(
        student.url + "/load_lora_adapter", json={"lora_name": ADAPTER, "lora_path": str(adapter_dir)}, headers=headers
    )
    gateway = start_gateway(config)
    httpx.post(gateway.root + "/admin/student", json={"model": ADAPTER, "lora_path": str(adapter_dir)}, headers=ADMIN)
    httpx.post(student.root + "/_forget")

    first = post(gateway, json=chat("cascade", "hello"))
    assert first.status_code == 200 and first.headers["x-cascade-tier"] == "teacher"
    eventually(lambda: post(gateway, json=chat("cascade", "hello")).json()["model"] == ADAPTER)


def test_the_base_student_answers_while_the_adapter_is_missing_when_configured(
    start_gateway: GatewayFactory, student: Server, fake_teacher: Server, tmp_path: Path
) -> None:
    gateway = promoted_gateway(start_gateway, student, fake_teacher, tmp_path, on_adapter_missing="base")
    # A path the student cannot read: the adapter cannot come back, the base student stands in.
    httpx.post(
        gateway.root + "/admin/student", json={"model": ADAPTER, "lora_path": str(tmp_path / "gone")}, headers=ADMIN
    )
    httpx.post(student.root + "/_forget")
    answer = post(gateway, json=chat("cascade", "hello"))
    assert answer.status_code == 200
    assert answer.headers["x-cascade-tier"] == "student" and answer.json()["model"] == STUDENT_MODEL
    eventually(lambda: metric(gateway, 'cascade_student_adapter_reloads_total{outcome="failed"}') >= 1)
    eventually(lambda: metric(gateway, "cascade_student_adapter_missing") == 1)
    ready = httpx.get(gateway.root + "/readyz")
    assert ready.status_code == 200 and ready.json()["upstreams"]["student"] == "adapter_missing"


def test_ready_while_either_tier_can_answer(start_gateway: GatewayFactory, fake_student: Server) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    config = gateway_config(fake_student.url, dead)
    config["server"] = {"health_check_s": 0.2}
    gateway = start_gateway(config)
    ready = httpx.get(gateway.root + "/readyz")
    assert ready.status_code == 200 and ready.json()["upstreams"] == {"student": "ready", "teacher": "down"}
    degraded = post(gateway, json=chat("cascade", "student=unsure"))
    assert degraded.status_code == 200 and degraded.headers["x-cascade-degraded"] == "teacher-unavailable"
    eventually(lambda: metric(gateway, 'cascade_upstream_ready{upstream="teacher"}') == 0)
    assert metric(gateway, 'cascade_upstream_ready{upstream="student"}') == 1
    assert metric(gateway, 'cascade_upstream_state{state="down",upstream="teacher"}') == 1

    both_dead = start_gateway(gateway_config(dead, dead))
    ready = httpx.get(both_dead.root + "/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "not ready"


@pytest.mark.parametrize("refusal", ["unauthorized", "forbidden", "limited"])
def test_a_teacher_that_refuses_the_gateway_degrades_and_opens_its_breaker(
    start_gateway: GatewayFactory, fake_student: Server, fake_teacher: Server, refusal: str
) -> None:
    config = gateway_config(fake_student.url, fake_teacher.url)
    config["teacher"].update(breaker_failures=2, breaker_reset_s=60, retries=0)
    gateway = start_gateway(config)
    for _ in range(3):
        answer = post(gateway, json=chat("cascade", f"student=unsure teacher={refusal}"))
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-cascade-tier"] == "student"
        assert answer.headers["x-cascade-degraded"] == "teacher-unavailable"
    assert metric(gateway, 'cascade_upstream_circuit_open{upstream="teacher"}') == 1


def test_a_teacher_refusing_its_key_is_a_502_for_a_pinned_request_not_the_clients_401(
    gateway: Server,
) -> None:
    answer = post(gateway, json=chat(TEACHER_MODEL, "teacher=unauthorized"))
    assert answer.status_code == 502
    assert answer.json()["error"]["code"] == "upstream_auth_failed"


def test_a_prompt_too_long_for_the_student_escalates(gateway: Server) -> None:
    answer = post(gateway, json=chat("cascade", "student=reject"))
    assert answer.status_code == 200 and answer.headers["x-cascade-tier"] == "teacher"
    assert metric(gateway, 'cascade_escalations_total{reason="student_context"}') >= 1
