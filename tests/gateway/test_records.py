"""From an Exchange to its log record, in process: every routing outcome, signals computed from the one parsed
answer, the cost of every call, and no record before the body was read."""

from __future__ import annotations

import math

import pytest

from cascade.config import PriceSettings
from cascade.terms import Decision, Reason, Tier
from gateway.exchange import Exchange, TierCall
from gateway.records import to_log_record
from router.signals import FEATURE_NAMES

PRICE = PriceSettings(input_usd_per_mtok=1.0, output_usd_per_mtok=2.0)
LOGPROBS = [
    {"token": "Par", "logprob": math.log(0.9), "top_logprobs": [{"token": "Par", "logprob": math.log(0.9)}]},
    {"token": "is", "logprob": math.log(0.6), "top_logprobs": []},
]


def exchange(requested_model: str = "cascade") -> Exchange:
    return Exchange(
        "req-1", requested_model, {"model": requested_model, "messages": [{"role": "user", "content": "hi"}]}
    )


def answered(tier: Tier, text: str = "Paris") -> TierCall:
    call = TierCall(tier, f"{tier}-model", PRICE, prompt_tokens=10, completion_tokens=2)
    call.text, call.logprobs = text, [dict(item) for item in LOGPROBS]
    return call


def test_an_accepted_answer_carries_every_signal_from_the_parsed_tokens() -> None:
    ex = exchange()
    ex.reason, ex.tier, ex.student = Reason.CONFIDENT, Tier.STUDENT, answered(Tier.STUDENT)
    ex.signals["confidence"] = 0.8
    record = to_log_record(ex)
    assert record is not None
    assert (record.decision, record.reason, record.tier) == (Decision.ACCEPT, Reason.CONFIDENT, Tier.STUDENT)
    assert set(FEATURE_NAMES) <= set(record.signals) and record.signals["confidence"] == 0.8
    assert record.signals["min_prob"] == pytest.approx(0.6, rel=1e-6)
    assert record.student is not None and record.student.logprobs is ex.student.tokens  # parsed once, shared
    assert record.cost_usd == pytest.approx((10 + 2 * 2) / 1e6) and record.teacher is None


def test_an_escalation_pays_both_tiers_and_a_failed_one_has_no_tier() -> None:
    ex = exchange()
    ex.reason, ex.tier = Reason.NOT_CONFIDENT, Tier.TEACHER
    ex.student, ex.teacher = answered(Tier.STUDENT), answered(Tier.TEACHER)
    record = to_log_record(ex)
    assert record is not None and record.decision == Decision.ESCALATE and record.tier == Tier.TEACHER
    assert record.cost_usd == pytest.approx(2 * (10 + 2 * 2) / 1e6)
    ex.close("error", 502, "the teacher failed")
    failed = to_log_record(ex)
    assert failed is not None and failed.tier is None and failed.status == "error" and failed.http_status == 502


def test_a_request_refused_before_routing_is_not_routed_and_one_never_read_has_no_record() -> None:
    refused = exchange()
    refused.close("error", 429, "rate limited")
    record = to_log_record(refused)
    assert record is not None and (record.decision, record.reason) == (Decision.BYPASS, Reason.NOT_ROUTED)
    assert to_log_record(exchange(requested_model="")) is None


def test_the_features_the_router_decided_on_are_the_ones_logged_computed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from cascade.config import RouterSettings
    from gateway import exchange as exchange_module
    from gateway.routing import Routing
    from router.signals import features

    computed: list[int] = []
    monkeypatch.setattr(exchange_module, "features", lambda tokens: computed.append(1) or features(tokens))
    ex = exchange()
    ex.student = answered(Tier.STUDENT)
    judgement = Routing(RouterSettings(signal="min_prob", threshold=0.5)).judge(ex.request, ex.student)
    ex.reason, ex.tier = judgement.reason, Tier.STUDENT
    record = to_log_record(ex)
    assert record is not None and judgement.confidence == record.signals["min_prob"] and judgement.accept
    assert computed == [1]
