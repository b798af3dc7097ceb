"""Answer features from hand-built OpenAI logprob lists with known values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cascade.logprobs import TokenLogprobs
from router.policy import RouteInput, SignalRouter, decide
from router.signals import FEATURE_NAMES, LOGPROB_FLOOR, feature_matrix, features


def item(token: str, p: float, alternatives: list[float]) -> dict[str, object]:
    return {
        "token": token,
        "logprob": math.log(p),
        "top_logprobs": [{"token": f"{token}{i}", "logprob": math.log(q)} for i, q in enumerate(alternatives)],
    }


# three tokens: probabilities 0.9, 0.5, 0.2; top-2 alternatives listed (chosen token first where it is top)
CONTENT = [
    item("Paris", 0.9, [0.9, 0.05]),
    item(" is", 0.5, [0.5, 0.3]),
    item(".", 0.2, [0.6, 0.2]),  # the sampled token was the second most likely
]


def test_from_openai_gives_the_one_storage_form_the_features_read() -> None:
    tokens = TokenLogprobs.from_openai([*CONTENT, item("!", 0.1, [0.1])])  # the last position has one alternative
    assert tokens.tokens == ["Paris", " is", ".", "!"] and tokens.top_tokens is not None
    assert tokens.logprobs.dtype == tokens.top_logprobs.dtype == np.float32
    assert np.allclose(np.exp(tokens.logprobs), [0.9, 0.5, 0.2, 0.1])
    assert tokens.top_logprobs.shape == (4, 2) and np.isnan(tokens.top_logprobs[3, 1])  # padded with NaN
    assert TokenLogprobs.decode(tokens.encode()).tokens == tokens.tokens  # the log stores this same object
    f = features(tokens)
    assert all(math.isfinite(value) for value in f.values())  # the padding counts as the floor, not as NaN
    assert f["first_margin"] == pytest.approx(0.85)


def test_features_match_hand_computed_values() -> None:
    f = features(TokenLogprobs.from_openai(CONTENT))
    assert f["mean_logprob"] == pytest.approx((math.log(0.9) + math.log(0.5) + math.log(0.2)) / 3)
    assert f["min_prob"] == pytest.approx(0.2)
    # numpy linear quantiles of [0.2, 0.5, 0.9]: 10% -> 0.2 + 0.2 * 0.3, 25% -> 0.2 + 0.5 * 0.3
    assert f["prob_q10"] == pytest.approx(0.26)
    assert f["prob_q25"] == pytest.approx(0.35)
    assert f["first_margin"] == pytest.approx(0.85)
    assert f["mean_margin"] == pytest.approx((0.85 + 0.2 + 0.4) / 3)
    assert f["length"] == 3.0

    def h(ps: list[float]) -> float:
        rest = 1 - sum(ps)
        return -sum(p * math.log(p) for p in ps) - (rest * math.log(rest) if rest > 0 else 0.0)

    assert f["mean_entropy"] == pytest.approx((h([0.9, 0.05]) + h([0.5, 0.3]) + h([0.6, 0.2])) / 3)


def test_quantiles_are_length_robust_where_min_is_not() -> None:
    short = TokenLogprobs.from_arrays(np.log([0.9, 0.9, 0.3]))
    long = TokenLogprobs.from_arrays(np.log([0.9] * 97 + [0.3] * 3))
    assert features(short)["min_prob"] == features(long)["min_prob"]
    assert features(long)["prob_q10"] > features(short)["prob_q10"]


def test_certain_answer_has_zero_entropy_and_full_margin() -> None:
    f = features(TokenLogprobs.from_openai([item("A", 1.0, [1.0])]))
    assert f["mean_entropy"] == pytest.approx(0.0, abs=1e-12)
    assert f["first_margin"] == pytest.approx(1.0)
    assert f["min_prob"] == pytest.approx(1.0)


def test_without_top_logprobs_the_chosen_token_stands_in() -> None:
    f = features(TokenLogprobs.from_openai([{"token": "x", "logprob": math.log(0.7), "top_logprobs": []}]))
    assert f["first_margin"] == pytest.approx(0.7)
    assert f["mean_entropy"] == pytest.approx(-(0.7 * math.log(0.7) + 0.3 * math.log(0.3)))


def test_empty_answer_is_not_trusted() -> None:
    f = features(TokenLogprobs.from_openai(None))
    assert f["length"] == 0.0 and f["min_prob"] == 0.0 and f["mean_logprob"] == LOGPROB_FLOOR
    assert f["mean_prob"] == 0.0
    assert decide(SignalRouter("min_prob", 0.1), RouteInput(answer=TokenLogprobs.from_openai(None))).accept is False


def test_zero_probability_tokens_are_clipped_to_a_finite_floor() -> None:
    content = [{"token": "a", "logprob": -9999.0, "top_logprobs": [{"token": "b", "logprob": float("-inf")}]}]
    f = features(TokenLogprobs.from_openai(content))
    assert all(math.isfinite(v) for v in f.values())
    assert f["mean_logprob"] == LOGPROB_FLOOR


def test_feature_matrix_stacks_in_name_order() -> None:
    answers = [TokenLogprobs.from_openai(CONTENT), TokenLogprobs.from_openai(None)]
    matrix = feature_matrix(answers)
    assert matrix.shape == (2, len(FEATURE_NAMES))
    assert matrix[0, FEATURE_NAMES.index("length")] == 3.0
    assert matrix[1, FEATURE_NAMES.index("length")] == 0.0


def _answer(*probs: float) -> RouteInput:
    return RouteInput(answer=TokenLogprobs.from_openai([{"token": "t", "logprob": math.log(p)} for p in probs]))


def test_the_mean_probability_is_the_geometric_mean_and_decides_at_its_threshold() -> None:
    router = SignalRouter("mean_prob", 0.5)
    assert router.score(_answer(0.9, 0.8)) == pytest.approx(math.sqrt(0.9 * 0.8), rel=1e-6)
    assert decide(router, _answer(0.9, 0.8)).accept is True
    judgement = decide(router, _answer(0.2))
    assert judgement.accept is False and judgement.reason == "not_confident"
    exactly = router.score(_answer(0.2))
    assert decide(SignalRouter("mean_prob", exactly), _answer(0.2)).accept is True  # the threshold itself passes
    with pytest.raises(ValueError, match="unknown feature"):
        SignalRouter("nope", 0.5)
