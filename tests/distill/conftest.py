"""Session fixtures: the tiny student model, a real vLLM student with runtime LoRA, a real Pushgateway."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serving.models import prepare_pair
from serving.process import wait_ready
from serving.vllm import VllmOptions, VllmServer, split_cores
from tests.serving.helpers import LORA_RANK, MODELS_DIR, free_port, say


@pytest.fixture(scope="session")
def tiny_student() -> Path:
    return prepare_pair("tiny", MODELS_DIR, say).student.path


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_student: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_student)


STUDENT_KEY = "student-server-key-for-tests"


@pytest.fixture(scope="session")
def lora_student(tiny_student: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmOptions]:
    """The tiny student served by vLLM with runtime LoRA loading and an API key (``STUDENT_KEY``), as the
    deploy profiles serve a student."""
    folder = tmp_path_factory.mktemp("distill-vllm")
    options = VllmOptions(
        model_dir=tiny_student,
        served_name="tiny-student",
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
    server = VllmServer("student", options)
    server.start()
    try:
        wait_ready([server], 600, say)
        yield options
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pushgateway() -> Iterator[str]:
    binary = shutil.which("prometheus-pushgateway")
    assert binary, "prometheus-pushgateway is not installed (make tools)"
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, "prometheus-pushgateway exited at start"
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "prometheus-pushgateway did not become ready"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
