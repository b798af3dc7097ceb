"""Confidence signals computed from the token logprobs of the student's answer.

Every signal maps a sequence of token logprobs (natural log) to a confidence in [0, 1], higher meaning the
student is surer of its answer. An answer without tokens has confidence 0: there is nothing to trust.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

Signal = Callable[[Sequence[float]], float]


def mean_logprob_confidence(logprobs: Sequence[float]) -> float:
    """exp(mean token logprob): the geometric-mean probability of the answer's tokens."""
    if not logprobs:
        return 0.0
    return math.exp(math.fsum(logprobs) / len(logprobs))


def min_prob_confidence(logprobs: Sequence[float]) -> float:
    """The probability of the least likely token of the answer."""
    if not logprobs:
        return 0.0
    return math.exp(min(logprobs))


SIGNALS: dict[str, Signal] = {
    "mean_logprob": mean_logprob_confidence,
    "min_prob": min_prob_confidence,
}
