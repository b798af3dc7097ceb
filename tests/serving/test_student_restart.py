"""A promoted student restarted under traffic: promotion authenticates to a vLLM started with a key, the
restarted server forgets the adapter, the gateway loads it again, and no request fails meanwhile."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from distill.promote import Registry, Target, promote, rollback
from serving.models import PairPaths
from serving.process import wait_ready
from serving.vllm import VllmOptions, VllmServer, split_cores
from tests.serving.helpers import LORA_RANK, Servers, build_adapter, free_port, say, start_gateway

pytestmark = pytest.mark.timeout(900)
STUDENT_KEY = "student-key-for-restart-tests"
ADMIN_KEY = "admin-key-for-restart-0123456789"


@pytest.fixture(scope="module")
def keyed_student(tiny_pair: PairPaths, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """The tiny student with runtime LoRA and ``--api-key``, as every deploy profile starts it."""
    folder = tmp_path_factory.mktemp("keyed-student")
    options = VllmOptions(
        model_dir=tiny_pair.student.path,
        served_name=tiny_pair.student.name,
        port=free_port(),
        log_path=folder / "student.log",
        cache_root=folder / "vllm-cache",
        enforce_eager=True,
        max_model_len=1024,
        kv_cache_gib=1,
        max_lora_rank=LORA_RANK,
        cpu_cores=split_cores(2)[0],  # beside the tiny pair: the student's cores, not the busy teacher's
        extra_args=("--api-key", STUDENT_KEY),
    )
    server = VllmServer("keyed-student", options)
    server.start()
    try:
        wait_ready([server], 600, say)
        yield server
    finally:
        server.stop()


def served(options: VllmOptions) -> set[str]:
    response = httpx.get(f"{options.base_url}/models", headers={"authorization": f"Bearer {STUDENT_KEY}"}, timeout=10)
    assert response.status_code == 200, response.text
    return {model["id"] for model in response.json()["data"]}


def test_promote_restart_and_every_request_is_answered(
    keyed_student: VllmServer, tiny_servers: Servers, tiny_pair: PairPaths, tmp_path: Path
) -> None:
    student = keyed_student.options
    gateway = start_gateway(
        Servers(student, tiny_servers.teacher),
        tmp_path / "gateway",
        CASCADE_STUDENT__API_KEY=STUDENT_KEY,
        CASCADE_SERVER__ADMIN_KEY=ADMIN_KEY,
        CASCADE_SERVER__HEALTH_CHECK_S="1",
        CASCADE_ROUTER__THRESHOLD="0.0",  # the student's answers are always accepted: its tier is visible
    )
    try:
        root = gateway.ready_url.removesuffix("/healthz")
        assert httpx.get(f"{student.base_url}/models", timeout=10).status_code == 401  # the key is required
        registry = Registry(tmp_path / "registry")
        target = Target(student.base_url, student.served_name, True, root, ADMIN_KEY, STUDENT_KEY)
        version = promote(registry, build_adapter(tiny_pair.student.path, tmp_path / "adapter"), target, "lora", 3, {})
        assert version.model_name in served(student)

        def ask() -> httpx.Response:
            body = {"model": "cascade", "messages": [{"role": "user", "content": "card"}], "max_tokens": 4}
            return httpx.post(f"{root}/v1/chat/completions", json=body, timeout=60)

        first = ask()
        assert first.status_code == 200 and first.json()["model"] == version.model_name

        keyed_student.stop()
        keyed_student.start()  # the same port; a new server that serves the base model only
        answers: list[httpx.Response] = []
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            answers.append(ask())
            last = answers[-1]
            if last.headers.get("x-cascade-tier") == "student" and last.json().get("model") == version.model_name:
                break
            time.sleep(0.5)
        assert [a.status_code for a in answers if a.status_code != 200] == []
        assert answers[-1].json()["model"] == version.model_name, "the adapter never came back"
        assert any(a.headers["x-cascade-tier"] == "teacher" for a in answers)  # the teacher answered meanwhile
        assert version.model_name in served(student)
        metrics = httpx.get(f"{root}/metrics", timeout=10).text
        assert 'cascade_student_adapter_reloads_total{outcome="ok"}' in metrics

        # A second promotion, then rollback to the first: it asks the keyed server what it serves, too.
        second = promote(registry, tmp_path / "adapter", target, "lora", 3, {})
        rolled, now = rollback(registry, target)
        assert rolled.name == second.name and now is not None and now.name == version.name
        state = httpx.get(f"{root}/admin/state", headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
        assert state.json()["student_model"] == version.model_name
        assert state.json()["student_adapter"]["path"] == str(version.path.resolve())
    finally:
        gateway.stop()
