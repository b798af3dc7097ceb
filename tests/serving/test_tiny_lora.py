"""Runtime LoRA on the real tiny student: a peft adapter loaded over HTTP changes its answers, no restart.

The gateway routes only to the configured student and teacher names, so the adapter is asked for on the
student server directly, under its adapter name.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from openai import NotFoundError, OpenAI

from serving.models import PairPaths
from serving.vllm import load_lora_adapter, unload_lora_adapter
from tests.serving.helpers import Servers, build_adapter

pytestmark = pytest.mark.timeout(900)

MESSAGES = [{"role": "user", "content": "How do I freeze my card?"}]


def first_token_logprobs(client: OpenAI, model: str) -> dict[str, float]:
    completion = client.chat.completions.create(
        model=model, messages=MESSAGES, max_tokens=1, temperature=0.0, logprobs=True, top_logprobs=5
    )  # type: ignore[call-overload]
    assert completion.choices[0].logprobs is not None
    first = completion.choices[0].logprobs.content[0]
    return {candidate.token: candidate.logprob for candidate in first.top_logprobs}


def test_runtime_lora_adapter_loads_answers_and_unloads(
    tiny_servers: Servers, tiny_pair: PairPaths, tmp_path: Path
) -> None:
    adapter = build_adapter(tiny_pair.student.path, tmp_path / "adapter")
    student = tiny_servers.student
    client = OpenAI(base_url=student.base_url, api_key="unused")
    base = first_token_logprobs(client, student.served_name)

    load_lora_adapter(student.base_url, "tiny-adapter", adapter)
    try:
        assert "tiny-adapter" in {model.id for model in client.models.list()}
        answer = client.chat.completions.create(model="tiny-adapter", messages=MESSAGES, max_tokens=8)
        assert answer.model == "tiny-adapter" and answer.usage is not None
        assert answer.usage.completion_tokens > 0
        tuned = first_token_logprobs(client, "tiny-adapter")
        assert tuned != base
        assert first_token_logprobs(client, student.served_name) == pytest.approx(base)  # base is untouched
    finally:
        unload_lora_adapter(student.base_url, "tiny-adapter")

    with pytest.raises(NotFoundError):
        client.chat.completions.create(model="tiny-adapter", messages=MESSAGES, max_tokens=1)


def test_loading_a_missing_adapter_fails_with_the_server_message(tiny_servers: Servers, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="no-such-adapter"):
        load_lora_adapter(tiny_servers.student.base_url, "no-such-adapter", tmp_path / "missing")
    assert httpx.get(tiny_servers.student.health_url, timeout=5).status_code == 200
