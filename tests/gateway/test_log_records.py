"""Every routed request leaves one log record, written off the client's clock, that agrees with the metrics."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from logstore import stats
from tests.conftest import STUDENT_MODEL, GatewayFactory, Server, drop_schema, gateway_config
from tests.gateway.helpers import metric_sum, wait_for_records


@pytest.fixture
def logged_gateway(
    start_gateway: GatewayFactory, fake_student: Server, fake_teacher: Server, tmp_path
) -> tuple[Server, str]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'log.db'}"
    config = gateway_config(fake_student.url, fake_teacher.url)
    config["student"]["price"] = {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0}
    config["teacher"].update(price={"input_usd_per_mtok": 10.0, "output_usd_per_mtok": 20.0}, log_top_logprobs=2)
    config["log_store"] = {"url": url, "spool_dir": str(tmp_path / "spool"), "flush_interval_s": 0.05}
    (tmp_path / "prices.yaml").write_text(yaml.safe_dump(config))
    return start_gateway(config), url


def test_each_routed_request_has_one_record(logged_gateway: tuple[Server, str], tmp_path: Path) -> None:
    gateway, url = logged_gateway
    config_path = tmp_path / "prices.yaml"
    client = openai.OpenAI(base_url=gateway.url, api_key="unused", max_retries=0)
    ids = {}
    for key, model, text, stream in (
        ("accepted", "cascade", "hello", False),
        ("escalated", "cascade", "student=unsure", False),
        ("escalated_stream", "cascade", "student=unsure", True),
        ("pinned", STUDENT_MODEL, "hello", False),
        ("degraded", "cascade", "student=unsure teacher=fail", False),
    ):
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": text}], stream=stream
        )
        if stream:
            list(raw.parse())
        ids[key] = raw.headers["x-request-id"]
    with pytest.raises(openai.BadRequestError) as refused:  # refused before routing: recorded as such
        client.chat.completions.create(model="cascade", messages=[{"role": "user", "content": "x"}], n=2)
    ids["refused"] = refused.value.response.headers["x-request-id"]

    by_id = {record.request_id: record for record in wait_for_records(url, 6)}
    assert set(by_id) == set(ids.values())
    assert all(record.audit_share == 0.0 for record in by_id.values())  # shadow_share 0: nothing audited
    not_routed = by_id[ids["refused"]]
    assert (not_routed.decision, not_routed.reason, not_routed.tier) == ("bypass", "not_routed", None)
    assert (not_routed.status, not_routed.http_status) == ("error", 400) and "n > 1" in (not_routed.error or "")
    assert not_routed.student is None and not_routed.teacher is None and not_routed.cost_usd == 0

    accepted = by_id[ids["accepted"]]
    assert (accepted.decision, accepted.reason, accepted.tier) == ("accept", "confident", "student")
    assert accepted.messages == [{"role": "user", "content": "hello"}]
    assert accepted.student is not None and accepted.student.text == "Answer from student."
    assert accepted.student.logprobs is not None and len(accepted.student.logprobs) == 4
    assert accepted.student.logprobs.k == 3  # the router's top_logprobs
    assert accepted.teacher is None
    assert accepted.signals["confidence"] > 0.9
    assert {"mean_logprob", "prob_q10", "mean_entropy", "first_margin", "length"} <= set(accepted.signals)

    escalated = by_id[ids["escalated"]]
    assert (escalated.decision, escalated.reason, escalated.tier) == ("escalate", "not_confident", "teacher")
    assert escalated.teacher is not None and escalated.teacher.text == "Answer from teacher."
    assert escalated.teacher.logprobs is not None and escalated.teacher.logprobs.k == 2  # asked for the log
    assert escalated.cost_usd == pytest.approx((6 * 1 + 4 * 2 + 6 * 10 + 4 * 20) / 1e6)

    streamed = by_id[ids["escalated_stream"]]
    assert streamed.stream and streamed.teacher is not None
    assert streamed.teacher.text == "Answer from teacher."
    assert streamed.teacher.completion_tokens == 4 and streamed.teacher.logprobs is not None

    assert by_id[ids["pinned"]].decision == "bypass"
    degraded = by_id[ids["degraded"]]
    assert degraded.degraded == "teacher-unavailable" and degraded.tier == "student"

    summary = asyncio.run(stats(url))
    metrics_cost = metric_sum(gateway, "cascade_cost_usd_total")
    assert summary.cost_usd == pytest.approx(metrics_cost)
    assert summary.requests == 6  # the refused one included
    # `cascade log stats --cost` recomputes the spend from the logged token counts and the config's prices.
    command = [
        sys.executable,
        "-m",
        "cascade.cli",
        "log",
        "stats",
        "--cost",
        "--config",
        str(config_path),
        "--url",
        url,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["cost_recomputed_usd"]["total"] == pytest.approx(metrics_cost)


def test_client_did_not_ask_for_the_logged_teacher_logprobs(logged_gateway: tuple[Server, str]) -> None:
    gateway, _ = logged_gateway
    client = openai.OpenAI(base_url=gateway.url, api_key="unused", max_retries=0)
    answer = client.chat.completions.create(model="cascade", messages=[{"role": "user", "content": "student=unsure"}])
    assert answer.choices[0].logprobs is None
    chunks = list(
        client.chat.completions.create(
            model="cascade", messages=[{"role": "user", "content": "student=unsure"}], stream=True
        )
    )
    assert all(chunk.choices[0].logprobs is None for chunk in chunks if chunk.choices)


def test_shadow_share_sends_accepted_requests_to_the_teacher_too(
    start_gateway: GatewayFactory, fake_student: Server, fake_teacher: Server, tmp_path: Path
) -> None:
    """Shadows are logged in place and paid for once: the log's cost_usd and the metrics' spend agree."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'log.db'}"
    config = gateway_config(fake_student.url, fake_teacher.url)
    config["student"]["price"] = {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0}
    config["teacher"]["price"] = {"input_usd_per_mtok": 10.0, "output_usd_per_mtok": 20.0}
    config["log_store"] = {
        "url": url,
        "spool_dir": str(tmp_path / "spool"),
        "flush_interval_s": 0.05,
        "shadow_share": 1.0,
    }
    gateway = start_gateway(config)
    for _ in range(3):
        raw = httpx.post(
            gateway.url + "/chat/completions",
            timeout=30,
            json={"model": "cascade", "messages": [{"role": "user", "content": "hello"}]},
        )
        assert raw.headers["x-cascade-tier"] == "student"
    deadline = time.monotonic() + 10
    logged = wait_for_records(url, 3)
    while any(r.teacher is None for r in logged):  # written at once, then completed by the shadow
        assert all(r.shadow for r in logged) and time.monotonic() < deadline
        time.sleep(0.1)
        logged = wait_for_records(url, 3)
    assert len(logged) == 3  # completed in place: one record per request
    for record in logged:
        assert record.shadow and record.decision == "accept" and record.tier == "student"
        assert record.audit_share == 1.0  # every request is in the audit sample
        assert record.teacher is not None and record.teacher.text == "Answer from teacher."
        assert record.student is not None and record.cost_usd is not None
        teacher_cost = (10 * record.teacher.prompt_tokens + 20 * record.teacher.completion_tokens) / 1e6
        student_cost = (record.student.prompt_tokens + 2 * record.student.completion_tokens) / 1e6
        assert teacher_cost > 0 and record.cost_usd == pytest.approx(student_cost + teacher_cost)
    assert sum(r.cost_usd or 0 for r in logged) == pytest.approx(metric_sum(gateway, "cascade_cost_usd_total"))
    assert metric_sum(gateway, "cascade_shadow_agreement_total") == 3  # "from student" vs "from teacher": no
    text = httpx.get(gateway.root + "/metrics").text
    assert 'cascade_shadow_agreement_total{agree="false"} 3.0' in text
    assert metric_sum(gateway, "cascade_shadows_skipped_total") == 0


