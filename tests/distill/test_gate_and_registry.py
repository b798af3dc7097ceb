"""The gate's decision rule, and the registry's versions, pointer, pruning and rollback chain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cascade.logprobs import TokenLogprobs
from distill import gate
from distill.dataset import EvalItem
from distill.gate import EvalMetrics, evaluate, load_student, serving_router, should_promote
from distill.promote import Registry, Target, promote, rollback
from router.agreement import exact_match
from router.artefact import save_router
from router.policy import SignalRouter
from router.signals import features
from tests.distill.helpers import distill_settings
from tests.distill.test_dataset import CALL
from tests.structured import WEATHER


def metrics(agreement: float, escalation: float, n: int = 50) -> EvalMetrics:
    return EvalMetrics(n, agreement, escalation, 0.5)


def test_a_worse_candidate_is_refused_with_the_reason() -> None:
    decision = should_promote(metrics(0.40, 0.5), metrics(0.55, 0.5), None, None, 0.0, 0.02)
    assert not decision.promote
    assert decision.reasons[0].startswith("not better: held-out agreement 0.400 vs serving 0.550")


def test_equal_agreement_with_fewer_escalations_is_better() -> None:
    assert should_promote(metrics(0.5, 0.3), metrics(0.5, 0.6), None, None, 0.0, 0.02).promote
    assert not should_promote(metrics(0.5, 0.6), metrics(0.5, 0.6), None, None, 0.0, 0.02).promote


def test_regression_beyond_the_tolerance_blocks_promotion() -> None:
    better = metrics(0.7, 0.4), metrics(0.5, 0.6)
    assert should_promote(*better, metrics(0.79, 0.2), metrics(0.80, 0.2), 0.0, 0.02).promote
    refused = should_promote(*better, metrics(0.70, 0.2), metrics(0.80, 0.2), 0.0, 0.02)
    assert not refused.promote and refused.reasons[1].startswith("regression: agreement 0.700 vs serving 0.800")


def test_min_gain_is_required_over_the_serving_student() -> None:
    assert not should_promote(metrics(0.52, 0.6), metrics(0.50, 0.6), None, None, 0.05, 0.02).promote


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


def test_the_gate_judges_a_tool_call_as_the_gateway_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """An invalid call is escalated whatever its confidence; a call's confidence is read from its decision
    tokens (the function name and argument values) unless ``structured_tokens`` is ``all``."""
    pieces = ['<tool_call>', '\n{"', 'name', '": "', 'get_weather', '", "', 'arguments', '": {"', 'city', '": "',
              'Paris', '"}}\n', '</tool_call>']  # fmt: skip
    unsure = {"name", "arguments", "city"}  # the keys: boilerplate a decision-token confidence leaves out
    logprobs = np.array([-2.0 if piece in unsure or not piece.strip('"{}\n: ,') else -0.01 for piece in pieces])
    answer = TokenLogprobs(logprobs, logprobs[:, None], tokens=list(pieces))
    wrong_tool = "".join(pieces).replace("get_weather", "get_time")
    outputs = [("".join(pieces), answer), (wrong_tool, answer)]
    monkeypatch.setattr(gate, "generate", lambda _model, _tokenizer, prompts, *_: outputs[: len(prompts)])
    item = EvalItem([{"role": "user", "content": "Weather in Paris?"}], "", [WEATHER], [CALL])
    router = SignalRouter("mean_prob", 0.9)
    decided = evaluate(None, None, [item, item], exact_match, router, 32, 2, 1, "decision")
    right, invalid = decided.answers
    assert right.agrees and not right.escalated and right.confidence > 0.9
    assert not invalid.agrees and invalid.escalated and invalid.confidence == right.confidence
    everything = evaluate(None, None, [item], exact_match, router, 32, 2, 1, "all").answers[0]
    assert everything.confidence < 0.9 and everything.escalated  # the keys' doubt counts when every token does


def test_the_gate_scores_answers_with_the_serving_router(
    tiny_student: Path, tiny_tokenizer: Any, tmp_path: Path
) -> None:
    items = [EvalItem([{"role": "user", "content": f"what is {i} plus {i}?"}], str(2 * i)) for i in range(3)]
    model = load_student(tiny_student, None, "lora")
    everything = evaluate(model, tiny_tokenizer, items, exact_match, SignalRouter("mean_prob", 0.0), 6, 2, 3)
    assert everything.escalation_rate == 0.0 and everything.n == 3
    for answer in everything.answers:
        assert answer.tokens.k == 3 and len(answer.tokens) >= 1
        # greedy: the chosen token is the most likely one, the first of the alternatives the router reads
        assert np.allclose(answer.tokens.top_logprobs[:, 0], answer.tokens.logprobs)
        assert answer.confidence == features(answer.tokens)["mean_prob"]
    nothing = evaluate(model, tiny_tokenizer, items, exact_match, SignalRouter("mean_prob", 1.01), 6, 2, 3)
    assert nothing.escalation_rate == 1.0

    settings = distill_settings(tmp_path, tiny_student)
    assert serving_router(settings, None) == SignalRouter("mean_prob", 0.5)
    assert serving_router(settings, 0.8) == SignalRouter("mean_prob", 0.8)  # what the last promotion applied
    artefact = save_router(SignalRouter("prob_q10", 0.3), tmp_path / "router")
    with_scorer = settings.model_copy(update={"router": settings.router.model_copy(update={"scorer": str(artefact)})})
    assert serving_router(with_scorer, 0.8) == SignalRouter("prob_q10", 0.3)
