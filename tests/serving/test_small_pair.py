"""The `small` pair (SmolLM2-135M student, Qwen2.5-Coder-0.5B teacher) answers a factual question sensibly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI

from serving.models import prepare_pair
from serving.process import stop_all
from tests.serving.helpers import MODELS_DIR, Servers, say, start_gateway, start_pair

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def small_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    paths = prepare_pair("small", MODELS_DIR, say)
    student, teacher = start_pair(paths, tmp_path_factory.mktemp("small-vllm"), lora_rank=None)
    yield Servers(student.options, teacher.options)
    stop_all([student, teacher])


def test_capital_of_france_through_the_cascade(small_servers: Servers, tmp_path: Path) -> None:
    gateway = start_gateway(small_servers, tmp_path)
    try:
        client = OpenAI(base_url=gateway.ready_url.removesuffix("/healthz") + "/v1", api_key="unused")
        raw = client.chat.completions.with_raw_response.create(
            model="cascade",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=32,
            temperature=0.0,
        )
        answer = raw.parse().choices[0].message.content or ""
        say(f"small pair: {raw.headers['x-cascade-tier']} answered {answer!r}")
        assert raw.headers["x-cascade-tier"] in ("student", "teacher")
        assert "Paris" in answer
    finally:
        gateway.stop()
