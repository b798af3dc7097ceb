"""The routing vocabulary: each reason implies one decision, and the members are the strings stored and shown."""

from __future__ import annotations

import orjson

from cascade.terms import Decision, Reason, Tier


def test_each_reason_implies_its_decision() -> None:
    assert {reason.value: reason.decision.value for reason in Reason} == {
        "confident": "accept",
        "not_confident": "escalate",
        "invalid_tool_call": "escalate",
        "invalid_json": "escalate",
        "pre_routed": "escalate",
        "student_down": "escalate",
        "student_context": "escalate",
        "student_refused": "escalate",
        "pinned": "bypass",
        "not_routed": "bypass",
    }
    assert [r.value for r in Reason if r.escalates] == [
        "not_confident",
        "invalid_tool_call",
        "invalid_json",
        "student_down",
        "student_context",
        "student_refused",
    ]


def test_members_are_the_strings_the_log_json_and_metrics_carry() -> None:
    assert Reason.CONFIDENT == "confident" and {"accept": 1}.get(Decision.ACCEPT) == 1
    assert orjson.dumps([Tier.STUDENT, Reason.PINNED]) == b'["student","pinned"]' and f"{Tier.TEACHER}" == "teacher"
