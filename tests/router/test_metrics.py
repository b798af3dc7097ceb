"""APGR, CPT and the routing curve against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from router.metrics import (
    apgr,
    bootstrap_apgr,
    cpt,
    oracle_strong_need,
    random_curve,
    routing_curve,
    summarize,
)

WEAK = np.array([1, 0, 1, 0], dtype=bool)
STRONG = np.array([1, 1, 0, 1], dtype=bool)
NEED = np.array([0.1, 0.9, 0.2, 0.8])  # sends prompt 1, then 3 (both gain), then 2 (loses), then 0


def test_curve_points_by_hand() -> None:
    curve = routing_curve(NEED, WEAK, STRONG)
    assert curve.share.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert curve.quality.tolist() == [0.5, 0.75, 1.0, 0.75, 0.75]
    assert curve.weak_quality == 0.5 and curve.strong_quality == 0.75
    assert curve.quality_at(0.125) == pytest.approx(0.625)


def test_apgr_and_cpt_by_hand() -> None:
    curve = routing_curve(NEED, WEAK, STRONG)
    # PGR = 0, 1, 2, 1, 1 at shares 0 .. 1 step 0.25: trapezoids 0.25 * (0.5 + 1.5 + 1.5 + 1) = 1.125
    assert apgr(curve) == pytest.approx(1.125)
    assert cpt(curve, 0.5) == pytest.approx(0.125)
    assert cpt(curve, 0.8) == pytest.approx(0.2)
    assert cpt(curve, 2.5) != cpt(curve, 2.5)  # never reached: NaN


def test_random_routing_is_the_diagonal() -> None:
    curve = random_curve(WEAK, STRONG)
    assert apgr(curve) == pytest.approx(0.5)
    assert cpt(curve, 0.5) == pytest.approx(0.5) and cpt(curve, 0.8) == pytest.approx(0.8)


def test_tied_scores_count_as_their_random_order_expectation() -> None:
    curve = routing_curve(np.zeros(4), WEAK, STRONG)
    assert curve.share.tolist() == [0.0, 1.0]
    assert apgr(curve) == pytest.approx(0.5)


def test_oracle_sends_only_the_prompts_the_strong_model_wins() -> None:
    curve = routing_curve(oracle_strong_need(WEAK, STRONG), WEAK, STRONG)
    assert curve.quality_at(0.5) == 1.0
    assert apgr(curve) > apgr(routing_curve(-NEED, WEAK, STRONG))


def test_summary_and_bootstrap() -> None:
    rng = np.random.default_rng(0)
    weak = rng.uniform(size=2000) < 0.6
    strong = rng.uniform(size=2000) < 0.85
    need = (strong.astype(float) - weak) + rng.normal(0, 1.0, 2000)  # informative but noisy
    m = summarize(routing_curve(need, weak, strong), shares=(0.3,))
    assert 0.5 < m.apgr < 1.0 and m.cpt50 < 0.5 and m.cpt80 < 0.8
    assert set(m.quality_at) == {"0.30"}
    low, high = bootstrap_apgr(need, weak, strong, rounds=50)
    assert low < m.apgr < high


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="equal length"):
        routing_curve(np.ones(3), WEAK, STRONG)
    with pytest.raises(ValueError, match="not better"):
        routing_curve(NEED, STRONG, WEAK).pgr()
