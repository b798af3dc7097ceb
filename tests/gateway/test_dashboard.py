"""The page's figures in process: totals read from a real metrics registry, windows, quantiles, chart series."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from cascade.config import PriceSettings
from gateway.dashboard import History, Totals, quantile, read_totals, window
from gateway.metrics import Metrics
from gateway.page import recent_cycles


def registry_after(answers: dict[str, int], cost: float, teacher_only: float, latencies: list[float]) -> Metrics:
    metrics = Metrics(PriceSettings())
    for tier, count in answers.items():
        metrics.requests.labels(tier, "ok", "200").inc(count)
    metrics.requests.labels("none", "error", "400").inc(2)  # refused: counted as requests, answered by no tier
    metrics.cost.labels("student-model").inc(cost)
    metrics.teacher_only_cost.inc(teacher_only)
    for seconds in latencies:
        metrics.latency.labels("student").observe(seconds)
    return metrics


def test_totals_are_read_from_the_registry_the_metrics_endpoint_shows() -> None:
    metrics = registry_after({"student": 7, "teacher": 3}, 0.25, 1.0, [0.02, 0.03, 0.2])
    totals = read_totals(metrics.exposed().collect(), at=100.0)
    assert totals.requests == {"student": 7, "teacher": 3, "none": 2}
    assert totals.answered == {"student": 7, "teacher": 3}
    assert (totals.cost_usd, totals.teacher_only_usd) == (0.25, 1.0)
    buckets = dict(totals.latency["student"])
    assert buckets[0.025] == 1 and buckets[0.05] == 2 and buckets[0.25] == 3 and buckets[math.inf] == 3


def test_quantile_interpolates_within_a_bucket_as_prometheus_does() -> None:
    buckets = ((0.1, 2.0), (0.5, 6.0), (math.inf, 8.0))
    assert quantile(0.5, buckets) == pytest.approx(0.3)  # rank 4: half-way through (0.1, 0.5]
    assert quantile(0.25, buckets) == pytest.approx(0.1)
    assert quantile(0.99, buckets) == 0.5  # in +Inf: the highest finite bound
    assert quantile(0.5, ((0.1, 0.0), (math.inf, 0.0))) is None
    assert quantile(0.5, ()) is None


def test_a_window_is_the_difference_of_two_readings() -> None:
    then = Totals(0.0, {"student": 10, "teacher": 10}, {"student": 10, "teacher": 10}, 1.0, 2.0)
    now = Totals(60.0, {"student": 16, "teacher": 12, "none": 1}, {"student": 16, "teacher": 12}, 1.5, 4.0)
    figures = window(now, then)
    assert figures["requests"] == 9 and figures["requests_by_tier"] == {"student": 6, "teacher": 2, "none": 1}
    assert figures["teacher_share"] == pytest.approx(2 / 8)
    assert figures["cost_usd"] == pytest.approx(0.5) and figures["teacher_only_cost_usd"] == pytest.approx(2.0)
    assert figures["savings_usd"] == pytest.approx(1.5) and figures["savings_share"] == pytest.approx(0.75)
    quiet = window(then, then)
    assert quiet["requests"] == 0 and quiet["teacher_share"] is None and quiet["savings_share"] is None


def test_history_windows_cover_the_whole_window_and_series_end_at_the_newest_snapshot() -> None:
    history = History(every_s=600.0, first=Totals(0.0))  # zero at the start, then a snapshot every 10 minutes
    for minute in range(10, 181, 10):  # three hours: one teacher and two student answers a minute
        n = minute // 10
        answered = {"student": 2 * n, "teacher": n}
        history.add(Totals(minute * 60.0, answered=answered, cost_usd=n, teacher_only_usd=3 * n))
    now = Totals(181 * 60.0, answered={"student": 37, "teacher": 18}, cost_usd=18.5, teacher_only_usd=55.0)
    hour = history.windows(now)["hour"]
    assert hour["since"] == 120 * 60.0  # the newest snapshot at least an hour old: the window is the whole hour
    assert hour["cost_usd"] == pytest.approx(18.5 - 12)
    day = history.windows(now)["day"]
    assert day["since"] == 0.0 and day["teacher_share"] == pytest.approx(18 / 55)  # since the start
    series = history.series(now, points=5)
    # thinned from the newest back (every 4th snapshot: minutes 180, 140, 100, 60, 20); the live reading is left out
    assert [point["t"] for point in series] == [60 * 60.0, 100 * 60.0, 140 * 60.0, 180 * 60.0]
    assert series[-1]["student_per_min"] == pytest.approx((36 - 28) / 40)
    assert series[-1]["cost_usd"] == pytest.approx(18) and series[-1]["teacher_only_cost_usd"] == pytest.approx(54)
    assert sum(point["student_per_min"] * 40 for point in series) == pytest.approx(36 - 4)
    young = History(every_s=30.0, first=Totals(1000.0))
    assert young.windows(Totals(1010.0))["day"]["since"] == 1000.0  # a young gateway: since its start
    assert young.series(Totals(1010.0)) == []


def test_recent_cycles_are_the_newest_runs_and_a_damaged_report_is_skipped(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for run, body in {
        "20261201T010000Z": {"decision": "kept", "reasons": ["no gain"], "metrics": {"heldout_candidate": None}},
        "20261202T010000Z": {"decision": "promoted", "counts": {"train": 40}},
        "20261203T010000Z": [],  # valid JSON, not a report
        "20261204T010000Z": "{not json",
        "not a run id": {"decision": "promoted"},
    }.items():
        (runs / run).mkdir(parents=True)
        (runs / run / "report.json").write_text(body if isinstance(body, str) else json.dumps(body))
    cycles = recent_cycles(runs)
    assert [c["run_id"] for c in cycles] == ["20261202T010000Z", "20261201T010000Z"]
    assert cycles[0]["examples"] == 40 and cycles[0]["report"] is None  # no report.html beside it
    assert cycles[1]["reasons"] == ["no gain"] and cycles[1]["heldout_candidate"] is None
    assert recent_cycles(runs, limit=1) == cycles[:1] and recent_cycles(tmp_path / "none") == []
