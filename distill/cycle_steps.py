"""The heavy steps of a cycle (torch, transformers): train the candidate; gate it, promote it, recalibrate."""

from __future__ import annotations

import gc
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cascade.config import Settings
from distill import dataset as ds
from distill.errors import DistillError
from distill.gate import EvalMetrics, evaluate, load_student, serving_router, should_promote
from distill.promote import PromotionError, Registry, Target, promote
from distill.train import TrainResult, train
from router.agreement import get_agreement
from router.errors import RouterLoadError
from router.policy import Router

Say = Callable[[str], None]


def load_tokenizer(base_model: Path) -> Any:
    from transformers import AutoTokenizer

    if not (base_model / "config.json").exists():
        raise DistillError(f"distill.base_model {base_model}: not a model folder (no config.json)")
    return AutoTokenizer.from_pretrained(base_model)


def train_candidate(settings: Settings, data: ds.DistillData, run_dir: Path, progress: bool, say: Say) -> TrainResult:
    d = settings.distill
    tokenizer = load_tokenizer(d.base_model)
    encoded, too_long, unrenderable = ds.encode_all(tokenizer, data.train, d.max_seq_len)
    data.counts.too_long, data.counts.unrenderable = too_long, unrenderable
    if not encoded:
        raise DistillError(
            f"no training example is usable: {too_long} longer than distill.max_seq_len ({d.max_seq_len} tokens), "
            f"{unrenderable} with tools the student's chat template cannot render"
        )
    with_kd = sum(item.top_ids is not None for item in encoded)
    say(
        f"training {d.steps} step(s) on {len(encoded)} example(s) ({with_kd} with teacher logprobs, "
        f"{too_long} too long, {unrenderable} with tools the chat template cannot render)"
    )
    current = Registry(d.registry_dir).current()
    init = current.path if current is not None and current.method == "lora" and d.method == "lora" else None
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    candidate_dir = run_dir / "candidate"
    result = train(
        settings.distill, encoded, pad, run_dir / "checkpoint", candidate_dir, init_adapter=init, progress=progress
    )
    if d.method == "full":
        tokenizer.save_pretrained(candidate_dir)
    gc.collect()
    return result


@dataclass(slots=True)
class Outcome:
    promoted: bool
    reasons: list[str]
    metrics: dict[str, Any] = field(default_factory=dict)
    version: str | None = None
    model_name: str | None = None
    calibration: dict[str, Any] | None = None


def _evaluate_student(
    settings: Settings, router: Router, path: Path | None, method: str, sets: list[list[ds.EvalItem]]
) -> list[EvalMetrics]:
    d = settings.distill
    tokenizer = load_tokenizer(d.base_model)
    model = load_student(d.base_model, path, method)
    agree = get_agreement(d.agreement)
    r = settings.router
    sizes = (d.eval_max_new_tokens, d.eval_batch_size, r.top_logprobs, r.structured_tokens)
    out = [evaluate(model, tokenizer, items, agree, router, *sizes) for items in sets]
    del model
    gc.collect()
    return out


def _recalibrate(settings: Settings, metrics: list[EvalMetrics]) -> dict[str, Any]:
    """The threshold ``distill.target_quality`` would need on the candidate's gate answers: indicative only. Those
    answers chose the candidate, and are escalations rather than a sample of the traffic, so the threshold is
    never applied from them; ``cascade router recalibrate`` certifies one on the new student's audit sample."""
    import numpy as np

    from router.calibration import CalibrationError, calibrate

    target = settings.distill.target_quality
    answers = [answer for m in metrics for answer in m.answers]
    if target is None:
        return {"message": "router recalibration off (distill.target_quality is null)"}
    if settings.router.scorer is not None:
        return {"message": "router recalibration skipped: the router artefact (router.scorer) keeps its threshold"}
    scores = np.array([a.confidence for a in answers])
    ok = np.array([a.agrees for a in answers])
    later = (
        "the gateway keeps its threshold until `cascade router recalibrate` certifies one on the new student's "
        "audit sample (its shadows and escalations)"
    )
    try:
        result = calibrate(scores, ok, target_quality=target)
    except CalibrationError as exc:
        return {"message": f"no threshold on the gate's answers ({exc}); {later}"}
    return {
        "message": f"threshold {result.threshold:.6g} would certify quality {target} on the gate's {result.n} "
        f"answer(s) of the new student (escalation {result.escalation_rate:.1%}): indicative, not applied, as "
        f"those answers chose the candidate; {later}",
        "result": result.as_dict(),
    }


def gate_and_promote(
    settings: Settings, data: ds.DistillData, run_dir: Path, candidate: Path, run_id: str, say: Say
) -> Outcome:
    d = settings.distill
    registry = Registry(d.registry_dir)
    current = registry.current()
    heldout = ds.eval_items(data.eval)
    regression: list[ds.EvalItem] = []
    if d.regression_set is not None:
        try:
            regression = ds.read_regression_set(d.regression_set)
        except (OSError, ValueError) as exc:
            raise DistillError(f"distill.regression_set: {exc}") from None
    say(f"gate: {len(heldout)} held-out and {len(regression)} regression example(s)")
    serving_name = current.name if current else "base"
    try:
        router = serving_router(settings, current.manifest.get("threshold") if current else None)
    except RouterLoadError as exc:
        raise DistillError(
            f"router.scorer: the gate scores with the serving router and cannot load it: {exc}"
        ) from None
    serving = _evaluate_student(
        settings,
        router,
        current.path if current else None,
        current.method if current else "lora",
        [heldout, regression],
    )
    cand = _evaluate_student(settings, router, candidate, d.method, [heldout, regression])
    decision = should_promote(
        cand[0],
        serving[0],
        cand[1] if regression else None,
        serving[1] if regression else None,
        d.min_gain,
        d.regression_tolerance,
    )
    metrics = {
        "serving_version": serving_name,
        "heldout_serving": serving[0].summary(),
        "heldout_candidate": cand[0].summary(),
        "regression_serving": serving[1].summary() if regression else None,
        "regression_candidate": cand[1].summary() if regression else None,
    }
    outcome = Outcome(decision.promote, decision.reasons, metrics)
    if not decision.promote:
        return outcome
    outcome.calibration = _recalibrate(settings, cand)
    try:
        version = promote(
            registry,
            candidate,
            Target.of(settings),
            d.method,
            d.keep_versions,
            {"run_id": run_id, "base_model": str(d.base_model), "metrics": metrics},
        )
    except PromotionError as exc:
        raise DistillError(f"the candidate passed the gate but promotion failed: {exc}") from None
    outcome.version, outcome.model_name = version.name, version.model_name
    if d.method == "full":
        outcome.reasons.append(f"full model registered at {version.path}: restart the student server on it")
    shutil.rmtree(candidate, ignore_errors=True)
    return outcome
