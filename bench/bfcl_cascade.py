"""The cascade on tool calls, judged as the gateway judges them, from a BFCL live recording.

    python -m bench.bfcl_cascade [--tool-choice auto|required] [--limit 120] [--recording FILE]

``cascade router eval --live --dataset bfcl`` records both tiers' greedy answers (tool calls, token logprobs
and token strings) and analyses every router over the whole answer's tokens. The gateway does two things
more for a tool call (``gateway/routing.py``): it escalates an invalid call whatever its confidence
(:func:`router.structured.check_answer`: a function not offered, arguments that do not parse or validate, a
call written as text), and it reads the confidence from the tokens that carry the decision
(:func:`router.structured.confidence_tokens`, ``router.structured_tokens: decision``). This script replays the
recording through exactly those rules, for each signal, over every threshold, and reports each tier's accuracy
(BFCL's AST rules), how many student answers the validity check alone escalates, and the teacher share each
signal needs for 95% of the teacher's accuracy, with the quality it reaches at 30% teacher calls (both read off
the curve, in sample), and, prospectively, what a threshold fitted on one half of the items for that target
gives on the other half (two-fold, by item id hash).
-> ``bench/results/<task>_cascade.json`` (``bfcl`` or ``bfcl_required``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from cascade.logprobs import TokenLogprobs
from evaluation.collect import read_recording
from evaluation.tasks import load_task
from router.signals import features
from router.structured import check_answer, confidence_tokens

ROOT = Path(__file__).resolve().parents[1]
SIGNALS = ("mean_prob", "min_prob", "mean_logprob", "prob_q10", "first_margin", "mean_entropy")


def answer_tokens(answer: dict[str, Any]) -> TokenLogprobs:
    logprobs = np.asarray(answer["logprobs"] or [0.0], dtype=np.float32)
    top = answer.get("top_logprobs") or [[value] for value in logprobs]
    k = max(len(row) for row in top) if top else 1
    padded = np.full((len(logprobs), k), np.nan, dtype=np.float32)
    for i, row in enumerate(top[: len(logprobs)]):
        padded[i, : len(row)] = row
    tokens = answer.get("tokens") if answer.get("tokens") and len(answer["tokens"]) == len(logprobs) else None
    return TokenLogprobs(logprobs, padded, tokens=tokens)


def curve(confidence: np.ndarray, forced: np.ndarray, student_ok: np.ndarray, teacher_ok: np.ndarray) -> list[dict]:
    """(threshold, teacher share, quality) at every cut: escalate when forced (invalid) or below the threshold."""
    points = []
    for threshold in [-np.inf, *sorted(set(confidence.tolist())), np.inf]:
        escalate = forced | (confidence < threshold)
        quality = np.where(escalate, teacher_ok, student_ok).mean()
        share = float(escalate.mean())
        points.append({"threshold": float(threshold), "teacher_share": share, "quality": float(quality)})
    return points


def summarise(points: list[dict], target: float, budget: float = 0.30) -> dict[str, Any]:
    reaching = [p for p in points if p["quality"] >= target]
    within = [p for p in points if p["teacher_share"] <= budget]
    best = min(reaching, key=lambda p: p["teacher_share"]) if reaching else None
    return {
        "teacher_share_for_95pct_of_teacher": best["teacher_share"] if best else None,
        "threshold_for_95pct_of_teacher": best["threshold"] if best else None,
        "quality_at_30pct_teacher": max(p["quality"] for p in within) if within else None,
    }


def cross_fitted(
    confidence: np.ndarray, forced: np.ndarray, student_ok: np.ndarray, teacher_ok: np.ndarray, folds: np.ndarray
) -> dict[str, float]:
    """Prospective: the threshold reaching 95% of the teacher's accuracy on one half, applied to the other
    (both ways); the realized teacher share and quality on the halves it was not fitted on."""
    escalated, right = np.zeros(len(confidence), dtype=bool), np.zeros(len(confidence), dtype=bool)
    for fold in (0, 1):
        fit, held = folds != fold, folds == fold
        target = 0.95 * teacher_ok[fit].mean()
        points = curve(confidence[fit], forced[fit], student_ok[fit], teacher_ok[fit])
        reaching = [p for p in points if p["quality"] >= target]
        threshold = min(reaching, key=lambda p: p["teacher_share"])["threshold"] if reaching else np.inf
        escalated[held] = forced[held] | (confidence[held] < threshold)
        right[held] = np.where(escalated[held], teacher_ok[held], student_ok[held])
    return {"teacher_share": float(escalated.mean()), "quality": float(right.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tool-choice", default="auto", choices=["auto", "required"])
    parser.add_argument("--recording", type=Path, help="default: var/live/<task>.jsonl, as the live eval writes it")
    parser.add_argument("--limit", type=int, default=None, help="the --limit the recording was made with")
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".." / "shared" / "data")
    parser.add_argument("--out", type=Path, help="default: bench/results/<task>_cascade.json")
    args = parser.parse_args()
    task = load_task("bfcl", args.data_dir.resolve(), args.limit, 0, tool_choice=args.tool_choice)
    args.recording = args.recording or ROOT / "var" / "live" / f"{task.name}.jsonl"
    args.out = args.out or ROOT / "bench" / "results" / f"{task.name}_cascade.json"
    items = {item.id: item for item in task.items}
    rows = [row for row in read_recording(args.recording) if row["id"] in items]
    if not rows:
        raise SystemExit(f"{args.recording} holds none of the task's items")
    student_ok, teacher_ok, invalid, categories = [], [], [], []
    why: dict[str, int] = {}
    scores: dict[str, dict[str, list[float]]] = {"decision": {s: [] for s in SIGNALS}, "all": {s: [] for s in SIGNALS}}
    for row in rows:
        item = items[row["id"]]
        student, teacher = row["student"], row["teacher"]
        student_ok.append(task.agreement(task.judged(student), item.gold))
        teacher_ok.append(task.agreement(task.judged(teacher), item.gold))
        categories.append(row["id"].split("_")[0] if "_" in row["id"] else row["id"])
        message = {"role": "assistant", "content": student["text"] or None, "tool_calls": student.get("tool_calls")}
        request = {"tools": item.tools, "tool_choice": item.tool_choice}
        verdict = check_answer(request, message, student.get("finish_reason"))
        invalid.append(not verdict.valid)
        if not verdict.valid:
            why[verdict.detail.split(":")[0][:60]] = why.get(verdict.detail.split(":")[0][:60], 0) + 1
        tokens = answer_tokens(student)
        for mode in ("decision", "all"):
            chosen = confidence_tokens(tokens, bool(student.get("tool_calls")), mode)
            values = features(chosen)
            for signal in SIGNALS:
                scores[mode][signal].append(values[signal])
    s_ok, t_ok, forced = np.array(student_ok), np.array(teacher_ok), np.array(invalid)
    target = 0.95 * t_ok.mean()
    folds = np.array([int(hashlib.sha256(row["id"].encode()).hexdigest(), 16) % 2 for row in rows])
    results: dict[str, Any] = {}
    for mode in ("decision", "all"):
        for signal in SIGNALS:
            confidence = np.array(scores[mode][signal])
            for rule, force in (("validity + confidence", forced), ("confidence only", np.zeros_like(forced))):
                points = curve(confidence, force, s_ok, t_ok)
                results[f"{signal} over {mode} tokens, {rule}"] = summarise(points, target) | {
                    "cross_fitted": cross_fitted(confidence, force, s_ok, t_ok, folds)
                }
    out = {
        "recording": args.recording.name,
        "n": len(rows),
        "student_accuracy": float(s_ok.mean()),
        "teacher_accuracy": float(t_ok.mean()),
        "oracle_accuracy": float((s_ok | t_ok).mean()),
        "by_category": {
            name: {
                "n": int(mask.sum()),
                "student_accuracy": float(s_ok[mask].mean()),
                "teacher_accuracy": float(t_ok[mask].mean()),
                "student_invalid": int(forced[mask].sum()),
            }
            for name in sorted(set(categories))
            if (mask := np.array([c == name for c in categories])).any()
        },
        "target_95pct_of_teacher": float(target),
        "student_invalid": int(forced.sum()),
        "student_invalid_and_wrong": int((forced & ~s_ok).sum()),
        "student_invalid_why": why,
        "teacher_share_validity_alone": float(forced.mean()),
        "quality_validity_alone": float(np.where(forced, t_ok, s_ok).mean()),
        "routers": results,
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "routers"}, indent=2))
    shares = {name: v["teacher_share_for_95pct_of_teacher"] for name, v in results.items()}
    best = sorted((share, name) for name, share in shares.items() if share is not None)
    for share, name in best[:8]:
        held = results[name]["cross_fitted"]
        print(
            f"{share:.3f}  {name}  (quality at 30% teacher: {results[name]['quality_at_30pct_teacher']:.3f}; "
            f"cross-fitted: {held['teacher_share']:.3f} teacher, quality {held['quality']:.3f})"
        )


if __name__ == "__main__":
    main()
