"""The shadow sampler in process, against the fake teacher on loopback: its own bound (never shared with limit
releases), skips counted, records written pending then completed, and one cost in the metrics and the record."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestServer

from cascade.config import PriceSettings, UpstreamSettings
from cascade.terms import Reason, Tier
from gateway.exchange import Exchange, TierCall
from gateway.metrics import Metrics
from gateway.records import to_log_record
from gateway.shadows import ShadowSampler
from gateway.upstream import Upstream
from logstore import LogRecord
from router.agreement import exact_match
from router.audit import audit_draw
from tests.fake_upstream import make_app

STUDENT_PRICE = PriceSettings(input_usd_per_mtok=1.0, output_usd_per_mtok=2.0)
TEACHER_PRICE = PriceSettings(input_usd_per_mtok=10.0, output_usd_per_mtok=20.0)


def accepted(i: int, prompt: str) -> Exchange:
    exchange = Exchange(f"req-{i}", "cascade", {"model": "cascade", "messages": [{"role": "user", "content": prompt}]})
    exchange.reason, exchange.tier = Reason.CONFIDENT, Tier.STUDENT
    exchange.student = TierCall(Tier.STUDENT, "student-model", STUDENT_PRICE, prompt_tokens=10, completion_tokens=5)
    exchange.student.text = "Answer from student."
    return exchange


def metric(metrics: Metrics, name: str) -> float:
    return sum(s.value for f in metrics.registry.collect() for s in f.samples if s.name == name)


async def run_sampler(prompts: list[str], max_in_flight: int, drain_s: float) -> tuple[list[LogRecord], Metrics]:
    server = TestServer(make_app("teacher-model", "teacher"), host="127.0.0.1")
    await server.start_server()
    settings = UpstreamSettings(url=str(server.make_url("/v1")), model="teacher-model", price=TEACHER_PRICE)
    teacher = Upstream(Tier.TEACHER, settings)
    await teacher.start()
    metrics = Metrics(TEACHER_PRICE)
    written: list[LogRecord] = []

    def write(exchange: Exchange) -> None:
        record = to_log_record(exchange)
        assert record is not None
        written.append(record)

    sampler = ShadowSampler(teacher, 1.0, exact_match, metrics, write, max_in_flight)
    try:
        for i, prompt in enumerate(prompts):
            sampler.offer(accepted(i, prompt))
        await sampler.drain(drain_s)
    finally:
        await teacher.close()
        await server.close()
    return written, metrics


def test_shadows_beyond_the_bound_are_skipped_and_counted() -> None:
    written, metrics = asyncio.run(run_sampler(["teacher=slow"] * 5, max_in_flight=2, drain_s=0.2))
    assert metric(metrics, "cascade_shadows_skipped_total") == 3
    assert [(r.request_id, r.shadow, r.teacher) for r in written] == [("req-0", True, None), ("req-1", True, None)]
    assert metric(metrics, "cascade_shadow_agreement_total") == 0  # cancelled at the drain: they stay pending


def test_a_shadow_is_paid_for_once_in_the_record_and_the_metrics() -> None:
    written, metrics = asyncio.run(run_sampler(["hello", "hello"], max_in_flight=16, drain_s=10))
    assert metric(metrics, "cascade_shadows_skipped_total") == 0
    done = [r for r in written if r.teacher is not None]
    assert len(written) == 4 and len(done) == 2  # each: pending, then completed
    for record in done:
        assert record.shadow and record.teacher is not None and record.teacher.completion_tokens > 0
        teacher_cost = (10 * record.teacher.prompt_tokens + 20 * record.teacher.completion_tokens) / 1e6
        assert record.cost_usd == pytest.approx((10 + 2 * 5) / 1e6 + teacher_cost)
    shadow_spend = sum(r.cost_usd or 0 for r in done) - 2 * (10 + 2 * 5) / 1e6  # the students' part is not metered here
    assert metric(metrics, "cascade_cost_usd_total") == pytest.approx(shadow_spend)
    assert metric(metrics, "cascade_shadow_agreement_total") == 2


def test_only_accepted_answers_are_shadowed() -> None:
    async def offer() -> list[bool]:
        sampler = ShadowSampler(None, 1.0, exact_match, Metrics(TEACHER_PRICE), lambda e: None)  # type: ignore[arg-type]
        escalated, failed = accepted(0, "x"), accepted(1, "x")
        escalated.reason = Reason.NOT_CONFIDENT
        failed.outcome = "error"
        return [sampler.offer(escalated), sampler.offer(failed)]

    assert asyncio.run(offer()) == [False, False]


def test_the_audit_sample_is_the_requests_whose_draw_is_below_the_share() -> None:
    """Membership is the request id's hash draw alone, the rule calibration applies to the log (router/audit.py)."""

    async def offer() -> list[bool]:
        sampler = ShadowSampler(None, 0.3, exact_match, Metrics(TEACHER_PRICE), lambda e: None, max_in_flight=1000)  # type: ignore[arg-type]
        sampler._shadow = lambda exchange: asyncio.sleep(0)  # type: ignore[method-assign]  # no teacher here
        return [sampler.offer(accepted(i, "x")) for i in range(400)]

    offered = asyncio.run(offer())
    assert offered == [audit_draw(f"req-{i}") < 0.3 for i in range(400)]
    assert 80 < sum(offered) < 160
