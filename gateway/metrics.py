"""Prometheus metrics of the gateway (prefix ``cascade_``, base units, ``_total`` counters, bounded labels).

Labels never carry users, prompts or request ids: ``tier`` is student|teacher|none, ``model`` one of the two
configured model names, ``reason`` and ``outcome`` small fixed sets. With several uvicorn workers set
``PROMETHEUS_MULTIPROC_DIR`` (``cascade serve --workers N`` does it): every worker writes its values there and
``/metrics`` adds them up, so counts are right whichever worker a scrape lands on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from cascade.config import PriceSettings
from cascade.terms import Reason, Tier
from gateway.breaker import CircuitBreaker
from gateway.exchange import Exchange, TierCall

# Reasons that send a cascade request on to the teacher.
ESCALATING = tuple(reason for reason in Reason if reason.escalates)
TIER_STATES = ("ready", "down", "circuit_open", "model_missing", "adapter_missing")

# From a fast answer (10 ms) to a long generation (2 min).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 120)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
CONFIDENCE_BUCKETS = tuple(i / 20 for i in range(1, 21))


class Metrics:
    def __init__(self, teacher_price: PriceSettings, registry: CollectorRegistry | None = None) -> None:
        self.teacher_price = teacher_price
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "cascade_requests_total",
            "Chat completion requests, by the tier that answered, the outcome and the HTTP status",
            ["tier", "outcome", "status"],
            registry=r,
        )
        self.decisions = Counter(
            "cascade_decisions_total",
            "Requests by routing reason: " + ", ".join(Reason),
            ["reason"],
            registry=r,
        )
        self.escalations = Counter(
            "cascade_escalations_total",
            "Cascade requests sent on to the teacher, by reason (" + ", ".join(ESCALATING) + ")",
            ["reason"],
            registry=r,
        )
        self.tokens = Counter(
            "cascade_tokens_total",
            "Tokens processed, by model and kind (prompt|completion)",
            ["model", "kind"],
            registry=r,
        )
        self.cost = Counter("cascade_cost_usd_total", "Money spent, in USD, by model", ["model"], registry=r)
        self.teacher_only_cost = Counter(
            "cascade_teacher_only_cost_usd_total",
            "What the same requests would have cost had every one gone to the teacher, in USD",
            registry=r,
        )
        self.latency = Histogram(
            "cascade_request_duration_seconds",
            "Time from request to the end of the answer, by the tier that answered",
            ["tier"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "cascade_time_to_first_token_seconds",
            "Time from request to the first content token sent on a stream, by tier",
            ["tier"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.confidence = Histogram(
            "cascade_router_confidence",
            "The router's confidence in the student's answers",
            buckets=CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "cascade_upstream_errors_total", "Failed calls to an upstream, by upstream", ["upstream"], registry=r
        )
        self.fallbacks = Counter(
            "cascade_fallbacks_total",
            "Requests another tier answered because one failed, by the upstream that failed",
            ["upstream"],
            registry=r,
        )
        self.circuit_open = Gauge(
            "cascade_upstream_circuit_open",
            "1 while an upstream's circuit breaker is open (calls fail fast), else 0",
            ["upstream"],
            registry=r,
            multiprocess_mode="max",
        )
        self.upstream_ready = Gauge(
            "cascade_upstream_ready",
            "1 while a tier serves the model the gateway asks of it (checked every server.health_check_s), else 0",
            ["upstream"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self.upstream_state = Gauge(
            "cascade_upstream_state",
            "1 for each tier's current state: " + ", ".join(TIER_STATES),
            ["upstream", "state"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.adapter_missing = Gauge(
            "cascade_student_adapter_missing",
            "1 while the student server does not serve the promoted adapter (the alias falls back meanwhile)",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.adapter_reloads = Counter(
            "cascade_student_adapter_reloads_total",
            "Re-loads of the promoted adapter into a student server that had forgotten it, by outcome",
            ["outcome"],
            registry=r,
        )
        self.shadow_agreement = Counter(
            "cascade_shadow_agreement_total",
            "Accepted answers also sent to the teacher (shadow), by whether the two answers agree",
            ["agree"],
            registry=r,
        )
        self.shadows_skipped = Counter(
            "cascade_shadows_skipped_total",
            "Shadows drawn but not sent: log_store.shadow_max_in_flight were running (the share achieved falls)",
            registry=r,
        )
        self.log_queue_depth = Gauge(
            "cascade_log_queue_depth",
            "Log records waiting in memory to be written",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.log_queue_bytes = Gauge(
            "cascade_log_queue_bytes",
            "Approximate bytes of the log records waiting in memory (bounded by log_store.queue_max_bytes)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.log_spool_bytes = Gauge(
            "cascade_log_spool_bytes",
            "Bytes of log records spooled to disk while the database is away",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.log_dropped = Gauge(
            "cascade_log_dropped_records",
            "Log records dropped: the in-memory queue was full and spilling to the spool fell as far behind",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.router_errors = Counter(
            "cascade_router_errors_total",
            "Requests a router artefact failed on (the request was escalated)",
            registry=r,
        )
        self.usage_estimated = Counter(
            "cascade_usage_estimated_total",
            "Streamed calls that ended without their usage chunk (the client left, the upstream died): their "
            "tokens and cost were counted by the gateway from what it relayed, by upstream",
            ["upstream"],
            registry=r,
        )
        self.log_record_errors = Counter(
            "cascade_log_record_errors_total", "Requests whose log record could not be built", registry=r
        )
        self.breakers: dict[str, CircuitBreaker] = {}
        self._versions: dict[str, str] = {}
        self.info = Gauge(
            "cascade_version_info",
            "Versions in use (value 1): router and student",
            ["component", "version"],
            registry=r,
            multiprocess_mode="max",
        )

    def prime(self, models: list[str]) -> None:
        """Create every bounded label set at zero, so rates and dashboards have series before traffic."""
        for reason in Reason:
            self.decisions.labels(reason)
        for reason in ESCALATING:
            self.escalations.labels(reason)
        for outcome in ("ok", "failed", "no_path"):
            self.adapter_reloads.labels(outcome)
        self.adapter_missing.set(0)
        for model in models:
            self.cost.labels(model)
            for kind in ("prompt", "completion"):
                self.tokens.labels(model, kind)
        for agree in ("true", "false"):
            self.shadow_agreement.labels(agree)
        for tier in ("student", "teacher"):
            self.circuit_open.labels(tier).set(0)
            self.upstream_errors.labels(tier)
            self.fallbacks.labels(tier)

    def set_version(self, component: str, version: str) -> None:
        previous = self._versions.get(component)
        if previous == version:
            return
        if previous is not None:
            self.info.remove(component, previous)
        self._versions[component] = version
        self.info.labels(component, version).set(1)

    def observe(self, exchange: Exchange) -> None:
        """Count one finished request (called exactly once per request, streamed or not)."""
        tier = exchange.tier or "none"
        self.requests.labels(tier, exchange.outcome, str(exchange.status)).inc()
        if exchange.reason is not None:
            self.decisions.labels(exchange.reason).inc()
        if exchange.tier == "teacher" and exchange.reason in ESCALATING:
            self.escalations.labels(exchange.reason).inc()
        if exchange.confidence is not None:
            self.confidence.observe(exchange.confidence)
        for call in exchange.calls:
            if call.error is not None:
                self.upstream_errors.labels(call.tier).inc()
            if call.usage_estimated:
                self.usage_estimated.labels(call.tier).inc()
            self.tokens.labels(call.model, "prompt").inc(call.prompt_tokens)
            self.tokens.labels(call.model, "completion").inc(call.completion_tokens)
            self.cost.labels(call.model).inc(call.cost_usd)
        for name, breaker in self.breakers.items():
            self.circuit_open.labels(name).set(1 if breaker.state == "open" else 0)
        if exchange.reason == Reason.STUDENT_DOWN:
            self.fallbacks.labels(Tier.STUDENT).inc()
        if exchange.outcome == "ok":
            self.teacher_only_cost.inc(exchange.teacher_only_cost_usd(self.teacher_price))
            self.latency.labels(tier).observe(exchange.duration_s)
            if exchange.ttft_s is not None:
                self.ttft.labels(tier).observe(exchange.ttft_s)

    def observe_tiers(self, states: Mapping[str, str], adapter_missing: bool) -> None:
        for tier, state in states.items():
            self.upstream_ready.labels(tier).set(1 if state == "ready" else 0)
            for name in TIER_STATES:
                self.upstream_state.labels(tier, name).set(1 if name == state else 0)
        self.adapter_missing.set(1 if adapter_missing else 0)

    def observe_shadow(self, call: TierCall, agree: bool) -> None:
        self.shadow_agreement.labels("true" if agree else "false").inc()
        self.tokens.labels(call.model, "prompt").inc(call.prompt_tokens)
        self.tokens.labels(call.model, "completion").inc(call.completion_tokens)
        self.cost.labels(call.model).inc(call.cost_usd)

    def observe_log(self, queue_depth: int, queue_bytes: int, spool_bytes: int, dropped: int) -> None:
        self.log_queue_depth.set(queue_depth)
        self.log_queue_bytes.set(queue_bytes)
        self.log_spool_bytes.set(spool_bytes)
        self.log_dropped.set(dropped)

    def exposed(self) -> CollectorRegistry:
        """The registry ``/metrics`` shows: this process's, or every worker's added up."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return registry
        return self.registry

    def exposition(self) -> bytes:
        return generate_latest(self.exposed())
