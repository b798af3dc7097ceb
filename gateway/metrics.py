"""Prometheus metrics of the gateway (prefix ``cascade_``, base units, bounded labels)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

# Buckets that fit LLM latencies: from a cached/fast answer (10 ms) to a long generation (2 min).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 120)


class Metrics:
    """One set of metrics per app, on its own registry (so tests and several apps never collide)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "cascade_requests_total",
            "Chat completion requests answered, by the tier that answered and the outcome",
            ["tier", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cascade_request_duration_seconds",
            "Time from request to the end of the answer, by the tier that answered",
            ["tier"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.escalations = Counter(
            "cascade_escalations_total",
            "Cascade requests the teacher answered, by reason (not_confident, student_down)",
            ["reason"],
            registry=self.registry,
        )

    def observe(self, tier: str, outcome: str, reason: str, seconds: float) -> None:
        self.requests.labels(tier, outcome).inc()
        self.latency.labels(tier).observe(seconds)
        if tier == "teacher" and reason in ("not_confident", "student_down"):
            self.escalations.labels(reason).inc()
