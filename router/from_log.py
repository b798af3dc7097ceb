"""Labelled (score, student agreed) pairs for calibration, read straight from the escalation log store.

The pairs are the window's audit sample (:mod:`router.audit`): every routed request the student answered
whose draw (a hash of its request id) is below the share S, accepted or escalated alike. S is the smallest
``audit_share`` (``log_store.shadow_share``) the window's records logged, or a smaller one asked for with
``shadow_share``; the pairs are then a uniform sample of the traffic the student answered and the certificate
of :func:`router.calibration.calibrate` is exact. A pair's label is ``agreement(student, teacher)`` (tool calls
and JSON compared as values, :func:`router.agreement.answers_agree`); one whose teacher answer is missing (a
shadow skipped under load, failed or still pending, an escalation whose teacher failed) counts as a
disagreement (``missing_labels``). Its score is a signal of the record, by default ``confidence``, the serving
router's score. A student answer that failed the validity check (a tool call or JSON the request does not
allow) is escalated whatever its score, so it is left out (``skipped_invalid``): the certificate is about the
valid answers the threshold decides on. Requests that never reached the student (pre-routed, student down)
are in no sample: the certificate is about the traffic the student answered.

**Older records** (no ``audit_share``: a gateway that drew its shadows at random and logged no skipped one):
an accepted one is in the sample when it was shadowed, an escalated one when its draw is below the share of
accepted requests the window shows shadowed (``shadow_share``, when given, must agree with it). That sample
is uniform only if no shadow was skipped or failed, which the log cannot tell: :func:`sample_warning` says
so. Escalations are never used unthinned: every escalation but only a share of the accepted answers
over-represents low scores, and that is not conservative for an overconfident score.

Only :mod:`logstore` is read here (no HTTP stack).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import numpy as np
from scipy.stats import binomtest
from sqlalchemy.engine import make_url

from cascade.terms import Decision
from logstore import LogRecord, TierAnswer, iter_records
from logstore.reader import _utc as utc  # the reader's own window normalisation (naive means UTC)
from router.agreement import Agreement, answers_agree
from router.audit import MISSING, audit_draw, audit_sample
from router.signals import FEATURE_NAMES, features

DEFAULT_SCORE = "confidence"

LEGACY_WARNING = (
    "{n} record(s) come from a gateway that drew its shadows at random and did not log the ones it skipped: "
    "their sample is uniform only if no shadow was skipped under load or failed, which the log cannot tell. "
    "Records logged with an audit_share (this version's gateway) give an exact certificate"
)
# a --shadow-share that the legacy window's shadowed share refutes at this level is refused
SHARE_CHECK_P = 0.001


class LogPairsError(ValueError):
    """The log window gives no labelled pairs to calibrate on; the message says what was found."""


@dataclass(frozen=True)
class LogPairCounts:
    """What reading the window found. ``accepted`` and ``shadow_records`` (accepted requests the gateway
    also sent to the teacher, whatever the teacher did) give the shadow share actually achieved;
    ``audit_share`` is the share the sample was taken at."""

    records: int = 0
    pairs: int = 0
    escalated_pairs: int = 0
    shadow_pairs: int = 0
    thinned: int = 0
    missing_labels: int = 0
    skipped_without_score: int = 0
    skipped_invalid: int = 0
    accepted: int = 0
    shadow_records: int = 0
    legacy_records: int = 0
    other_student: int = 0
    audit_share: float | None = None

    @property
    def observed_shadow_share(self) -> float | None:
        return self.shadow_records / self.accepted if self.accepted else None


@dataclass(frozen=True)
class LogPairs:
    scores: np.ndarray
    student_ok: np.ndarray
    counts: LogPairCounts
    tokens: np.ndarray  # (n, 4): student prompt, student completion, teacher prompt, teacher completion


def record_score(record: LogRecord, score: str) -> float | None:
    """``record.signals[score]``; for an answer feature missing there, computed from the student's logged
    token logprobs. None when neither gives a finite number."""
    value = record.signals.get(score)
    if value is None and score in FEATURE_NAMES and record.student is not None and record.student.logprobs:
        value = features(record.student.logprobs)[score]
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _message(answer: TierAnswer | None) -> dict[str, Any] | None:
    if answer is None or (answer.text is None and answer.tool_calls is None):
        return None
    return {"content": answer.text, "tool_calls": answer.tool_calls}


def _candidate(record: LogRecord) -> bool:
    """A routed request the student answered, unredacted (one that did not end ok has no label: MISSING)."""
    return record.decision != Decision.BYPASS and not record.redacted and _message(record.student) is not None


def _label(record: LogRecord, agreement: Agreement) -> float:
    """1.0 when the student agreed with the teacher, 0.0 when not, MISSING without the teacher's whole answer."""
    student, teacher = _message(record.student), _message(record.teacher)
    if student is None or teacher is None or record.status != "ok":
        return MISSING
    return float(answers_agree(record.params, student, teacher, agreement))