def test_the_clients_request_id_is_kept_beside_the_gateways_never_as_the_key(
    start_gateway: GatewayFactory, fake_student: Server, fake_teacher: Server
) -> None:
    """Two requests with one x-request-id leave two records; a long or hostile id and a NUL in a message are
    stored (in PostgreSQL, which refuses NULs in text) instead of failing the batch."""
    schema = f"ids_{uuid.uuid4().hex[:10]}"
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/test?schema={schema}"
    config = gateway_config(fake_student.url, fake_teacher.url)
    config["log_store"] = {"url": url, "flush_interval_s": 0.05}
    gateway = start_gateway(config)
    try:
        sent = []
        for header, text in (
            ("same-id", "hello"),
            ("same-id", "hello again"),
            ("sp aced\tout" + "x" * 200, "a NUL \x00 inside"),
        ):
            response = httpx.post(
                gateway.url + "/chat/completions",
                json={"model": "cascade", "messages": [{"role": "user", "content": text}]},
                headers={"x-request-id": header},
                timeout=30,
            )
            assert response.status_code == 200
            sent.append(response.headers["x-request-id"])
        logged = {record.request_id: record for record in wait_for_records(url, 3)}
        assert set(logged) == set(sent) and len(set(sent)) == 3
        assert [logged[i].client_request_id for i in sent] == ["same-id", "same-id", "spacedout" + "x" * 119]
        assert logged[sent[2]].messages == [{"role": "user", "content": "a NUL \ufffd inside"}]
    finally:
        drop_schema(schema)


def test_a_stream_without_its_usage_chunk_is_still_counted(logged_gateway: tuple[Server, str]) -> None:
    """An upstream dying mid-stream, or a client leaving after the last delta, must not log 0 tokens and $0."""
    gateway, url = logged_gateway
    estimated = metric_sum(gateway, "cascade_usage_estimated_total")
    body = {"model": "teacher-model", "stream": True}
    with httpx.stream(
        "POST",
        gateway.url + "/chat/completions",
        json={**body, "messages": [{"role": "user", "content": "teacher=die"}]},
        timeout=30,
    ) as died:
        assert "error" in died.read().decode()  # the client is told its answer was cut
    with httpx.stream(
        "POST",
        gateway.url + "/chat/completions",
        json={**body, "messages": [{"role": "user", "content": "teacher=hold"}]},
        timeout=30,
    ) as held:
        for line in held.iter_lines():  # the whole answer; then the client hangs up before the usage chunk
            if '"finish_reason":"stop"' in line:
                break
    found = {record.messages[0]["content"]: record for record in wait_for_records(url, 2)}  # type: ignore[index]
    for script, tokens in (("teacher=die", 2), ("teacher=hold", 4)):
        teacher = found[script].teacher
        assert teacher is not None and teacher.completion_tokens == tokens, script
        assert teacher.prompt_tokens and found[script].cost_usd, script
    deadline = time.monotonic() + 5
    while metric_sum(gateway, "cascade_usage_estimated_total") < estimated + 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
