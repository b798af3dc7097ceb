"""Calibration meets its target on synthetic data with a known truth, and refuses when it cannot."""

from __future__ import annotations

import numpy as np
import pytest

from router.calibration import CalibrationError, calibrate, clopper_pearson, cp_upper, min_certifiable


def true_risk(threshold: float) -> float:
    """Scores ~ U(0, 1) and P(student right | s) = 0.6 + 0.4 s: the disagreement rate among s >= t is
    the mean of 0.4 (1 - s) over [t, 1] = 0.2 (1 - t)."""
    return 0.2 * (1 - threshold)


def sample(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    scores = rng.uniform(0, 1, n)
    ok = rng.uniform(0, 1, n) < 0.6 + 0.4 * scores
    return scores, ok


def test_quality_target_holds_with_the_stated_confidence() -> None:
    """Over many independent calibration sets, the chosen threshold's true risk exceeds the target in at
    most about delta of them (binomial slack for 200 trials), and the thresholds are not needlessly strict."""
    rng = np.random.default_rng(7)
    target, confidence = 0.9, 0.9  # risk <= 0.1  <=>  t >= 0.5 in the true model
    trials, violations, thresholds = 200, 0, []
    for _ in range(trials):
        scores, ok = sample(2000, rng)
        result = calibrate(scores, ok, target_quality=target, confidence=confidence)
        thresholds.append(result.threshold)
        violations += true_risk(result.threshold) > 1 - target
        assert result.certified_quality == target
    # expected <= 20 violations; 33 is 3 sd above that
    assert violations <= 33
    # not trivially conservative: the typical threshold is near the true boundary 0.5
    assert 0.5 < float(np.median(thresholds)) < 0.65


def test_higher_target_needs_a_stricter_threshold() -> None:
    scores, ok = sample(5000, np.random.default_rng(1))
    loose = calibrate(scores, ok, target_quality=0.85)
    strict = calibrate(scores, ok, target_quality=0.95)
    assert strict.threshold > loose.threshold
    assert strict.escalation_rate > loose.escalation_rate
    assert strict.escalation_interval.low <= strict.escalation_rate <= strict.escalation_interval.high
    assert (
        strict.accepted_quality_pointwise_interval.low
        <= strict.accepted_quality
        <= strict.accepted_quality_pointwise_interval.high
    )


def test_refuses_when_the_set_is_too_small_to_certify() -> None:
    # 59 answers with zero errors are needed for 95% at 95% confidence: 40 perfect ones are not enough
    assert min_certifiable(0.05, 0.05) == 59
    with pytest.raises(CalibrationError, match="at least 59 accepted answers"):
        calibrate(np.linspace(0, 1, 40), np.ones(40, dtype=bool), target_quality=0.95)


def test_refuses_when_no_threshold_meets_the_target() -> None:
    rng = np.random.default_rng(3)
    scores, ok = rng.uniform(size=500), rng.uniform(size=500) < 0.5  # a coin flip at every score
    with pytest.raises(CalibrationError, match="no threshold certifies"):
        calibrate(scores, ok, target_quality=0.95)


def test_perfect_student_is_accepted_entirely() -> None:
    result = calibrate(np.linspace(0, 1, 500), np.ones(500, dtype=bool), target_quality=0.95)
    assert result.n_accepted == 500 and result.escalation_rate == 0.0
    assert result.accepted_quality == 1.0 and result.certified_quality == 0.95
    assert result.accepted_quality_pointwise_interval.low == pytest.approx(1 - clopper_pearson(0, 500, 0.95).high)


def test_escalation_budget_holds_and_is_used() -> None:
    rng = np.random.default_rng(5)
    budget, violations = 0.3, 0
    for _ in range(200):
        scores, ok = sample(1000, rng)
        result = calibrate(scores, ok, max_escalation=budget, confidence=0.9)
        violations += result.threshold > budget  # true escalation rate of t is t for U(0, 1) scores
        assert result.escalation_rate <= budget
    assert violations <= 35  # expected <= 20 of 200
    assert result.threshold > 0.25  # spends most of the budget


def test_conflicting_targets_are_refused() -> None:
    scores, ok = sample(3000, np.random.default_rng(2))
    with pytest.raises(CalibrationError, match="conflict"):
        calibrate(scores, ok, target_quality=0.9, max_escalation=0.3)  # needs t >= 0.5: 50% escalated


def test_ties_are_accepted_or_escalated_together() -> None:
    scores = np.repeat([0.2, 0.5, 0.9], 200)
    ok = np.concatenate([np.zeros(200, bool), np.ones(400, bool)])
    result = calibrate(scores, ok, target_quality=0.95)
    assert result.threshold == 0.5 and result.n_accepted == 400


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(CalibrationError, match="give target_quality or max_escalation"):
        calibrate(np.ones(10), np.ones(10, bool))
    with pytest.raises(CalibrationError, match="finite"):
        calibrate(np.array([np.nan, 1.0]), np.ones(2, bool), target_quality=0.9)
    with pytest.raises(CalibrationError, match="equal length"):
        calibrate(np.ones(3), np.ones(2, bool), target_quality=0.9)


def test_clopper_pearson_matches_known_values() -> None:
    # 0 of 10: the 95% two-sided upper limit is 1 - 0.025 ** (1 / 10)
    assert clopper_pearson(0, 10, 0.95).high == pytest.approx(1 - 0.025 ** (1 / 10))
    assert clopper_pearson(10, 10, 0.95).low == pytest.approx(0.025 ** (1 / 10))
    assert cp_upper(0, 59, 0.95) < 0.05 < cp_upper(0, 58, 0.95)
