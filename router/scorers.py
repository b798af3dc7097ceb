"""Learned routers: scikit-learn classifiers that score the student's answer (or, before generation, the prompt).

They follow the one rule of :mod:`router.policy` (accept when ``score >= threshold``):

- :class:`LearnedRouter` of kind ``post_hoc``: a classifier over the answer's features (optionally with the
  prompt embedding) predicting "the student's answer agrees with the teacher".
- :class:`LearnedRouter` of kind ``pre_generation``: a classifier over the prompt embedding only,
  predicting "the weak model will be right" before anything is generated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.special import expit
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from router.embedding import DIMENSION, PromptEmbedder, default_embedder
from router.policy import Kind, RouteInput
from router.prompt_stats import PROMPT_FEATURE_NAMES, prompt_features
from router.signals import FEATURE_NAMES

Target = Literal["student_ok", "gain"]
MODELS: tuple[str, ...] = ("logreg", "gbdt")
KNOWN_FEATURES: tuple[str, ...] = FEATURE_NAMES + PROMPT_FEATURE_NAMES


def make_model(name: str, seed: int = 0, c: float = 1.0) -> Pipeline | HistGradientBoostingClassifier:
    """A fresh classifier: ``logreg`` (standardised logistic regression) or ``gbdt`` (gradient boosting)."""
    if name == "logreg":
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    if name == "gbdt":
        return HistGradientBoostingClassifier(
            max_iter=200, learning_rate=0.05, max_leaf_nodes=15, l2_regularization=1.0, random_state=seed
        )
    raise ValueError(f"unknown model {name!r}; expected one of {list(MODELS)}")


@dataclass(slots=True)
class LearnedRouter:
    """A fitted classifier over ``[named features] + [prompt embedding if use_embedding]``.

    Named features are answer features (:data:`router.signals.FEATURE_NAMES`) or prompt statistics
    (:data:`router.prompt_stats.PROMPT_FEATURE_NAMES`). With ``target="student_ok"`` the positive class is
    "the student's answer is right" and the score is its probability; with ``target="gain"`` the classes
    are ``strong_ok - weak_ok`` in {-1, 0, 1} and the score is ``P(-1) - P(+1)`` = P(weak right) - P(strong
    right): the expected loss of quality from answering with the weak model, negated.
    """

    kind: Kind
    model: Any
    features: tuple[str, ...]
    use_embedding: bool
    threshold: float = 0.5
    target: Target = "student_ok"
    embedder: PromptEmbedder | None = field(default=None, repr=False, compare=False)

    @property
    def n_inputs(self) -> int:
        return len(self.features) + (DIMENSION if self.use_embedding else 0)

    def design_row(self, sample: RouteInput) -> np.ndarray:
        values: dict[str, float] = {}
        if any(name in FEATURE_NAMES for name in self.features):
            values |= sample.features(self.kind)
        if any(name in PROMPT_FEATURE_NAMES for name in self.features):
            if sample.prompt is None:
                raise ValueError(f"router {self.kind} needs the prompt text")
            values |= prompt_features(sample.prompt)
        parts = [np.array([values[name] for name in self.features], dtype=np.float64)]
        if self.use_embedding:
            vector = sample.embedding
            if vector is None:
                if sample.prompt is None:
                    raise ValueError(f"router {self.kind} needs the prompt or its embedding")
                vector = (self.embedder or default_embedder()).embed_one(sample.prompt)
            parts.append(np.asarray(vector, dtype=np.float64).reshape(-1))
        return np.concatenate(parts)[None, :]

    def warm_up(self) -> None:
        """Load the prompt embedder now (seconds) instead of on the first request."""
        if self.use_embedding:
            (self.embedder or default_embedder()).embed_one("warm up")

    def score_matrix(self, x: np.ndarray) -> np.ndarray:
        """Scores of many rows of the design matrix at once."""
        proba = _linear_proba(self.model, x)
        if proba is None:
            proba = np.asarray(self.model.predict_proba(x), dtype=np.float64)
        classes = [int(c) for c in self.model.classes_]
        if self.target == "gain":
            return proba[:, classes.index(-1)] - proba[:, classes.index(1)]
        return proba[:, classes.index(1)]

    def score(self, sample: RouteInput) -> float:
        return float(self.score_matrix(self.design_row(sample))[0])


def _linear_proba(model: Any, x: np.ndarray) -> np.ndarray | None:
    """``predict_proba`` of a standardised logistic regression in plain numpy (scikit-learn's input
    checks cost ~0.3 ms a call, too much per request); None for any other model."""
    if not isinstance(model, Pipeline) or len(model.steps) != 2:
        return None
    scaler, clf = model.steps[0][1], model.steps[1][1]
    if not isinstance(scaler, StandardScaler) or not isinstance(clf, LogisticRegression):
        return None
    z = ((x - scaler.mean_) / scaler.scale_) @ clf.coef_.T + clf.intercept_
    if z.shape[1] == 1:
        p = expit(z[:, 0])
        return np.stack([1.0 - p, p], axis=1)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def design_matrix(answer_features: np.ndarray | None, embeddings: np.ndarray | None) -> np.ndarray:
    """Concatenate answer features (n, f) and prompt embeddings (n, 384), either may be absent."""
    parts = [np.asarray(p, dtype=np.float64) for p in (answer_features, embeddings) if p is not None]
    if not parts:
        raise ValueError("a learned router needs answer features, embeddings, or both")
    return np.hstack(parts)


def train_router(
    x: np.ndarray,
    labels: np.ndarray,
    *,
    kind: Kind,
    feature_names: Sequence[str] = (),
    use_embedding: bool = False,
    target: Target = "student_ok",
    model: str = "logreg",
    c: float = 1.0,
    seed: int = 0,
    threshold: float = 0.5,
    embedding_dim: int = DIMENSION,
) -> LearnedRouter:
    """Fit a :class:`LearnedRouter` on a design matrix (see :func:`design_matrix`).

    ``labels``: booleans "the student is right" for ``target="student_ok"``; integers ``strong_ok -
    weak_ok`` in {-1, 0, 1} for ``target="gain"``. ``embedding_dim`` other than 384 is for offline
    evaluation with another prompt encoder only: such a router cannot be saved or serve requests."""
    y = np.asarray(labels).astype(np.int64)
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"design matrix {x.shape} does not match {y.shape[0]} labels")
    expected = len(feature_names) + (embedding_dim if use_embedding else 0)
    if x.shape[1] != expected:
        raise ValueError(f"design matrix has {x.shape[1]} columns, expected {expected}")
    unknown = [f for f in feature_names if f not in KNOWN_FEATURES]
    if unknown:
        raise ValueError(f"unknown feature(s) {unknown}")
    allowed = {-1, 0, 1} if target == "gain" else {0, 1}
    present = set(np.unique(y).tolist())
    if not present <= allowed:
        raise ValueError(f"labels {sorted(present)} do not fit target {target!r} (expected {sorted(allowed)})")
    needed = {-1, 1} if target == "gain" else {0, 1}
    if not needed <= present:
        raise ValueError(f"training labels lack class(es) {sorted(needed - present)}: nothing to learn")
    fitted = make_model(model, seed, c).fit(x, y)
    return LearnedRouter(kind, fitted, tuple(feature_names), use_embedding, threshold, target)
