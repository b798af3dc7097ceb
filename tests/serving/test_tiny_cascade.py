"""The gateway over real vLLM servers (tiny pair): real logprobs drive the accept / escalate decision."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from openai import OpenAI

from tests.serving.helpers import GatewayFactory, Servers

pytestmark = pytest.mark.timeout(900)  # the first test also waits for both vLLM servers to start

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
ASK = {"messages": MESSAGES, "max_tokens": 8, "temperature": 0.0}


@dataclass(frozen=True)
class Direct:
    """A greedy answer asked of one vLLM server directly, with its geometric-mean token probability."""

    content: str
    confidence: float


def ask_directly(base_url: str, model: str) -> Direct:
    client = OpenAI(base_url=base_url, api_key="unused")
    completion = client.chat.completions.create(model=model, logprobs=True, top_logprobs=1, **ASK)  # type: ignore[call-overload]
    choice = completion.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    logprobs = [token.logprob for token in choice.logprobs.content]
    return Direct(choice.message.content or "", math.exp(sum(logprobs) / len(logprobs)))


@pytest.fixture(scope="module")
def student(tiny_servers: Servers) -> Direct:
    return ask_directly(tiny_servers.student.base_url, tiny_servers.student.served_name)


@pytest.fixture(scope="module")
def teacher(tiny_servers: Servers) -> Direct:
    return ask_directly(tiny_servers.teacher.base_url, tiny_servers.teacher.served_name)


def gateway_client(tiny_gateway: GatewayFactory, threshold: float) -> OpenAI:
    url = tiny_gateway(CASCADE_ROUTER__SIGNAL="mean_prob", CASCADE_ROUTER__THRESHOLD=f"{threshold:.8f}")
    return OpenAI(base_url=url, api_key="unused")


def test_trained_teacher_is_surer_than_the_untrained_student(student: Direct, teacher: Direct) -> None:
    assert 0.0 < student.confidence < teacher.confidence < 1.0


def test_models_lists_the_alias_and_both_tiers(tiny_gateway: GatewayFactory, student: Direct) -> None:
    client = gateway_client(tiny_gateway, student.confidence / 2)
    assert {model.id for model in client.models.list()} == {"cascade", "tiny-student", "tiny-teacher"}


def test_student_answer_above_the_threshold_is_accepted(tiny_gateway: GatewayFactory, student: Direct) -> None:
    client = gateway_client(tiny_gateway, student.confidence / 2)
    raw = client.chat.completions.with_raw_response.create(model="cascade", **ASK)  # type: ignore[call-overload]
    completion = raw.parse()
    assert raw.headers["x-cascade-tier"] == "student"
    assert float(raw.headers["x-cascade-confidence"]) == pytest.approx(student.confidence, rel=1e-3)
    assert completion.model == "tiny-student"
    assert completion.choices[0].message.content == student.content


def test_student_answer_below_the_threshold_escalates_to_the_teacher(
    tiny_gateway: GatewayFactory, student: Direct, teacher: Direct
) -> None:
    client = gateway_client(tiny_gateway, min(1.0, student.confidence * 2))
    raw = client.chat.completions.with_raw_response.create(model="cascade", **ASK)  # type: ignore[call-overload]
    completion = raw.parse()
    assert raw.headers["x-cascade-tier"] == "teacher"
    assert float(raw.headers["x-cascade-confidence"]) == pytest.approx(student.confidence, rel=1e-3)
    assert completion.model == "tiny-teacher"
    assert completion.choices[0].message.content == teacher.content


def _streamed_text(client: OpenAI) -> tuple[str, str]:
    raw = client.chat.completions.with_raw_response.create(model="cascade", stream=True, **ASK)  # type: ignore[call-overload]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices)
    return raw.headers["x-cascade-tier"], text


def test_escalated_stream_passes_the_teacher_through(
    tiny_gateway: GatewayFactory, student: Direct, teacher: Direct
) -> None:
    tier, text = _streamed_text(gateway_client(tiny_gateway, min(1.0, student.confidence * 2)))
    assert (tier, text) == ("teacher", teacher.content)


def test_accepted_answer_is_replayed_as_a_stream(tiny_gateway: GatewayFactory, student: Direct) -> None:
    tier, text = _streamed_text(gateway_client(tiny_gateway, student.confidence / 2))
    assert (tier, text) == ("student", student.content)


def test_pinned_teacher_skips_the_router(tiny_gateway: GatewayFactory, student: Direct, teacher: Direct) -> None:
    client = gateway_client(tiny_gateway, student.confidence / 2)
    raw = client.chat.completions.with_raw_response.create(model="tiny-teacher", **ASK)  # type: ignore[call-overload]
    assert raw.headers["x-cascade-tier"] == "teacher"
    assert raw.parse().choices[0].message.content == teacher.content
