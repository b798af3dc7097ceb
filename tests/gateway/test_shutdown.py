"""Shutdown with work in flight (a real `cascade serve` sent SIGTERM): every accepted request leaves a record and
every admitted request frees its concurrency slot, however the grace period ends."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from pathlib import Path

import httpx
import redis

from tests.conftest import TEACHER_MODEL, GatewayFactory, Server, gateway_config, stop
from tests.gateway.helpers import received, records, wait_for_records, wait_until_received
from tests.gateway.test_keys import REDIS_URL, Keys


def config_for(fake_student: Server, fake_teacher: Server, folder: Path, **server: float) -> dict:
    config = gateway_config(fake_student.url, fake_teacher.url)
    config["teacher"]["read_timeout_s"] = 30.0  # the slow teacher (5 s) answers unless shutdown cuts it
    config["server"] = server
    config["log_store"] = {"url": f"sqlite+aiosqlite:///{folder / 'log.db'}", "spool_dir": str(folder / "spool")}
    return config


def test_a_request_cut_by_the_shutdown_grace_is_logged_and_frees_its_slot(
    start_gateway: GatewayFactory, fake_student: Server, fake_teacher: Server, tmp_path: Path
) -> None:
    keys = Keys(f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}")
    key, plain = keys.create("one-at-a-time", max_concurrent=1)
    config = config_for(fake_student, fake_teacher, tmp_path, shutdown_grace_s=1.0)
    config["auth"] = {"enabled": True, "redis_url": REDIS_URL, "key_cache_s": 0}
    config["log_store"]["url"] = keys.url
    gateway = start_gateway(config)
    request_id = f"cut-{uuid.uuid4().hex}"
    outcome: list[object] = []

    def slow_request() -> None:
        try:
            outcome.append(
                httpx.post(
                    gateway.url + "/chat/completions",
                    json={"model": TEACHER_MODEL, "messages": [{"role": "user", "content": "teacher=slow"}]},
                    headers={"authorization": f"Bearer {plain}", "x-request-id": request_id},
                    timeout=30,
                ).status_code
            )
        except httpx.HTTPError as exc:
            outcome.append(exc)

    before = received(fake_teacher)
    thread = threading.Thread(target=slow_request)
    thread.start()
    wait_until_received(fake_teacher, before + 1)
    slots = redis.Redis.from_url(REDIS_URL)
    assert slots.zcard(f"cascade:slots:{key.id}:") == 1
    stop(gateway.proc)  # SIGTERM: uvicorn waits shutdown_grace_s, then cancels the request
    thread.join()
    assert slots.zcard(f"cascade:slots:{key.id}:") == 0  # not held until the slot's expiry
    [record] = [record for record in records(keys.url) if record.client_request_id == request_id]
    assert record.status == "cancelled" and record.decision == "bypass"


def test_a_shadow_in_flight_at_shutdown_is_logged_without_the_teacher(
    start_gateway: GatewayFactory, fake_student: Server, fake_teacher: Server, tmp_path: Path
) -> None:
    config = config_for(fake_student, fake_teacher, tmp_path, shadow_drain_s=0.5)
    config["log_store"]["shadow_share"] = 1.0
    gateway = start_gateway(config)
    before = received(fake_teacher)
    started = time.monotonic()
    answer = httpx.post(  # the student is sure: accepted; its shadow asks the slow teacher
        gateway.url + "/chat/completions",
        json={"model": "cascade", "messages": [{"role": "user", "content": "teacher=slow"}]},
        timeout=30,
    )
    assert answer.status_code == 200 and answer.headers["x-cascade-tier"] == "student"
    wait_until_received(fake_teacher, before + 1)
    stop(gateway.proc)
    assert time.monotonic() - started < 5  # not held for the teacher's 5 s
    [record] = records(config["log_store"]["url"])
    assert record.shadow and record.decision == "accept" and record.request_id == answer.headers["x-request-id"]
    assert record.teacher is None  # the record written when the answer went out, never completed


def test_a_crash_during_a_shadow_call_loses_no_record(
    start_gateway: GatewayFactory, fake_student: Server, fake_teacher: Server, tmp_path: Path
) -> None:
    config = config_for(fake_student, fake_teacher, tmp_path)
    config["log_store"].update(shadow_share=1.0, flush_interval_s=0.05)
    gateway = start_gateway(config)
    before = received(fake_teacher)
    answer = httpx.post(
        gateway.url + "/chat/completions",
        json={"model": "cascade", "messages": [{"role": "user", "content": "teacher=slow"}]},
        timeout=30,
    )
    assert answer.status_code == 200
    wait_until_received(fake_teacher, before + 1)
    wait_for_records(config["log_store"]["url"], 1)  # the record is stored before the shadow returns
    gateway.proc.send_signal(signal.SIGKILL)
    gateway.proc.wait()
    [record] = records(config["log_store"]["url"])
    assert record.shadow and record.request_id == answer.headers["x-request-id"]
