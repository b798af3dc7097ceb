"""Choose the router's threshold from labelled pairs so that a quality target holds with stated confidence.

Inputs: one score per labelled request (higher = the student's answer is more trustworthy; the student's
answer is accepted when ``score >= threshold``) and whether the student's answer agreed with the reference
(the teacher's answer or the gold label, see :mod:`router.agreement`).

**Quality target** (``target_quality = 1 - eps``): the risk of a threshold t is the disagreement rate among
the answers it accepts. For each candidate t the null hypothesis "risk(t) > eps" is tested with the exact
binomial tail p-value ``P(Binomial(n_t, eps) <= k_t)`` (k_t disagreements among n_t accepted); a p-value
<= delta is the same as the one-sided Clopper-Pearson upper bound on the risk being <= eps. The candidates
are tested in a fixed sequence from the strictest threshold to the most lenient and testing stops at the
first one not rejected (Learn-then-Test with fixed-sequence testing, Angelopoulos et al. 2021): the chosen
threshold, the most lenient one rejected, has risk <= eps with probability >= 1 - delta, delta = 1 -
confidence. The sequence is a list of accepted-set sizes (cut-points between distinct scores); a sequence
must start where enough answers are accepted to certify eps at all, and one unlucky disagreement near its
start would end it, so up to six sequences start at geometrically spaced sizes, each tested at level
delta / count (a union bound keeps the overall error <= delta); the most lenient certified cut wins.

**Escalation budget** (``max_escalation = b``): the escalation rate of t is the share of requests with
``score < t``. Candidates are tested from the most lenient threshold upwards against "escalation(t) > b"
with the binomial p-value ``P(Binomial(n, b) <= m_t)``; the last one rejected is chosen: the largest
threshold (the best quality) whose escalation rate is <= b with confidence 1 - delta.

With both given, the quality threshold is chosen and must also meet the escalation budget.

**What is certified** is the target itself (``certified_quality``), not a bound computed at the chosen cut:
the cut was selected by the same labels, so a Clopper-Pearson bound there is biased upwards (on near-flat
risk it lies above the true quality far more often than 1 - confidence). The accepted quality and its
interval at the cut are reported as pointwise, descriptive figures. When the set is
too small to certify the target, or no threshold meets it, :class:`CalibrationError` says why and what
would be needed: the caller keeps its previous threshold.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import beta, binom


class CalibrationError(ValueError):
    """No threshold can be certified from these labels; the message says why."""


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True)
class Calibration:
    threshold: float
    method: str
    confidence: float
    target_quality: float | None
    max_escalation: float | None
    n: int
    n_accepted: int
    disagreements_accepted: int
    escalation_rate: float
    escalation_interval: Interval
    # What the certificate states: quality among accepted answers >= this, with probability `confidence`
    # (the target; None when only an escalation budget was calibrated).
    certified_quality: float | None
    # Pointwise figures at the selected cut: descriptive, not a certificate. The cut was chosen by the same
    # data, so an interval computed there is optimistic (selection bias): it may lie above the true quality.
    accepted_quality: float
    accepted_quality_pointwise_interval: Interval

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def clopper_pearson(k: int, n: int, confidence: float) -> Interval:
    """Two-sided exact binomial interval for a proportion k/n at the given confidence."""
    if n == 0:
        return Interval(0.0, 1.0)
    a = 1 - confidence
    low = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return Interval(low, high)


def cp_upper(k: int, n: int, confidence: float) -> float:
    """One-sided Clopper-Pearson upper bound on a proportion at the given confidence."""
    if n == 0 or k >= n:
        return 1.0
    return float(beta.ppf(confidence, k + 1, n - k))


def min_certifiable(eps: float, delta: float) -> int:
    """The fewest accepted answers that can certify risk <= eps at level delta (with zero errors)."""
    return math.ceil(math.log(delta) / math.log1p(-eps))


def _validate(scores: np.ndarray, ok: np.ndarray, confidence: float) -> None:
    if scores.ndim != 1 or ok.shape != scores.shape:
        raise CalibrationError("scores and labels must be 1-d arrays of equal length")
    if scores.size == 0:
        raise CalibrationError("no labelled pairs")
    if not np.all(np.isfinite(scores)):
        raise CalibrationError("scores must be finite")
    if not 0.5 <= confidence < 1:
        raise CalibrationError(f"confidence must be in [0.5, 1), got {confidence}")


MAX_STARTS = 6


def _starts(n: int, eps: float, delta: float) -> tuple[list[int], float]:
    """Geometric starting sizes for the fixed sequences, and the level each sequence is tested at."""
    base = min_certifiable(eps, delta)
    count = max(1, min(MAX_STARTS, math.floor(math.log2(max(n, 1) / base)) + 1)) if n >= base else 1
    level = delta / count
    first = min_certifiable(eps, level)
    return [first * 2**j for j in range(count) if first * 2**j <= n], level


def _quality_threshold(s: np.ndarray, bad: np.ndarray, eps: float, delta: float) -> tuple[float, int]:
    """(threshold, accepted count) by fixed-sequence testing over cut-points of the descending scores.

    Several sequences start at geometrically spaced accepted-set sizes (each at level delta / count, a
    union bound), so one unlucky disagreement among the very first answers does not end the search."""
    n = s.size
    need = min_certifiable(eps, delta)
    if n < need:
        raise CalibrationError(
            f"{n} labelled pairs cannot certify quality {1 - eps:.4g} at confidence {1 - delta:.4g}: "
            f"even with no disagreement at least {need} accepted answers are needed"
        )
    starts, level = _starts(n, eps, delta)
    if not starts:  # the split level needs more answers than there are: test one sequence at full level
        starts, level = [need], delta
    # candidate accepted-set sizes: cut only between distinct scores (ties are accepted together)
    all_cuts = np.concatenate((np.flatnonzero(np.diff(s) != 0) + 1, [n]))
    cum_errors = np.concatenate(([0], np.cumsum(bad)))
    best = 0
    for start in starts:
        cuts = all_cuts[all_cuts >= start]
        pvalues = binom.cdf(cum_errors[cuts], cuts, eps)
        failed = np.flatnonzero(pvalues > level)
        last = (failed[0] if failed.size else cuts.size) - 1
        if last >= 0:
            best = max(best, int(cuts[last]))
    if best == 0:
        m = int(all_cuts[all_cuts >= starts[0]][0])
        k = int(cum_errors[m])
        raise CalibrationError(
            f"no threshold certifies quality {1 - eps:.4g} at confidence {1 - delta:.4g}: the {m} most "
            f"confident answers already have {k} disagreement(s) (upper bound on their disagreement "
            f"{cp_upper(k, m, 1 - level):.4f} at the per-sequence confidence {1 - level:.4g}, > {eps:.4g}); "
            "escalate everything or collect more labels"
        )
    return float(s[best - 1]), best


def _escalation_threshold(s: np.ndarray, budget: float, delta: float) -> tuple[float, int]:
    """(threshold, accepted count): the most escalating cut whose escalation rate is <= budget w.p. 1-delta."""
    n = s.size
    # cut c accepts the c highest scores; escalation m = n - c. Test from m = 0 (accept all) upwards.
    cuts = np.concatenate((np.flatnonzero(np.diff(s) != 0) + 1, [n]))[::-1]
    escalated = n - cuts
    pvalues = binom.cdf(escalated, n, budget)
    failed = np.flatnonzero(pvalues > delta)
    last = (failed[0] if failed.size else cuts.size) - 1
    if last < 0:
        raise CalibrationError(
            f"{n} labelled pairs cannot certify an escalation rate <= {budget:.4g} at confidence "
            f"{1 - delta:.4g} (the upper bound with no escalation is {cp_upper(0, n, 1 - delta):.4f})"
        )
    accepted = int(cuts[last])
    return float(s[accepted - 1]), accepted


def calibrate(
    scores: np.ndarray,
    student_ok: np.ndarray,
    target_quality: float | None = None,
    max_escalation: float | None = None,
    confidence: float = 0.95,
) -> Calibration:
    """Pick the threshold for ``target_quality`` (agreement among accepted answers) and/or
    ``max_escalation`` (share sent to the teacher), each holding with probability ``confidence``."""
    scores = np.asarray(scores, dtype=np.float64)
    ok = np.asarray(student_ok, dtype=bool)
    _validate(scores, ok, confidence)
    if target_quality is None and max_escalation is None:
        raise CalibrationError("give target_quality or max_escalation")
    if max_escalation is not None and not 0 < max_escalation < 1:
        raise CalibrationError(f"max_escalation must be in (0, 1), got {max_escalation}")
    delta = 1 - confidence
    order = np.argsort(-scores, kind="stable")
    s, bad = scores[order], ~ok[order]
    n = s.size

    if target_quality is not None:
        if not 0 < target_quality < 1:
            raise CalibrationError(f"target_quality must be in (0, 1), got {target_quality}")
        threshold, accepted = _quality_threshold(s, bad, 1 - target_quality, delta)
        method = "learn-then-test, fixed sequence, binomial (Clopper-Pearson) p-values"
        if max_escalation is not None:
            escalated = n - accepted
            if cp_upper(escalated, n, confidence) > max_escalation:
                raise CalibrationError(
                    f"quality {target_quality:.4g} needs threshold {threshold:.6g}, which escalates "
                    f"{escalated / n:.1%} of requests (upper bound {cp_upper(escalated, n, confidence):.1%})"
                    f" > max_escalation {max_escalation:.1%}: the two targets conflict"
                )
    else:
        assert max_escalation is not None
        threshold, accepted = _escalation_threshold(s, max_escalation, delta)
        method = "fixed-sequence binomial test on the escalation rate"

    k = int(bad[:accepted].sum())
    escalated = n - accepted
    return Calibration(
        threshold=threshold,
        method=method,
        confidence=confidence,
        target_quality=target_quality,
        max_escalation=max_escalation,
        n=n,
        n_accepted=accepted,
        disagreements_accepted=k,
        escalation_rate=escalated / n,
        escalation_interval=clopper_pearson(escalated, n, confidence),
        certified_quality=target_quality,
        accepted_quality=1 - k / accepted,
        accepted_quality_pointwise_interval=Interval(
            1 - clopper_pearson(k, accepted, confidence).high, 1 - clopper_pearson(k, accepted, confidence).low
        ),
    )
