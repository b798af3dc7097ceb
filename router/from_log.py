"""Labelled (score, student agreed) pairs for calibration, read straight from the escalation log store.

A pair is a routed request (status ``ok``, decision not ``bypass``) whose record holds both the student's
and the teacher's answer text: an escalation (the student answered, was not trusted, the teacher answered
too) or a shadow (an accepted answer also sent to the teacher). Its label is ``agreement(student, teacher)``
and its score a signal of the record, by default ``confidence``, the serving router's score. Tool calls and
JSON answers are compared as values (:func:`router.agreement.answers_agree`). A student answer that failed the
validity check (a tool call or JSON the request does not allow) is escalated whatever its score, so it is left
out (``skipped_invalid``): the certificate is about the valid answers the threshold decides on.

**Sampling bias.** The gateway logs every escalation but only a random share S of the accepted requests as
shadows (``log_store.shadow_share``), so low scores are over-represented among the pairs. Calibrating on
all of them is conservative for thresholds below the serving one (their accepted set holds too many
low-score answers, so its estimated quality is too low) and overstates the escalation rate. Given S, the
escalations are thinned to the same share with a hash of the request id (:func:`kept_share`), independent
of the gateway's own random draw: every routed request then enters with probability S, the pairs are a
uniform sample of the traffic and the certificate of :func:`router.calibration.calibrate` is exact.
The escalations are thinned at the share of accepted requests the window actually shows shadowed, not at S
itself: a gateway under load may skip shadows (its bound on shadows in flight), and thinning at S would then
over-represent the escalations again.
Requests that never reached the student (pre-routed, student down) are in no sample: the certificate is
about the traffic the student answered.

Only :mod:`logstore` is read here (no HTTP stack).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy.engine import make_url

from cascade.terms import Decision
from logstore import LogRecord, iter_records
from logstore.reader import _utc as utc  # the reader's own window normalisation (naive means UTC)
from router.agreement import Agreement, answers_agree
from router.signals import FEATURE_NAMES, features

DEFAULT_SCORE = "confidence"

BIAS_WARNING = (
    "the pairs are every escalation but only the shadow share of the accepted requests: low scores are "
    "over-represented, so the quality estimate is conservative (pessimistic) for thresholds below the "
    "serving one and the escalation rate is overstated; pass --shadow-share S (the log_store.shadow_share "
    "the gateway ran with) for a uniform sample and an exact certificate"
)


class LogPairsError(ValueError):
    """The log window gives no labelled pairs to calibrate on; the message says what was found."""


@dataclass(frozen=True)
class LogPairCounts:
    """What reading the window found. ``accepted`` and ``shadow_records`` (accepted requests the gateway
    also sent to the teacher, whatever the teacher did) give the shadow share actually achieved."""

    records: int = 0
    pairs: int = 0
    escalated_pairs: int = 0
    shadow_pairs: int = 0
    thinned: int = 0
    skipped_without_score: int = 0
    skipped_invalid: int = 0
    accepted: int = 0
    shadow_records: int = 0

    @property
    def observed_shadow_share(self) -> float | None:
        return self.shadow_records / self.accepted if self.accepted else None


@dataclass(frozen=True)
class LogPairs:
    scores: np.ndarray
    student_ok: np.ndarray
    counts: LogPairCounts
    tokens: np.ndarray  # (n, 4): student prompt, student completion, teacher prompt, teacher completion


def kept_share(request_id: str) -> float:
    """A stable uniform number in [0, 1) per request id: the first 8 bytes of its SHA-256 / 2**64."""
    digest = hashlib.sha256(request_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def record_score(record: LogRecord, score: str) -> float | None:
    """``record.signals[score]``; for an answer feature missing there, computed from the student's logged
    token logprobs. None when neither gives a finite number."""
    value = record.signals.get(score)
    if value is None and score in FEATURE_NAMES and record.student is not None and record.student.logprobs:
        value = features(record.student.logprobs)[score]
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _answers(record: LogRecord) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The student's and the teacher's answers (as messages) of a routed, successful, unredacted record that
    holds both; else None."""
    if record.status != "ok" or record.decision == Decision.BYPASS or record.redacted:
        return None
    messages = []
    for answer in (record.student, record.teacher):
        if answer is None or (answer.text is None and answer.tool_calls is None):
            return None
        messages.append({"content": answer.text, "tool_calls": answer.tool_calls})
    return messages[0], messages[1]


