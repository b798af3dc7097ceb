"""Routing decisions: signals from the student's answer, scorers, calibration, offline evaluation.

No HTTP code lives here. The entry points the gateway uses:

- :mod:`router.policy`: the threshold rule (:func:`decide`), :class:`Router` (one method, ``score``),
  :class:`RouteInput`, :class:`Judgement`, and :class:`SignalRouter` (one answer feature as the score).
- :func:`features`: answer features from a :class:`cascade.logprobs.TokenLogprobs` (the one token-logprobs type).
- :class:`LearnedRouter`: a fitted classifier as the score.
- :func:`load_router`, :class:`RouterSlot` (validated hot reload), :func:`save_router`.
- :func:`calibrate`: the threshold for a quality target or an escalation budget, with confidence.
"""

from importlib import import_module
from typing import Any

from router.policy import Judgement, RouteInput, Router, SignalRouter, decide
from router.signals import CONFIDENCE_SIGNALS, FEATURE_NAMES, features

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
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'router' has no attribute {name!r}")


__all__ = [
    "CONFIDENCE_SIGNALS",
    "FEATURE_NAMES",
    "Calibration",
    "CalibrationError",
    "Judgement",
    "LearnedRouter",
    "RouteInput",
    "Router",
    "RouterLoadError",
    "RouterSlot",
    "SignalRouter",
    "calibrate",
    "decide",
    "features",
    "load_router",
    "save_router",
]
