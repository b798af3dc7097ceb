"""Admin endpoints: off without a key, guarded by it, and the student switch reaches every worker."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import GatewayFactory, Server, gateway_config
from tests.gateway.helpers import eventually

ADMIN_KEY = "admin-key-for-tests-0123456789"


def admin_config(student: Server, teacher: Server, tmp_path: Path) -> dict:
    config = gateway_config(student.url, teacher.url)
    config["server"] = {"admin_key": ADMIN_KEY, "state_file": str(tmp_path / "state.json")}
    return config


def test_admin_is_off_without_a_key(gateway: Server) -> None:
    response = httpx.get(gateway.root + "/admin/state")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_admin_needs_the_key_and_refuses_models_the_student_does_not_serve(
    start_gateway: GatewayFactory, fake_student: Server, fake_teacher: Server, tmp_path: Path
) -> None:
    gateway = start_gateway(admin_config(fake_student, fake_teacher, tmp_path))
    wrong = httpx.post(gateway.root + "/admin/student", json={"model": "x"}, headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
    unknown = httpx.post(
        gateway.root + "/admin/student",
        json={"model": "never-loaded"},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "model"


def test_student_switch_reaches_every_worker_and_survives_a_restart(
    start_gateway: GatewayFactory, fake_student: Server, fake_teacher: Server, tmp_path: Path
) -> None:
    httpx.post(fake_student.root + "/_serve", json={"model": "student-v2"})
    config = admin_config(fake_student, fake_teacher, tmp_path)
    gateway = start_gateway(config, "--workers", "2")
    switched = httpx.post(
        gateway.root + "/admin/student", json={"model": "student-v2"}, headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert switched.status_code == 200 and switched.json() == {
        "student_model": "student-v2",
        "previous": "student-model",
    }
    body = {"model": "cascade", "messages": [{"role": "user", "content": "hello"}]}
    with httpx.Client(timeout=30) as http:

        def every_worker_switched() -> bool:  # the other worker polls the state file once a second
            models = {
                http.post(gateway.url + "/chat/completions", json=body, headers={"connection": "close"}).json()["model"]
                for _ in range(12)
            }
            return models == {"student-v2"}

        eventually(every_worker_switched, 10, "both workers answering from student-v2")
        listed = [m["id"] for m in http.get(gateway.url + "/models").json()["data"]]
        assert listed == ["cascade", "student-v2", "teacher-model"]
    restarted = start_gateway(config)  # a new gateway on the same state file starts on the promoted student
    answer = httpx.post(restarted.url + "/chat/completions", json=body, timeout=30).json()
    assert answer["model"] == "student-v2"


def test_threshold_can_be_recalibrated_at_runtime(
    start_gateway: GatewayFactory, fake_student: Server, fake_teacher: Server, tmp_path: Path
) -> None:
    gateway = start_gateway(admin_config(fake_student, fake_teacher, tmp_path))
    body = {"model": "cascade", "messages": [{"role": "user", "content": "hello"}]}  # confidence exp(-0.01)
    assert httpx.post(gateway.url + "/chat/completions", json=body).headers["x-cascade-tier"] == "student"
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    bad = httpx.post(gateway.root + "/admin/threshold", json={"threshold": 1.5}, headers=headers)
    assert bad.status_code == 400
    changed = httpx.post(gateway.root + "/admin/threshold", json={"threshold": 0.995}, headers=headers)
    assert changed.json() == {"threshold": 0.995, "previous": 0.5, "signal": "mean_prob"}
    assert httpx.post(gateway.url + "/chat/completions", json=body).headers["x-cascade-tier"] == "teacher"
