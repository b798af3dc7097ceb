"""Confidence signals computed from the token logprobs of the student's answer.

Two layers:

- :class:`TokenLogprobs` holds an answer's logprobs as arrays (the chosen token's logprob and the top-k
  alternatives' logprobs per position) and :func:`features` turns it into named floats: mean logprob,
  minimum and low quantiles of token probability (length-robust, Gupta et al., ICLR 2024), mean top-k
  entropy, top-1/top-2 margin (first token and mean), answer length. Vectorised numpy, microseconds.
- :data:`SIGNALS`: simple confidences in [0, 1] from a plain list of logprobs (higher = surer), used by
  :func:`router.policy.make_router`. An answer without tokens has confidence 0: there is nothing to trust.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Signal = Callable[[Sequence[float]], float]

# vLLM reports -9999.0 (and some servers -inf) for tokens of zero probability: clip to a finite floor.
LOGPROB_FLOOR = -100.0

FEATURE_NAMES: tuple[str, ...] = (
    "mean_logprob",
    "min_prob",
    "prob_q10",
    "prob_q25",
    "mean_entropy",
    "first_margin",
    "mean_margin",
    "length",
)


@dataclass(frozen=True, slots=True)
class TokenLogprobs:
    """An answer's token logprobs: ``logprobs[i]`` for the chosen token at position i, and ``top[i, j]``
    the j-th most likely alternative's logprob (descending; padded with :data:`LOGPROB_FLOOR` where a
    position has fewer than k alternatives). ``top`` has shape (n, k), k may be 0."""

    tokens: tuple[str, ...]
    logprobs: np.ndarray
    top: np.ndarray

    def __post_init__(self) -> None:
        if self.logprobs.ndim != 1 or self.top.ndim != 2 or self.top.shape[0] != self.logprobs.shape[0]:
            raise ValueError(f"shape mismatch: logprobs {self.logprobs.shape}, top {self.top.shape}")
        if len(self.tokens) != self.logprobs.shape[0]:
            raise ValueError("one token string per logprob is required")

    def __len__(self) -> int:
        return int(self.logprobs.shape[0])

    @classmethod
    def from_openai(cls, content: Sequence[Mapping[str, Any]] | None) -> TokenLogprobs:
        """From OpenAI ``choices[0].logprobs.content``: items ``{token, logprob, top_logprobs: [{token,
        logprob}]}``. ``None`` or ``[]`` gives an empty answer."""
        content = content or []
        n = len(content)
        k = max((len(item.get("top_logprobs") or ()) for item in content), default=0)
        logprobs = np.empty(n, dtype=np.float64)
        top = np.full((n, k), LOGPROB_FLOOR, dtype=np.float64)
        tokens = []
        for i, item in enumerate(content):
            tokens.append(str(item.get("token", "")))
            logprobs[i] = float(item["logprob"])
            alternatives = item.get("top_logprobs") or ()
            if alternatives:
                top[i, : len(alternatives)] = [float(alt["logprob"]) for alt in alternatives]
        return cls.from_arrays(logprobs, top, tuple(tokens))

    @classmethod
    def from_arrays(
        cls, logprobs: Sequence[float] | np.ndarray, top: np.ndarray | None = None, tokens: Sequence[str] = ()
    ) -> TokenLogprobs:
        lp = np.maximum(np.nan_to_num(np.asarray(logprobs, dtype=np.float64), nan=LOGPROB_FLOOR), LOGPROB_FLOOR)
        if top is None:
            top = np.zeros((lp.shape[0], 0))
        tp = np.asarray(top, dtype=np.float64)
        tp = -np.sort(-np.maximum(np.nan_to_num(tp, nan=LOGPROB_FLOOR), LOGPROB_FLOOR), axis=1)
        names = tuple(tokens) if tokens else ("",) * lp.shape[0]
        return cls(names, lp, tp)


def _empty_features() -> dict[str, float]:
    return dict.fromkeys(FEATURE_NAMES, 0.0) | {"mean_logprob": LOGPROB_FLOOR}


def features(tokens: TokenLogprobs) -> dict[str, float]:
    """The named confidence features of one answer (see :data:`FEATURE_NAMES`).

    Entropy per position is over the top-k probabilities plus one bucket for the remaining mass
    ``1 - sum(top-k)``. The margin is ``p(top-1) - p(top-2)``; where the server returned no alternatives
    the chosen token stands in for top-1 and top-2 counts as 0. An empty answer has all probabilities 0.
    """
    n = len(tokens)
    if n == 0:
        return _empty_features()
    lp = tokens.logprobs
    probs = np.exp(lp)
    q10, q25 = np.quantile(probs, (0.10, 0.25))
    top = tokens.top
    if top.shape[1] == 0:
        top = lp[:, None]
    # the chosen token (sampled) may be missing from the top-k list: the top-1 is the larger of the two
    top_p = np.exp(top)
    p1 = np.maximum(top_p[:, 0], probs)
    p2 = top_p[:, 1] if top_p.shape[1] > 1 else np.zeros(n)
    p2 = np.where(top_p[:, 0] >= probs, p2, top_p[:, 0])
    margin = p1 - p2
    rest = np.clip(1.0 - top_p.sum(axis=1), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(top_p > 0, top_p * np.log(top_p), 0.0).sum(axis=1)
        rlogr = np.where(rest > 0, rest * np.log(rest), 0.0)
    entropy = -(plogp + rlogr)
    return {
        "mean_logprob": float(lp.mean()),
        "min_prob": float(probs.min()),
        "prob_q10": float(q10),
        "prob_q25": float(q25),
        "mean_entropy": float(entropy.mean()),
        "first_margin": float(margin[0]),
        "mean_margin": float(margin.mean()),
        "length": float(n),
    }


def feature_matrix(answers: Sequence[TokenLogprobs], names: Sequence[str] = FEATURE_NAMES) -> np.ndarray:
    """Stack :func:`features` of many answers into an (n, len(names)) float array."""
    out = np.empty((len(answers), len(names)), dtype=np.float64)
    for i, answer in enumerate(answers):
        row = features(answer)
        out[i] = [row[name] for name in names]
    return out


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
