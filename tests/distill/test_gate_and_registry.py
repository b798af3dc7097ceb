"""The gate's decision rule, and the registry's versions, pointer, pruning and rollback chain."""

from __future__ import annotations

from pathlib import Path

from distill.gate import EvalMetrics, decide
from distill.promote import Registry, Target, promote, rollback


def metrics(agreement: float, escalation: float, n: int = 50) -> EvalMetrics:
    return EvalMetrics(n, agreement, escalation, 0.5)


def test_a_worse_candidate_is_refused_with_the_reason() -> None:
    decision = decide(metrics(0.40, 0.5), metrics(0.55, 0.5), None, None, 0.0, 0.02)
    assert not decision.promote
    assert decision.reasons[0].startswith("not better: held-out agreement 0.400 vs serving 0.550")


def test_equal_agreement_with_fewer_escalations_is_better() -> None:
    assert decide(metrics(0.5, 0.3), metrics(0.5, 0.6), None, None, 0.0, 0.02).promote
    assert not decide(metrics(0.5, 0.6), metrics(0.5, 0.6), None, None, 0.0, 0.02).promote


def test_regression_beyond_the_tolerance_blocks_promotion() -> None:
    better = metrics(0.7, 0.4), metrics(0.5, 0.6)
    assert decide(*better, metrics(0.79, 0.2), metrics(0.80, 0.2), 0.0, 0.02).promote
    refused = decide(*better, metrics(0.70, 0.2), metrics(0.80, 0.2), 0.0, 0.02)
    assert not refused.promote and refused.reasons[1].startswith("regression: agreement 0.700 vs serving 0.800")


def test_min_gain_is_required_over_the_serving_student() -> None:
    assert not decide(metrics(0.52, 0.6), metrics(0.50, 0.6), None, None, 0.05, 0.02).promote


def test_versions_chain_back_to_the_base_model(tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    registry = Registry(tmp_path / "registry")
    target = Target("http://127.0.0.1:9/v1", "student", hot_swap=False, gateway_admin_url=None, gateway_admin_key=None)
    names = [promote(registry, adapter, target, "lora", 3, {"run_id": str(i)}).name for i in range(4)]
    assert names == ["v0001", "v0002", "v0003", "v0004"]
    assert registry.versions() == ["v0002", "v0003", "v0004"]  # pruned to 3, keeping current and previous
    current = registry.current()
    assert current is not None and current.model_name == "student-distill-v0004" and current.previous == "v0003"
    rolled, now = rollback(registry, target)
    assert rolled.name == "v0004" and now is not None and now.name == "v0003"
    assert registry.current().name == "v0003"  # type: ignore[union-attr]
