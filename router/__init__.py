"""Routing decisions: signals from the student's answer, scorers, calibration, offline evaluation.

No HTTP code lives here. The entry points the gateway uses:

- :func:`make_router` / :class:`ThresholdRouter`: one signal over a plain list of token logprobs.
- :func:`features`: answer features from a :class:`cascade.logprobs.TokenLogprobs` (the one token-logprobs type).
- :class:`Router` (one method, ``score``), :class:`RouteInput`, :func:`decide`.
- :func:`load_router`, :class:`RouterSlot` (validated hot reload), :func:`save_router`.
- :func:`calibrate`: the threshold for a quality target or an escalation budget, with confidence.
"""

from importlib import import_module
from typing import Any

from router.policy import Decision, ThresholdRouter, make_router
from router.signals import (
    FEATURE_NAMES,
    SIGNALS,
    features,
    mean_logprob_confidence,
    min_prob_confidence,
)

# scikit-learn, scipy and skops load on first use only: `import router` stays cheap for the gateway
_LAZY = {
    "RouterLoadError": "router.errors",
    "RouterSlot": "router.artefact",
    "load_router": "router.artefact",
    "save_router": "router.artefact",
    "Calibration": "router.calibration",
    "CalibrationError": "router.calibration",
    "calibrate": "router.calibration",
    "LearnedRouter": "router.scorers",
    "RouteInput": "router.scorers",
    "Router": "router.scorers",
    "SignalRouter": "router.scorers",
    "decide": "router.scorers",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'router' has no attribute {name!r}")


__all__ = [
    "FEATURE_NAMES",
    "SIGNALS",
    "Calibration",
    "CalibrationError",
    "Decision",
    "LearnedRouter",
    "RouteInput",
    "Router",
    "RouterLoadError",
    "RouterSlot",
    "SignalRouter",
    "ThresholdRouter",
    "calibrate",
    "decide",
    "features",
    "load_router",
    "make_router",
    "mean_logprob_confidence",
    "min_prob_confidence",
    "save_router",
]
