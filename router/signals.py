"""Confidence signals computed from the token logprobs of the student's answer.

Two layers:

- :func:`features` turns an answer's :class:`~cascade.logprobs.TokenLogprobs` (the one token-logprobs type:
  the chosen token's logprob and the top-k alternatives' per position) into named floats: mean logprob and
  its exponential (the geometric-mean token probability), minimum and low quantiles of token probability
  (length-robust, Gupta et al., ICLR 2024), mean top-k entropy, top-1/top-2 margin (first token and mean),
  answer length. Vectorised numpy, microseconds. One name, one meaning: ``mean_logprob`` is always the raw
  mean (<= 0), ``mean_prob`` its exponential in [0, 1].

Any feature serves as a confidence through :class:`router.policy.SignalRouter`; the probability-valued ones
(:data:`CONFIDENCE_SIGNALS`) are those a threshold in [0, 1] reads naturally. An answer without tokens has
all probabilities 0: there is nothing to trust.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cascade.logprobs import TokenLogprobs

# vLLM reports -9999.0 (and some servers -inf) for tokens of zero probability: clip to a finite floor.
LOGPROB_FLOOR = -100.0

FEATURE_NAMES: tuple[str, ...] = (
    "mean_logprob",
    "mean_prob",
    "min_prob",
    "prob_q10",
    "prob_q25",
    "mean_entropy",
    "first_margin",
    "mean_margin",
    "length",
)
# probabilities (or differences of them) in [0, 1], higher = surer: the gateway's `router.signal` choices
CONFIDENCE_SIGNALS: tuple[str, ...] = ("mean_prob", "min_prob", "prob_q10", "prob_q25", "first_margin", "mean_margin")


def _clamped(tokens: TokenLogprobs) -> tuple[np.ndarray, np.ndarray]:
    """The chosen tokens' logprobs and the alternatives' (descending, padding and -inf at the floor), float64."""
    logprobs = np.maximum(np.nan_to_num(tokens.logprobs.astype(np.float64), nan=LOGPROB_FLOOR), LOGPROB_FLOOR)
    top = np.maximum(np.nan_to_num(tokens.top_logprobs.astype(np.float64), nan=LOGPROB_FLOOR), LOGPROB_FLOOR)
    return logprobs, -np.sort(-top, axis=1)


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
    lp, top = _clamped(tokens)
    probs = np.exp(lp)
    mean_logprob = float(lp.mean())
    q10, q25 = np.quantile(probs, (0.10, 0.25))
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
        "mean_logprob": mean_logprob,
        "mean_prob": float(np.exp(mean_logprob)),
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
