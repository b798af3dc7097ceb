"""The live evaluation's arithmetic on hand-built recordings with hand-computed answers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from router.agreement import label_match
from router.recorded import analyse, evaluate_need, live_set, share_for_quality, signal_need, threshold_sweep
from router.signals import FEATURE_NAMES


def student_price(prompt: int, completion: int) -> float:
    return prompt * 0.001 + completion * 0.002


def teacher_price(prompt: int, completion: int) -> float:
    return prompt * 0.01 + completion * 0.02


def row(i: int, logprob: float, student: str, teacher: str, gold: str = "yes") -> dict[str, Any]:
    def answer(text: str, lp: float) -> dict[str, Any]:
        return {
            "text": text,
            "logprobs": [lp],
            "top_logprobs": [[lp, lp - 2.0]],
            "prompt_tokens": 10,
            "completion_tokens": 1,
            "latency_s": 0.1,
        }

    return {
        "id": f"r{i}",
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": f"question {i}"}],
        "gold": gold,
        "student": answer(student, logprob),
        "teacher": answer(teacher, -0.1),
    }


# confidences exp(lp): 0.99, 0.905, 0.37, 0.135; the student is right on the two surest; the teacher on three
ROWS = [
    row(0, -0.01, "yes", "yes"),
    row(1, -0.1, "yes", "yes"),
    row(2, -1.0, "no", "yes"),
    row(3, -2.0, "no", "no"),
]


def data():  # type: ignore[no-untyped-def]
    return live_set(ROWS, label_match, student_price, teacher_price)


def test_labels_and_costs_come_from_the_recording() -> None:
    d = data()
    assert d.student_ok.tolist() == [True, True, False, False]
    assert d.teacher_ok.tolist() == [True, True, True, False]
    assert np.allclose(d.student_cost, 0.012) and np.allclose(d.teacher_cost, 0.12)
    assert np.allclose(d.confidence, np.exp([-0.01, -0.1, -1.0, -2.0]))


def test_the_mean_logprob_curve_share_and_cost_by_hand() -> None:
    d = data()
    result = evaluate_need(d, "mean_logprob", signal_need(d, "mean_logprob"))
    # escalate the least sure first: r3 (teacher also wrong: 0.5), then r2 (teacher right: 0.75)
    assert result.curve.quality.tolist() == [0.5, 0.5, 0.75, 0.75, 0.75]
    assert share_for_quality(result.curve, 0.75) == pytest.approx(0.5)
    # 95% of the teacher's 0.75 = 0.7125: 0.25 + 0.25 * (0.2125 / 0.25) on the segment from 0.5 to 0.75
    assert share_for_quality(result.curve, 0.95 * 0.75) == pytest.approx(0.4625)
    assert share_for_quality(result.curve, 0.9) is None
    # every request pays the student (0.012), half also pay the teacher (0.12): 72 USD per 1,000
    assert result.cost_per_1k_at(0.5) == pytest.approx(72.0)
    summary = result.summary(teacher_quality=0.75, teacher_only_cost_1k=120.0)
    assert summary["teacher_quality_100%"]["cost_reduction_vs_teacher_only"] == pytest.approx(120 / 72)
    assert summary["best_quality"] == 0.75 and summary["best_quality_teacher_share"] == 0.5


def test_a_pre_generation_router_does_not_pay_the_student_for_what_it_escalates() -> None:
    d = data()
    result = evaluate_need(d, "pre", signal_need(d, "mean_logprob"), pre_generation=True)
    assert result.cost_per_1k_at(0.5) == pytest.approx(1000 * (0.5 * 0.012 + 0.5 * 0.12))


def test_entropy_and_length_escalate_the_larger_values_first() -> None:
    d = data()
    entropy = d.features[:, FEATURE_NAMES.index("mean_entropy")]
    assert np.array_equal(signal_need(d, "mean_entropy"), entropy)
    assert np.array_equal(signal_need(d, "prob_q10"), -d.features[:, FEATURE_NAMES.index("prob_q10")])


def test_threshold_sweep_matches_the_serving_rule() -> None:
    points = threshold_sweep(data(), [0.0, 0.5, 1.0])
    assert points[0] == {"threshold": 0.0, "teacher_share": 0.0, "quality": 0.5, "cost_per_1k_usd": pytest.approx(12.0)}
    assert points[1]["teacher_share"] == 0.5 and points[1]["quality"] == 0.75
    assert points[1]["cost_per_1k_usd"] == pytest.approx(72.0)
    assert points[2]["teacher_share"] == 1.0 and points[2]["cost_per_1k_usd"] == pytest.approx(132.0)


def test_analyse_reports_the_baselines_and_skips_learned_routers_on_tiny_sets() -> None:
    summary, _ = analyse(data())
    assert summary["student_quality"] == 0.5 and summary["teacher_quality"] == 0.75
    assert summary["oracle_quality"] == 0.75
    assert summary["teacher_only_cost_per_1k_usd"] == pytest.approx(120.0)
    assert summary["routers"]["oracle"]["teacher_quality_100%"]["teacher_share"] == pytest.approx(0.25)
    assert "too few" in summary["learned_routers_note"]
    assert not any(name.startswith("post-hoc") for name in summary["routers"])


def synthetic(n: int, informative: bool, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        lp = float(rng.uniform(-3, 0))
        p_right = math.exp(lp) if informative else 0.5
        rows.append(row(i, lp, "yes" if rng.uniform() < p_right else "no", "yes"))
    return rows


def test_the_learned_router_is_scored_out_of_fold() -> None:
    """On labels that are noise, an in-sample fit would look better than random; out of fold it must not."""
    noise = live_set(synthetic(300, informative=False), label_match, student_price, teacher_price)
    summary, _ = analyse(noise)
    assert 0.44 < summary["routers"]["post-hoc logreg (signals)"]["apgr"] < 0.56
    assert summary["routers"]["oracle"]["apgr"] > 0.7
    signal = live_set(synthetic(300, informative=True), label_match, student_price, teacher_price)
    summary, _ = analyse(signal)
    best_signal = summary["routers"]["signal mean_logprob"]["apgr"]
    assert best_signal > 0.58  # the informative set is learnable ...
    assert summary["routers"]["post-hoc logreg (signals)"]["apgr"] > best_signal - 0.02  # ... and it is learnt
