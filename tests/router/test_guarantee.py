"""Is the certificate true? Monte Carlo checks of calibration from the log, through the project's own code.

Each test simulates many days of a gateway's traffic with a known risk (``P(student wrong | score)``), builds
the log records the gateway writes (escalations below the serving threshold, shadows for the audit sample,
shadows skipped under load), reads them with :class:`router.from_log.WindowPairs` and calibrates with
:func:`router.calibration.calibrate`. A violation is a day whose certified threshold has a true accepted risk
above the target's. The stated risk is delta = 5%; with R days the count of violations of a valid procedure
is at most about Binomial(R, delta), so each test allows delta R plus three standard deviations. Each also
shows the defect it guards against: the figure or the sample the code used before, on the same days.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np

from bench.calibration_power import accepted_risk
from logstore import LogRecord, TierAnswer
from router.agreement import AGREEMENTS
from router.audit import audit_draw
from router.calibration import CalibrationError, calibrate, cp_upper
from router.from_log import WindowPairs

DELTA, CONFIDENCE = 0.05, 0.95
START = datetime(2026, 1, 1, tzinfo=UTC)
RIGHT, WRONG, TEACHER = TierAnswer("s", "yes"), TierAnswer("s", "no"), TierAnswer("t", "yes")

Risk = Callable[[np.ndarray], np.ndarray]  # score -> P(the student's answer is wrong)


def allowed(days: int) -> float:
    return DELTA * days + 3 * math.sqrt(days * DELTA * (1 - DELTA))


def day(
    rng: np.random.Generator, n: int, risk: Risk, serving: float, share: float, skip_wrong: float = 0.0
) -> tuple[list[LogRecord], list[LogRecord]]:
    """One day as the gateway logs it, and the records of the shadows it skipped (also in the first list,
    without a teacher answer). ``skip_wrong``: the share of the sample's wrong accepted answers whose shadow
    is skipped (under load the slow, hard ones)."""
    scores = rng.uniform(size=n)
    wrong = rng.uniform(size=n) < risk(scores)
    tag = rng.integers(2**62)
    records, skipped = [], []
    for i in range(n):
        request_id = f"{tag}-{i}"
        accepted = scores[i] >= serving
        drawn = audit_draw(request_id) < share
        skip = accepted and drawn and wrong[i] and rng.uniform() < skip_wrong
        record = LogRecord(
            request_id=request_id,
            time=START,
            decision="accept" if accepted else "escalate",
            reason="confident" if accepted else "not_confident",
            tier="student" if accepted else "teacher",
            signals={"confidence": float(scores[i])},
            student=WRONG if wrong[i] else RIGHT,
            teacher=TEACHER if not accepted or (drawn and not skip) else None,
            shadow=accepted and drawn and not skip,
            audit_share=share,
        )
        records.append(record)
        if skip:
            skipped.append(record)
    return records, skipped


def pairs(records: list[LogRecord]) -> tuple[np.ndarray, np.ndarray]:
    window = WindowPairs(AGREEMENTS["exact"])
    for record in records:
        window.add(record)
    sample = window.pairs()
    return sample.scores, sample.student_ok


def threshold(scores: np.ndarray, ok: np.ndarray, target: float) -> float | None:
    try:
        return calibrate(scores, ok, target_quality=target, confidence=CONFIDENCE).threshold
    except CalibrationError:
        return None


def test_what_is_certified_is_the_target_not_the_bound_at_the_chosen_cut() -> None:
    """Near-flat risk (5.5% wrong at score 0 to 4.5% at 1), n = 5,000, target 95%. The threshold is valid
    (violations at most delta) and the result certifies the target; the Clopper-Pearson bound computed at the
    cut the data chose (reported before as "quality_lower_bound") lies above the true quality on more than
    delta of the days, and on most of the days that certify at all."""

    def risk(s: np.ndarray) -> np.ndarray:
        return 0.045 + 0.01 * (1 - s)

    truth = accepted_risk(risk)
    rng = np.random.default_rng(11)
    days, certified, violations, bound_above = 600, 0, 0, 0
    for _ in range(days):
        scores = rng.uniform(size=5000)
        ok = rng.uniform(size=5000) >= risk(scores)
        try:
            result = calibrate(scores, ok, target_quality=0.95, confidence=CONFIDENCE)
        except CalibrationError:
            continue
        certified += 1
        true_quality = 1 - truth(result.threshold)
        assert result.certified_quality == 0.95
        violations += true_quality < result.certified_quality
        pointwise = 1 - cp_upper(result.disagreements_accepted, result.n_accepted, CONFIDENCE)
        bound_above += pointwise > true_quality
    assert violations <= allowed(days)
    assert bound_above > DELTA * days and bound_above > certified / 2  # the pointwise bound's selection bias


def test_skipped_hard_shadows_count_against_the_certificate() -> None:
    """The gateway escalates below 0.5 and audits 30%; under load it skips 90% of the shadows of wrong answers.
    Counted as disagreements, the certificate holds; dropped (what calibration did before), the accepted
    answers look far better than they are and the target is violated on most days."""

    def risk(s: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp((s - 0.35) * 10))

    truth = accepted_risk(risk)
    rng = np.random.default_rng(5)
    days, counted, dropped = 120, 0, 0
    for _ in range(days):
        records, skipped = day(rng, 3000, risk, serving=0.5, share=0.3, skip_wrong=0.9)
        assert skipped
        kept = threshold(*pairs(records), target=0.95)
        counted += kept is not None and truth(kept) > 0.05
        skipped_ids = {id(record) for record in skipped}
        lost = threshold(*pairs([r for r in records if id(r) not in skipped_ids]), target=0.95)
        dropped += lost is not None and truth(lost) > 0.05
    assert counted <= allowed(days)
    assert dropped > days / 2


def test_an_overconfident_score_is_safe_only_thinned() -> None:
    """A score overconfident in a band (10% wrong at 0.5-0.9, 2% below, 1% above) and a gateway serving at 0.5
    with a 30% audit. Every escalation with only the shadows (the unthinned pairs, called "conservative"
    before) under-weights the accepted band, so it sees the student better than it is: accepting everything
    looks 3.4% wrong where the truth is 5.1%. The audit sample sees the truth, and its thresholds are valid."""

    def risk(s: np.ndarray) -> np.ndarray:
        return np.where(s < 0.5, 0.02, np.where(s < 0.9, 0.10, 0.01))

    truth = accepted_risk(risk)
    rng = np.random.default_rng(3)
    days, violations, audited, unthinned = 60, 0, [], []
    for _ in range(days):
        records, _ = day(rng, 3000, risk, serving=0.5, share=0.3)
        scores, ok = pairs(records)
        audited.append(1 - ok.mean())
        unthinned.append(np.mean([r.student is WRONG for r in records if r.teacher is not None]))
        chosen = threshold(scores, ok, target=0.95)
        violations += chosen is not None and truth(chosen) > 0.05
    assert violations <= allowed(days)
    assert abs(float(np.mean(audited)) - truth(0.0)) < 0.003
    assert float(np.mean(unthinned)) < truth(0.0) - 0.01  # optimistic: not conservative


def test_the_escalation_rate_of_the_audit_sample_is_the_traffic_s() -> None:
    """A uniform sample of the traffic: at the chosen threshold t the escalation rate is P(score < t) = t (scores
    uniform) on average, where every escalation with only the shadows overstated it."""

    def risk(s: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp((s - 0.2) * 10))

    rng = np.random.default_rng(8)
    gaps = []
    for _ in range(30):
        records, _ = day(rng, 3000, risk, serving=0.6, share=0.3)
        result = calibrate(*pairs(records), target_quality=0.95, confidence=CONFIDENCE)
        gaps.append(result.escalation_rate - result.threshold)
    assert abs(float(np.mean(gaps))) < 0.01
