"""The built-in page's figures: snapshots of the gateway's own metrics, and what changed between two of them.

A :class:`Totals` is read from the same registry ``/metrics`` exposes (summed over workers when
``PROMETHEUS_MULTIPROC_DIR`` is set), so every figure on the page is a difference of two readings of counters
Prometheus would scrape. :class:`History` starts from the counters at the gateway's start (zero, for the
gateway's own) and keeps one snapshot every ``server.page_sample_s`` for a day; a window ("the last hour") is
the live reading minus the newest snapshot at least that old, so it covers the whole hour (up to one sample
more), or everything since the start when the gateway is younger. Pure functions, no HTTP.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Metric

from cascade.terms import Tier

TIERS = (Tier.STUDENT.value, Tier.TEACHER.value)
QUANTILES = (0.5, 0.95, 0.99)
WINDOWS = {"hour": 3600.0, "day": 86400.0}


@dataclass(frozen=True)
class Totals:
    """Cumulative counts at one moment: requests by tier that answered (``none``: no tier did), answered
    requests (outcome ok) by tier, money spent (shadows included), what teacher-only would have cost, and the
    latency histogram's cumulative buckets by tier."""

    at: float
    requests: Mapping[str, float] = field(default_factory=dict)
    answered: Mapping[str, float] = field(default_factory=dict)
    cost_usd: float = 0.0
    teacher_only_usd: float = 0.0
    latency: Mapping[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)


def read_totals(families: Iterable[Metric], at: float | None = None) -> Totals:
    """The page's totals from collected metric families (``registry.collect()``)."""
    requests: dict[str, float] = {}
    answered: dict[str, float] = {}
    cost = teacher_only = 0.0
    buckets: dict[str, dict[float, float]] = {}
    for family in families:
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "cascade_requests_total":
                tier = labels["tier"]
                requests[tier] = requests.get(tier, 0.0) + sample.value
                if labels["outcome"] == "ok":
                    answered[tier] = answered.get(tier, 0.0) + sample.value
            elif sample.name == "cascade_cost_usd_total":
                cost += sample.value
            elif sample.name == "cascade_teacher_only_cost_usd_total":
                teacher_only += sample.value
            elif sample.name == "cascade_request_duration_seconds_bucket":
                tier_buckets = buckets.setdefault(labels["tier"], {})
                le = float(labels["le"])
                tier_buckets[le] = tier_buckets.get(le, 0.0) + sample.value
    latency = {tier: tuple(sorted(b.items())) for tier, b in buckets.items()}
    return Totals(time.time() if at is None else at, requests, answered, cost, teacher_only, latency)


def quantile(q: float, buckets: tuple[tuple[float, float], ...]) -> float | None:
    """Prometheus's ``histogram_quantile`` over cumulative ``(le, count)`` buckets (``+Inf`` last): linear
    within the bucket the rank falls in; the highest finite bound when it falls in ``+Inf``; None when empty."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def _minus(now: Mapping[str, float], then: Mapping[str, float]) -> dict[str, float]:
    return {key: value - then.get(key, 0.0) for key, value in now.items()}


def _bucket_minus(
    now: tuple[tuple[float, float], ...], then: tuple[tuple[float, float], ...]
) -> tuple[tuple[float, float], ...]:
    before = dict(then)
    return tuple((le, count - before.get(le, 0.0)) for le, count in now)


def window(now: Totals, then: Totals) -> dict[str, Any]:
    """What happened between two readings: requests (by tier), the teacher's share of the answered ones, the
    cost, teacher-only cost and savings, and latency percentiles by tier (seconds)."""
    requests = _minus(now.requests, then.requests)
    answered = _minus(now.answered, then.answered)
    by_tier = sum(answered.get(tier, 0.0) for tier in TIERS)
    cost = now.cost_usd - then.cost_usd
    teacher_only = now.teacher_only_usd - then.teacher_only_usd
    latency = {}
    for tier in TIERS:
        delta = _bucket_minus(now.latency.get(tier, ()), then.latency.get(tier, ()))
        latency[tier] = {f"p{round(q * 100)}": quantile(q, delta) for q in QUANTILES}
    return {
        "since": then.at,
        "until": now.at,
        "requests": round(sum(requests.values())),
        "requests_by_tier": {tier: round(requests.get(tier, 0.0)) for tier in (*TIERS, "none")},
        "teacher_share": answered.get(Tier.TEACHER.value, 0.0) / by_tier if by_tier else None,
        "cost_usd": cost,
        "teacher_only_cost_usd": teacher_only,
        "savings_usd": teacher_only - cost,
        "savings_share": 1 - cost / teacher_only if teacher_only > 0 else None,
        "latency_s": latency,
    }


class History:
    """Snapshots a day back, one every ``every_s``, after ``first`` (the counters when the gateway started:
    zero, at the time they started, when the gateway started them)."""

    def __init__(self, every_s: float, first: Totals, keep_s: float = WINDOWS["day"]) -> None:
        self.every_s = every_s
        self._snapshots: deque[Totals] = deque([first], maxlen=int(keep_s // every_s) + 2)

    def add(self, totals: Totals) -> None:
        self._snapshots.append(totals)

    def baseline(self, now: Totals, seconds: float) -> Totals:
        """The newest snapshot at least ``seconds`` older than ``now`` (the oldest kept if none is)."""
        chosen = self._snapshots[0]
        for snapshot in self._snapshots:
            if snapshot.at > now.at - seconds:
                break
            chosen = snapshot
        return chosen

    def windows(self, now: Totals) -> dict[str, dict[str, Any]]:
        return {name: window(now, self.baseline(now, seconds)) for name, seconds in WINDOWS.items()}

    def series(self, now: Totals, seconds: float = WINDOWS["day"], points: int = 288) -> list[dict[str, float]]:
        """Chart points over the window, at most ``points`` of them, one per interval between snapshots (the
        live reading is left out: a moment after a snapshot it would make a spike): answers by each tier per
        minute; cumulative cost and teacher-only cost since the window's start."""
        start = self.baseline(now, seconds)
        kept = [s for s in self._snapshots if start.at <= s.at <= now.at]
        step = max(1, math.ceil((len(kept) - 1) / points))
        chosen = kept[::-1][::step][::-1]  # thinned from the newest back, so the newest snapshot stays
        out: list[dict[str, float]] = []
        for previous, current in itertools.pairwise(chosen):
            minutes = max(current.at - previous.at, 1e-9) / 60
            answered = _minus(current.answered, previous.answered)
            point = {"t": current.at}
            for tier in TIERS:
                point[f"{tier}_per_min"] = answered.get(tier, 0.0) / minutes
            point["cost_usd"] = current.cost_usd - start.cost_usd
            point["teacher_only_cost_usd"] = current.teacher_only_usd - start.teacher_only_usd
            out.append(point)
        return out