def _check_share(shadow_share: float | None) -> None:
    if shadow_share is not None and not 0 < shadow_share <= 1:
        raise ValueError(f"--shadow-share must be in (0, 1], got {shadow_share}")


class WindowPairs:
    """The pairs of a window, gathered record by record (:meth:`add`, in any order), then sampled (:meth:`pairs`)."""

    def __init__(self, agreement: Agreement, score: str = DEFAULT_SCORE, student_model: str | None = None) -> None:
        self.agreement, self.score, self.student_model = agreement, score, student_model
        self._draws: list[float] = []
        self._scores: list[float] = []
        self._labels: list[float] = []
        self._tokens: list[tuple[int, int, int, int]] = []
        self._escalated: list[bool] = []
        self._logged_share = math.inf  # the smallest audit_share of the window's candidates
        counted = ("records", "accepted", "shadow_records", "skipped_without_score", "skipped_invalid")
        self._n = dict.fromkeys((*counted, "legacy_records", "other_student"), 0)

    def add(self, record: LogRecord) -> None:
        n = self._n
        n["records"] += 1
        accepted = record.decision == Decision.ACCEPT
        if accepted and record.status == "ok":
            n["accepted"] += 1
            n["shadow_records"] += record.shadow
        if not _candidate(record):
            return
        assert record.student is not None  # a candidate's
        if self.student_model is not None and record.student.model != self.student_model:
            n["other_student"] += 1
            return
        if record.student.invalid is not None:
            n["skipped_invalid"] += 1
            return
        value = record_score(record, self.score)
        if value is None:
            n["skipped_without_score"] += 1
            return
        if record.audit_share is not None:
            self._logged_share = min(self._logged_share, record.audit_share)
            self._draws.append(audit_draw(record.request_id))
        else:  # an older gateway: an accepted request is in the sample when it was shadowed
            n["legacy_records"] += 1
            self._draws.append(audit_draw(record.request_id) if not accepted else -1.0 if record.shadow else math.inf)
        self._scores.append(value)
        self._labels.append(_label(record, self.agreement))
        self._tokens.append(_token_counts(record))
        self._escalated.append(not accepted)

    def pairs(self, shadow_share: float | None = None) -> LogPairs:
        """The audit sample at the smallest share the records logged, or at ``shadow_share``. Raises
        :class:`LogPairsError` when none remain or when ``shadow_share`` cannot be the window's share."""
        _check_share(shadow_share)
        if not self._draws:
            raise LogPairsError(_no_pairs_message(LogPairCounts(**self._n), self.score))
        share = _sample_share(shadow_share, self._logged_share, self._n)
        sample = audit_sample(np.asarray(self._draws), np.asarray(self._scores), np.asarray(self._labels), share)
        kept_escalated = int(np.sum(sample.kept & np.asarray(self._escalated, dtype=bool)))
        pairs = int(sample.kept.sum())
        counts = LogPairCounts(
            **self._n,
            pairs=pairs,
            escalated_pairs=kept_escalated,
            shadow_pairs=pairs - kept_escalated,
            thinned=sample.kept.size - pairs,
            missing_labels=sample.missing_labels,
            audit_share=share,
        )
        if not counts.pairs:
            raise LogPairsError(_no_pairs_message(counts, self.score))
        tokens = np.asarray(self._tokens, dtype=np.int64).reshape(-1, 4)[sample.kept]
        return LogPairs(sample.scores, sample.student_ok, counts, tokens)


async def read_log_pairs(
    url: str,
    agreement: Agreement,
    since: datetime | None = None,
    until: datetime | None = None,
    score: str = DEFAULT_SCORE,
    shadow_share: float | None = None,
    student_model: str | None = None,
) -> LogPairs:
    """The audit sample of a log window as labelled pairs (see the module docstring and :class:`WindowPairs`);
    with ``student_model``, only the requests that student answered."""
    window = WindowPairs(agreement, score, student_model)
    async for record in iter_records(url, since, until):
        window.add(record)
    return window.pairs(shadow_share)


