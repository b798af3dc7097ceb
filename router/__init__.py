"""Routing decisions: signals from the student's answer, scorers, thresholds. No HTTP code lives here."""

from router.policy import Decision, ThresholdRouter, make_router
from router.signals import SIGNALS, mean_logprob_confidence, min_prob_confidence

__all__ = [
    "SIGNALS",
    "Decision",
    "ThresholdRouter",
    "make_router",
    "mean_logprob_confidence",
    "min_prob_confidence",
]
