"""The routing decision: a scorer turns the student's token logprobs into a confidence, a threshold decides."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cascade.terms import Reason
from router.signals import SIGNALS, Signal


@dataclass(frozen=True, slots=True)
class Decision:
    accept: bool
    confidence: float
    reason: Reason  # CONFIDENT or NOT_CONFIDENT


@dataclass(frozen=True, slots=True)
class ThresholdRouter:
    """Accept the student's answer when ``signal(logprobs) >= threshold``."""

    signal_name: str
    signal: Signal
    threshold: float

    def decide(self, logprobs: Sequence[float]) -> Decision:
        confidence = self.signal(logprobs)
        if confidence >= self.threshold:
            return Decision(True, confidence, Reason.CONFIDENT)
        return Decision(False, confidence, Reason.NOT_CONFIDENT)


def make_router(signal: str, threshold: float) -> ThresholdRouter:
    """Build the router for a named signal (one of :data:`router.signals.SIGNALS`)."""
    try:
        return ThresholdRouter(signal, SIGNALS[signal], threshold)
    except KeyError:
        raise ValueError(f"unknown signal {signal!r}; expected one of {sorted(SIGNALS)}") from None
