"""Cost-quality metrics of a router between a weak and a strong model (RouteLLM's definitions).

A router orders prompts by how much they need the strong model; sending the top fraction ``c`` to the
strong model gives a quality (mean correctness) ``q(c)``. Metrics over that curve:

- PGR(c) = (q(c) - q_weak) / (q_strong - q_weak), the performance gap recovered.
- APGR = the area under PGR(c) for c in [0, 1] (random routing: exactly 0.5; can exceed 1 when the weak
  model is right where the strong one is wrong).
- CPT(x) = the smallest strong-call share c with PGR(c) >= x (random: c = x).

The curve here is exact: every cut-point of the ordering, with tied scores counted as their expected
value under a random order (the curve is linear across a tie group), not a 10-threshold sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Curve:
    """Strong-call share (ascending, 0 to 1) and the quality reached at that share."""

    share: np.ndarray
    quality: np.ndarray
    weak_quality: float
    strong_quality: float

    def quality_at(self, share: float) -> float:
        return float(np.interp(share, self.share, self.quality))

    def pgr(self) -> np.ndarray:
        gap = self.strong_quality - self.weak_quality
        if gap <= 0:
            raise ValueError("the strong model is not better than the weak one: PGR is undefined")
        return (self.quality - self.weak_quality) / gap


def routing_curve(strong_need: np.ndarray, weak_ok: np.ndarray, strong_ok: np.ndarray) -> Curve:
    """The quality curve when prompts are sent to the strong model in decreasing ``strong_need``."""
    need = np.asarray(strong_need, dtype=np.float64)
    weak = np.asarray(weak_ok, dtype=np.float64)
    strong = np.asarray(strong_ok, dtype=np.float64)
    n = need.shape[0]
    if n == 0 or weak.shape != (n,) or strong.shape != (n,):
        raise ValueError("strong_need, weak_ok and strong_ok must be non-empty and of equal length")
    if not np.all(np.isfinite(need)):
        raise ValueError("scores must be finite")
    order = np.argsort(-need, kind="stable")
    gain = (strong - weak)[order]
    cum = np.concatenate(([0.0], np.cumsum(gain)))
    sorted_need = need[order]
    # cut only at boundaries between distinct scores: a tie group is routed together (in expectation)
    boundaries = np.flatnonzero(np.diff(sorted_need) != 0) + 1
    cuts = np.concatenate(([0], boundaries, [n]))
    share = cuts / n
    quality = (weak.sum() + cum[cuts]) / n
    return Curve(share, quality, float(weak.mean()), float(strong.mean()))


def apgr(curve: Curve) -> float:
    """Average performance gap recovered: the area under PGR over strong-call share in [0, 1]."""
    pgr = curve.pgr()
    return float(np.sum((pgr[1:] + pgr[:-1]) * np.diff(curve.share)) / 2)


def cpt(curve: Curve, target: float) -> float:
    """Call-performance threshold: the smallest strong-call share whose PGR reaches ``target``."""
    pgr = curve.pgr()
    hit = np.flatnonzero(pgr >= target - 1e-12)
    if hit.size == 0:
        return float("nan")
    i = int(hit[0])
    if i == 0:
        return float(curve.share[0])
    # linear interpolation inside the segment where PGR crosses the target
    x0, x1 = curve.share[i - 1], curve.share[i]
    y0, y1 = pgr[i - 1], pgr[i]
    return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0))


def random_curve(weak_ok: np.ndarray, strong_ok: np.ndarray) -> Curve:
    """Random routing in expectation: the straight line from the weak to the strong model."""
    w, s = float(np.mean(weak_ok)), float(np.mean(strong_ok))
    return Curve(np.array([0.0, 1.0]), np.array([w, s]), w, s)


def oracle_strong_need(weak_ok: np.ndarray, strong_ok: np.ndarray) -> np.ndarray:
    """The oracle's order: first the prompts only the strong model gets right, last those only the weak."""
    return np.asarray(strong_ok, dtype=np.float64) - np.asarray(weak_ok, dtype=np.float64)


@dataclass(frozen=True)
class RouterMetrics:
    apgr: float
    cpt50: float
    cpt80: float
    quality_at: dict[str, float]

    def as_dict(self) -> dict[str, object]:
        return {"apgr": self.apgr, "cpt50": self.cpt50, "cpt80": self.cpt80, "quality_at": self.quality_at}


def summarize(curve: Curve, shares: Sequence[float] = (0.1, 0.2, 0.3, 0.5, 0.8)) -> RouterMetrics:
    return RouterMetrics(
        apgr(curve),
        cpt(curve, 0.5),
        cpt(curve, 0.8),
        {f"{s:.2f}": curve.quality_at(s) for s in shares},
    )


def bootstrap_apgr(
    strong_need: np.ndarray,
    weak_ok: np.ndarray,
    strong_ok: np.ndarray,
    rounds: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """A percentile bootstrap interval for APGR over the prompts (resampled with replacement)."""
    rng = np.random.default_rng(seed)
    n = len(strong_need)
    values = []
    for _ in range(rounds):
        idx = rng.integers(0, n, n)
        w, s = weak_ok[idx], strong_ok[idx]
        if s.mean() <= w.mean():
            continue
        values.append(apgr(routing_curve(strong_need[idx], w, s)))
    lo, hi = np.quantile(values, ((1 - level) / 2, (1 + level) / 2))
    return float(lo), float(hi)
