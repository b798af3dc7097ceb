"""How close the certified threshold comes to the oracle's, and why it cannot come much closer.

    python -m bench.calibration_power [--days 400] [--seed 0]

Synthetic days with a known risk (scores uniform on [0, 1], ``P(student wrong | s)`` logistic), each calibrated
by :func:`router.calibration.calibrate` at a 95% quality target with 95% confidence, for n = 1,000 and 5,000
labelled pairs. Reported per n: the share of days that certify, the violations (days whose threshold's true
accepted risk exceeds 5%; at most 5% is the promise), and the mean escalation rate against two references:

* the **oracle**: the threshold whose true accepted risk is exactly 5% (known only to the simulation);
* the **known-cut test**: the most lenient cut that a single binomial test at level 5%, told in advance
  which cut to test, certifies on at least half of the days. No valid procedure that must find its cut
  from the same labels does better than this in the median, so the gap between it and the oracle is the
  price of certifying at all with n labels, not of the search.

-> ``bench/results/calibration_power.json``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binom

from router.calibration import CalibrationError, calibrate

RESULTS = Path(__file__).parent / "results" / "calibration_power.json"
EPS, CONFIDENCE = 0.05, 0.95
MODELS = {"logistic, slope 8": (0.1, 8.0), "logistic, slope 16": (0.15, 16.0)}  # (shift, slope)


def risk_model(shift: float, slope: float) -> Any:
    return lambda s: 1 / (1 + np.exp((s - shift) * slope))


def tail_risk(risk: Any) -> tuple[np.ndarray, np.ndarray]:
    """(grid of thresholds t, true disagreement among answers with score >= t), scores uniform on [0, 1]."""
    grid = np.linspace(0, 1, 100_001)
    return grid, np.cumsum(risk(grid)[::-1])[::-1] / np.arange(grid.size, 0, -1)


def accepted_risk(risk: Any) -> Callable[[float], float]:
    """The true disagreement among answers with score >= t, as a function of t."""
    grid, tail = tail_risk(risk)
    return lambda t: float(tail[min(np.searchsorted(grid, t), grid.size - 1)])


def known_cut_escalation(grid: np.ndarray, tail: np.ndarray, n: int) -> float:
    """The smallest escalation t whose cut a level-delta binomial test, told the cut, passes on >= half the days."""
    for t, r in zip(grid[::100], tail[::100], strict=True):
        m = round(n * (1 - t))
        if m < 1:
            continue
        passing = np.flatnonzero(binom.cdf(np.arange(m + 1), m, EPS) <= 1 - CONFIDENCE)
        if passing.size and binom.cdf(passing[-1], m, r) >= 0.5:
            return float(t)
    return 1.0


def run(days: int, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"target_quality": 1 - EPS, "confidence": CONFIDENCE, "days": days, "models": {}}
    for name, (shift, slope) in MODELS.items():
        risk = risk_model(shift, slope)
        grid, tail = tail_risk(risk)
        truth = accepted_risk(risk)
        oracle = float(grid[np.argmax(tail <= EPS)])
        rows = {}
        for n in (1000, 5000):
            rng = np.random.default_rng(seed)
            escalations, violations, certified = [], 0, 0
            for _ in range(days):
                scores = rng.uniform(size=n)
                ok = rng.uniform(size=n) >= risk(scores)
                try:
                    t = calibrate(scores, ok, target_quality=1 - EPS, confidence=CONFIDENCE).threshold
                except CalibrationError:
                    escalations.append(1.0)  # nothing certified: everything goes to the teacher
                    continue
                certified += 1
                violations += truth(t) > EPS
                escalations.append(t)
            known = known_cut_escalation(grid, tail, n)
            mean = float(np.mean(escalations))
            rows[str(n)] = {
                "certified_share": certified / days,
                "violation_share": float(violations) / days,
                "mean_escalation": round(mean, 4),
                "oracle_escalation": round(oracle, 4),
                "known_cut_escalation": round(known, 4),
                "ratio_to_oracle": round(mean / oracle, 3),
                "ratio_to_known_cut": round(mean / known, 3),
            }
            print(f"{name}, n={n}: {rows[str(n)]}")
        out["models"][name] = rows
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = run(args.days, args.seed)
    result["command"] = f"python -m bench.calibration_power --days {args.days} --seed {args.seed}"
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {RESULTS}")


if __name__ == "__main__":
    main()