def _sample_share(given: float | None, logged: float, n: dict[str, int]) -> float:
    """The share the window's sample is taken at (see the module docstring)."""
    if math.isfinite(logged) and n["legacy_records"]:
        raise LogPairsError(
            f"this window mixes {n['legacy_records']} record(s) of an older gateway (no audit_share) with records "
            "of this version: their samples were drawn differently; pass --since the upgrade (or --until it)"
        )
    if math.isfinite(logged):
        if logged <= 0:
            raise LogPairsError(
                "some of this window's records were logged with log_store.shadow_share 0 (nothing audited): "
                "calibrate on a window logged with a share above 0 (--since)"
            )
        if given is not None and given > logged:
            raise LogPairsError(
                f"--shadow-share {given:g} is above the share this window was audited at ({logged:g}, the "
                "smallest log_store.shadow_share its records logged): a sample can be thinned, not enlarged; "
                "give at most that, or leave --shadow-share out"
            )
        return given if given is not None else logged
    accepted, shadowed = n["accepted"], n["shadow_records"]
    if not shadowed:
        raise LogPairsError(
            f"no accepted answer of this window was shadowed ({accepted} accepted): escalations alone are not a "
            "sample of the traffic; set log_store.shadow_share (e.g. 0.1) and calibrate on traffic logged after"
        )
    if given is not None and binomtest(shadowed, accepted, given).pvalue < SHARE_CHECK_P:
        raise LogPairsError(
            f"--shadow-share {given:g} is not the share this window shows: {shadowed} of {accepted} accepted "
            f"answers were shadowed ({shadowed / accepted:.1%}); give the log_store.shadow_share the gateway ran "
            "with (a gateway under load skips shadows, and then no share makes this sample uniform)"
        )
    return shadowed / accepted


def _token_counts(record: LogRecord) -> tuple[int, int, int, int]:
    s, t = record.student, record.teacher
    return (
        (s and s.prompt_tokens) or 0,
        (s and s.completion_tokens) or 0,
        (t and t.prompt_tokens) or 0,
        (t and t.completion_tokens) or 0,
    )


Price = Callable[[int, int], float]  # (prompt_tokens, completion_tokens) -> USD


def expected_cost(
    pairs: LogPairs, escalation_rate: float, escalation_interval: tuple[float, float], student: Price, teacher: Price
) -> dict[str, object]:
    """Cost per 1,000 requests at a calibrated threshold: every request pays the student, the escalated
    share also pays the teacher, each at its mean cost over the pairs' logged token counts (the teacher's over
    the pairs that hold its answer: a missing label logged no teacher tokens)."""
    s = float(np.mean([student(int(p), int(c)) for p, c in pairs.tokens[:, :2]]))
    answered = pairs.tokens[pairs.tokens[:, 3] > 0, 2:]
    t = float(np.mean([teacher(int(p), int(c)) for p, c in answered])) if len(answered) else 0.0
    low, high = escalation_interval
    return {
        "cost_per_1k_usd": 1000 * (s + escalation_rate * t),
        "cost_per_1k_interval_usd": [1000 * (s + low * t), 1000 * (s + high * t)],
        "teacher_only_per_1k_usd": 1000 * t,
    }


def _no_pairs_message(counts: LogPairCounts, score: str) -> str:
    found = f"{counts.records} record(s) read"
    if counts.skipped_without_score:
        found += f", {counts.skipped_without_score} pair(s) without the score {score!r}"
    if counts.skipped_invalid:
        found += f", {counts.skipped_invalid} pair(s) whose student answer failed the tool-call/JSON check"
    if counts.other_student:
        found += f", {counts.other_student} answered by another student"
    if counts.thinned:
        found += f", {counts.thinned} outside the audit sample (share {counts.audit_share:g})"
    if counts.skipped_without_score:
        return (
            f"no pair of the log window has the score {score!r} ({found}): a score is a signal the gateway "
            "logged, or an answer feature computed from the student's logged token logprobs"
        )
    return (
        f"no labelled pairs in the log window ({found}): a pair is a routed request the student answered, "
        "in the audit sample (an escalation or a shadow; a redacted log has none)"
    )


def pairs_from_log(
    url: str,
    agreement: Agreement,
    since: datetime | None = None,
    until: datetime | None = None,
    score: str = DEFAULT_SCORE,
    shadow_share: float | None = None,
    student_model: str | None = None,
) -> LogPairs:
    """:func:`read_log_pairs` for synchronous callers (the command line)."""
    return asyncio.run(read_log_pairs(url, agreement, since, until, score, shadow_share, student_model))


def source_report(
    url: str,
    pairs: LogPairs,
    since: datetime | None,
    until: datetime | None,
    score: str,
    agreement: str,
    shadow_share: float | None,
) -> dict[str, object]:
    """Where the pairs came from, for the calibration's JSON (the URL's password masked)."""
    window = {"since": _iso(since), "until": _iso(until)}
    counts = {**asdict(pairs.counts), "observed_shadow_share": pairs.counts.observed_shadow_share}
    return {
        "log_url": make_url(url).render_as_string(hide_password=True),
        "window": window,
        "score": score,
        "agreement": agreement,
        "shadow_share": shadow_share,
        "counts": counts,
    }


def _iso(value: datetime | None) -> str | None:
    moment = utc(value)
    return moment.isoformat() if moment is not None else None


def sample_warning(pairs: LogPairs) -> str | None:
    """Why the sample may not be uniform, when some of its records come from an older gateway."""
    legacy = pairs.counts.legacy_records
    return LEGACY_WARNING.format(n=legacy) if legacy else None
