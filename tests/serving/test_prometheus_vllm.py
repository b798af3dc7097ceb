"""The dashboards' vLLM panels return data from a real Prometheus scraping a real vLLM server and gateway."""

from __future__ import annotations

import time

import openai
import pytest

from tests.monitoring.prom import panel_queries, queries_without_data, running_prometheus
from tests.serving.helpers import GatewayFactory, Servers


def test_every_vllm_panel_query_returns_data(
    tiny_servers: Servers, tiny_gateway: GatewayFactory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    gateway = tiny_gateway()
    targets = {
        "cascade-gateway": gateway.removeprefix("http://").removesuffix("/v1"),
        "vllm-student": tiny_servers.student.base_url.removeprefix("http://").removesuffix("/v1"),
        "vllm-teacher": tiny_servers.teacher.base_url.removeprefix("http://").removesuffix("/v1"),
    }
    client = openai.OpenAI(base_url=gateway, api_key="unused", max_retries=0)
    with running_prometheus(targets, tmp_path_factory.mktemp("prometheus")) as prometheus:
        end = time.monotonic() + 8  # traffic across several 1 s scrapes, so every rate has two points
        while time.monotonic() < end:
            for stream in (False, True):
                answer = client.chat.completions.create(
                    model="cascade", messages=[{"role": "user", "content": "hello"}], max_tokens=8, stream=stream
                )
                if stream:
                    list(answer)  # type: ignore[arg-type]
        missing = queries_without_data(prometheus, panel_queries(vllm=True))
    assert not missing, "queries without data:\n" + "\n".join(missing)
