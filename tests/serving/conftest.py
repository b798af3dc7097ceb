"""Real vLLM servers on the tiny pair, started once per test session, and gateways in front of them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from serving.models import PairPaths, prepare_pair
from serving.process import ManagedProcess, stop_all
from tests.serving.helpers import LORA_RANK, MODELS_DIR, GatewayFactory, Servers, say, start_gateway, start_pair


@pytest.fixture(scope="session")
def tiny_pair() -> PairPaths:
    return prepare_pair("tiny", MODELS_DIR, say)


@pytest.fixture(scope="session")
def tiny_servers(tiny_pair: PairPaths, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    student, teacher = start_pair(tiny_pair, tmp_path_factory.mktemp("tiny-vllm"), LORA_RANK)
    yield Servers(student.options, teacher.options)
    stop_all([student, teacher])


@pytest.fixture(scope="session")
def tiny_gateway(tiny_servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayFactory]:
    """Start (once per distinct setting) a gateway over the tiny servers; returns its base URL."""
    running: dict[tuple[tuple[str, str], ...], tuple[ManagedProcess, str]] = {}

    def gateway(**env: str) -> str:
        key = tuple(sorted(env.items()))
        if key not in running:
            process = start_gateway(tiny_servers, tmp_path_factory.mktemp("gateway"), **env)
            running[key] = (process, process.ready_url.removesuffix("/healthz") + "/v1")
        return running[key][1]

    yield gateway
    stop_all([process for process, _ in running.values()], timeout_s=10)
