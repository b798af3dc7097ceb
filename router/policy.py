"""The threshold rule, in one place: a router scores the student's answer, and the answer is accepted when
``score >= threshold``; otherwise the request escalates to the teacher.

Every router (:class:`Router`) has one scoring method, higher meaning "the student is more likely right":

- :class:`SignalRouter` (here, numpy only): one named feature of the answer's token logprobs
  (:data:`router.signals.FEATURE_NAMES`), e.g. ``mean_prob`` or ``min_prob``. The gateway's default
  (``router.signal``, ``router.threshold``) is one of these.
- :class:`router.scorers.LearnedRouter`: a fitted classifier over answer features and the prompt.

The gateway, the calibration, the offline and live evaluations and the re-distillation gate all decide
through :func:`decide`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from cascade.logprobs import TokenLogprobs
from cascade.terms import Decision, Reason
from router.signals import FEATURE_NAMES, features

Kind = Literal["signal", "post_hoc", "pre_generation"]


@dataclass(frozen=True, slots=True)
class Judgement:
    """What the router made of one answer: its confidence and the reason it is accepted or escalated."""

    confidence: float
    reason: Reason

    @property
    def accept(self) -> bool:
        return self.reason.decision is Decision.ACCEPT


@dataclass(frozen=True, slots=True)
class RouteInput:
    """What a router may look at: the prompt (text or its embedding) and the student's answer."""

    prompt: str | None = None
    answer: TokenLogprobs | None = None
    embedding: np.ndarray | None = None
    answer_features: Mapping[str, float] | None = None  # ``features(answer)``, when the caller has them already

    def features(self, router: str) -> Mapping[str, float]:
        """The answer's features (:func:`router.signals.features`), computed only if not given."""
        if self.answer_features is not None:
            return self.answer_features
        if self.answer is None:
            raise ValueError(f"a {router} router needs the student's answer logprobs")
        return features(self.answer)


@runtime_checkable
class Router(Protocol):
    kind: Kind
    threshold: float

    def score(self, sample: RouteInput) -> float:
        """Higher = the student's answer is more trustworthy."""
        ...


def accepts(score: float, threshold: float) -> bool:
    """The rule itself: the student's answer stands when its score reaches the threshold."""
    return score >= threshold


def decide(router: Router, sample: RouteInput) -> Judgement:
    """Score ``sample`` and apply the rule at the router's threshold."""
    confidence = router.score(sample)
    return Judgement(confidence, Reason.CONFIDENT if accepts(confidence, router.threshold) else Reason.NOT_CONFIDENT)


@dataclass(slots=True)
class SignalRouter:
    """Score = one named feature of the answer (e.g. ``mean_prob``, ``prob_q10``)."""

    feature: str
    threshold: float
    kind: Kind = "signal"

    def __post_init__(self) -> None:
        if self.feature not in FEATURE_NAMES:
            raise ValueError(f"unknown feature {self.feature!r}; expected one of {list(FEATURE_NAMES)}")

    def score(self, sample: RouteInput) -> float:
        return sample.features(self.kind)[self.feature]
