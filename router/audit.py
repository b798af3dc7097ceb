"""The audit sample: which requests calibration learns from, decided before anyone knows their answers.

The gateway audits a request (asks the teacher too, for an accepted answer: a shadow) when
``audit_draw(request_id) < share``, ``share`` being ``log_store.shadow_share``, which each record keeps
(``audit_share``). The draw is a hash of the gateway's own request id: fixed before the request is answered,
independent of how hard it is, and recomputed from the log. Calibration takes exactly the requests whose draw
is below one share S (the smallest logged in the window, or a smaller one asked for), accepted and escalated
alike, so its pairs are a uniform sample of the traffic the student answered, whatever the router did with
them.

A request of the sample whose teacher answer is missing (its shadow skipped under load, failed or still
pending; an escalation whose teacher failed) is never dropped: it counts as a disagreement. That keeps the
certificate valid however the missing labels relate to difficulty (under load the skipped shadows may well be
the slow, hard ones), at the price of a more cautious threshold when many are missing; the count is reported.

Pure functions over arrays, no I/O: :mod:`router.from_log` reads the records, the simulations call these
directly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

MISSING = np.nan  # a label not known: the teacher's answer is not in the record


def audit_draw(request_id: str) -> float:
    """A stable uniform number in [0, 1) per request id: the first 8 bytes of its SHA-256 / 2**64."""
    digest = hashlib.sha256(request_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class AuditSample:
    """The sample's pairs: each one's score and whether the student agreed (a missing label counts as not)."""

    scores: np.ndarray
    student_ok: np.ndarray
    kept: np.ndarray  # boolean mask over the candidates: in the sample
    missing_labels: int  # in the sample, label missing, counted as a disagreement


def audit_sample(draws: np.ndarray, scores: np.ndarray, labels: np.ndarray, share: float) -> AuditSample:
    """The candidates whose draw is below ``share``; ``labels`` is 1.0 (agreed), 0.0 or :data:`MISSING`."""
    if not 0 < share <= 1:
        raise ValueError(f"the audit share must be in (0, 1], got {share}")
    kept = np.asarray(draws, dtype=np.float64) < share
    labels = np.asarray(labels, dtype=np.float64)[kept]
    return AuditSample(
        scores=np.asarray(scores, dtype=np.float64)[kept],
        student_ok=labels == 1.0,
        kept=kept,
        missing_labels=int(np.isnan(labels).sum()),
    )