def _check_share(shadow_share: float | None) -> None:
    if shadow_share is not None and not 0 < shadow_share <= 1:
        raise ValueError(f"--shadow-share must be in (0, 1], got {shadow_share}")


async def read_log_pairs(
    url: str,
    agreement: Agreement,
    since: datetime | None = None,
    until: datetime | None = None,
    score: str = DEFAULT_SCORE,
    shadow_share: float | None = None,
) -> LogPairs:
    """The labelled pairs of a log window (see the module docstring); with ``shadow_share`` the escalated
    pairs are thinned to that share by :func:`kept_share`. Raises :class:`LogPairsError` when none remain."""
    _check_share(shadow_share)
    scores: list[float] = []
    labels: list[bool] = []
    tokens: list[tuple[int, int, int, int]] = []
    draws: list[float] = []  # an escalated pair's kept_share (kept below the share); -1 for a shadow pair
    n = dict.fromkeys(LogPairCounts.__dataclass_fields__, 0)
    async for record in iter_records(url, since, until):
        n["records"] += 1
        if record.decision == Decision.ACCEPT and record.status == "ok":
            n["accepted"] += 1
            n["shadow_records"] += record.shadow
        answers = _answers(record)
        if answers is None:
            continue
        if record.student is not None and record.student.invalid is not None:
            n["skipped_invalid"] += 1
            continue
        value = record_score(record, score)
        if value is None:
            n["skipped_without_score"] += 1
            continue
        draws.append(-1.0 if record.shadow else kept_share(record.request_id))
        scores.append(value)
        labels.append(answers_agree(record.params, *answers, agreement))
        tokens.append(_token_counts(record))
    kept = np.asarray(draws, dtype=np.float64) < _thinning_share(shadow_share, n)
    escalated = np.asarray(draws, dtype=np.float64) >= 0
    n |= {"escalated_pairs": int(np.sum(kept & escalated)), "shadow_pairs": int(np.sum(~escalated))}
    counts = LogPairCounts(**{**n, "thinned": int(np.sum(~kept)), "pairs": int(np.sum(kept))})
    if not counts.pairs:
        raise LogPairsError(_no_pairs_message(counts, score))
    return LogPairs(
        np.asarray(scores, dtype=np.float64)[kept],
        np.asarray(labels, dtype=bool)[kept],
        counts,
        np.asarray(tokens, dtype=np.int64).reshape(-1, 4)[kept],
    )


def _thinning_share(shadow_share: float | None, n: dict[str, int]) -> float:
    """The share escalations are kept at: the accepted requests' share actually shadowed in the window (what
    entered the sample), else ``shadow_share``; without ``shadow_share`` every escalation is kept."""
    if shadow_share is None:
        return math.inf
    return n["shadow_records"] / n["accepted"] if n["accepted"] else shadow_share


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
    share also pays the teacher, each at its mean cost over the pairs' logged token counts."""
    s = float(np.mean([student(int(p), int(c)) for p, c in pairs.tokens[:, :2]]))
    t = float(np.mean([teacher(int(p), int(c)) for p, c in pairs.tokens[:, 2:]]))
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
    if counts.thinned:
        found += f", {counts.thinned} escalated pair(s) thinned away by --shadow-share"
    if counts.skipped_without_score:
        return (
            f"no pair of the log window has the score {score!r} ({found}): a score is a signal the gateway "
            "logged, or an answer feature computed from the student's logged token logprobs"
        )
    return (
        f"no labelled pairs in the log window ({found}): a pair needs a routed request with both the "
        "student's and the teacher's answer text (an escalation or a shadow; a redacted log has none)"
    )


def pairs_from_log(
    url: str,
    agreement: Agreement,
    since: datetime | None = None,
    until: datetime | None = None,
    score: str = DEFAULT_SCORE,
    shadow_share: float | None = None,
) -> LogPairs:
    """:func:`read_log_pairs` for synchronous callers (the command line)."""
    return asyncio.run(read_log_pairs(url, agreement, since, until, score, shadow_share))


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


def bias_warning(pairs: LogPairs, shadow_share: float | None) -> str | None:
    """The sampling-bias warning when escalated pairs were used unthinned (see the module docstring)."""
    if shadow_share is None and pairs.counts.escalated_pairs:
        return BIAS_WARNING
    return None
