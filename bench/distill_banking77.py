"""One re-distillation cycle measured on Banking77: escalations before and after, KD against text-only SFT.

Day 1: the serving student answers a day's traffic (Banking77 train queries, restricted to a few intents);
its answers below the router's threshold are escalated to the teacher, whose answers are logged with
top-k logprobs and token ids, exactly as the gateway logs them, into a real SQLite log store. Then
``distill.cycle.run_cycle`` runs twice on that log with the same steps: white-box KD (``alpha``) and
text-only SFT (``alpha = 1``). Day 2: held-out queries (Banking77 test) are answered by the teacher, the
old student and both new students. For each student the script reports the escalation rate the cascade
needs to reach a quality target (agreement of the cascade's answers with the teacher's, by the best
confidence threshold on day 2) and accuracy against the gold intents.

    python -m bench.distill_banking77 [--pair demo] [--intents 10] [--day1 160] [--day2 160] [--steps 40]

Writes bench/results/distill_banking77.json. Models come from ``cascade models prepare --pair demo``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cascade.config import LogStoreSettings, load_settings
from distill.cycle import run_cycle
from distill.dataset import prompt_ids
from distill.gate import load_student
from evaluation.tasks import BANKING77_INTENTS, banking77_messages, read_banking77
from logstore import LogRecord, LogWriter, TierAnswer, TokenLogprobs
from router.agreement import label_match
from router.signals import features
from serving.models import pair_specs

ROOT = Path(__file__).resolve().parents[1]
DAY1 = datetime(2026, 11, 30, tzinfo=UTC)
TOP_K = 20


@torch.inference_mode()
def answer_all(
    model: Any, tokenizer: Any, prompts: list[list[dict[str, str]]], max_new: int, batch: int
) -> list[dict[str, Any]]:
    """Greedy answers with per-token logprobs and top-k ids (what vLLM logs with return_tokens_as_token_ids)."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id or tokenizer.eos_token_id
    out = []
    for start in range(0, len(prompts), batch):
        encoded = [prompt_ids(tokenizer, p) for p in prompts[start : start + batch]]
        longest = max(map(len, encoded))
        ids = torch.full((len(encoded), longest), pad)
        mask = torch.zeros_like(ids)
        for row, e in enumerate(encoded):
            ids[row, longest - len(e) :] = torch.tensor(e)
            mask[row, longest - len(e) :] = 1
        with torch.autocast("cpu", dtype=torch.bfloat16):
            result = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new,
                do_sample=False,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=pad,
            )
        new = result.sequences[:, longest:]
        logprobs = torch.stack([torch.log_softmax(x.float(), -1) for x in result.logits], 1)
        top_lp, top_ids = logprobs.topk(TOP_K, dim=-1)
        for row in range(new.shape[0]):
            tokens = new[row].tolist()
            n = tokens.index(eos) + 1 if eos in tokens else len(tokens)
            chosen = logprobs[row, torch.arange(n), new[row, :n]].tolist()
            out.append(
                {
                    "text": tokenizer.decode(tokens[:n], skip_special_tokens=True).strip(),
                    "ids": tokens[:n],
                    "logprobs": chosen,
                    "top_ids": top_ids[row, :n].tolist(),
                    "top_logprobs": top_lp[row, :n].tolist(),
                    "confidence": features(TokenLogprobs(chosen, top_lp[row, :n]))["mean_prob"],
                }
            )
    return out


def logged(answer: dict[str, Any]) -> TokenLogprobs:
    tokens: list[str | int] = [f"token_id:{i}" for i in answer["ids"]]
    top_tokens: list[list[str | int]] = [[f"token_id:{i}" for i in row] for row in answer["top_ids"]]
    return TokenLogprobs(np.array(answer["logprobs"]), np.array(answer["top_logprobs"]), tokens, top_tokens)


async def write_log(url: str, folder: Path, records: list[LogRecord]) -> None:
    writer = LogWriter(LogStoreSettings(url=url, spool_dir=str(folder / "spool"), retention_days=None))
    await writer.start()
    for record in records:
        writer.submit(record)
    await writer.close()


def min_escalation(students: list[dict[str, Any]], teacher: list[dict[str, Any]], target: float) -> float | None:
    """The lowest escalation rate whose cascade answers agree with the teacher's at >= target (best threshold)."""
    n = len(students)
    agree = np.array([label_match(s["text"], t["text"]) for s, t in zip(students, teacher, strict=True)])
    order = np.argsort([-s["confidence"] for s in students], kind="stable")
    for accepted in range(n, -1, -1):  # accept the `accepted` most confident, escalate the rest
        quality = (agree[order[:accepted]].sum() + (n - accepted)) / n
        if quality >= target:
            return (n - accepted) / n
    return None


def evaluate(
    name: str, answers: list[dict[str, Any]], teacher: list[dict[str, Any]], gold: list[str]
) -> dict[str, Any]:
    return {
        "student": name,
        "accuracy_vs_gold": float(np.mean([label_match(a["text"], g) for a, g in zip(answers, gold, strict=True)])),
        "agreement_with_teacher": float(
            np.mean([label_match(a["text"], t["text"]) for a, t in zip(answers, teacher, strict=True)])
        ),
        "mean_confidence": float(np.mean([a["confidence"] for a in answers])),
        "escalation_at_quality": {str(q): min_escalation(answers, teacher, q) for q in (0.8, 0.9, 0.95)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pair", default="demo", choices=["demo", "small", "tiny"])
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".." / "shared" / "data")
    parser.add_argument("--intents", type=int, default=10)
    parser.add_argument("--day1", type=int, default=160)
    parser.add_argument("--day2", type=int, default=160)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--threshold", type=float, default=0.8, help="the day-1 router threshold")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "var" / "bench-distill")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "distill_banking77.json")
    args = parser.parse_args()
    started = time.perf_counter()
    torch.manual_seed(0)
    intents = list(BANKING77_INTENTS[: args.intents])
    data = args.data_dir.resolve() / "banking77"
    rng = random.Random(0)
    day1 = rng.sample(read_banking77(data / "train.csv", intents), args.day1)
    day2 = rng.sample(read_banking77(data / "test.csv", intents), args.day2)
    student_spec, teacher_spec = pair_specs(args.pair)
    student_dir, teacher_dir = args.models_dir / student_spec.name, args.models_dir / teacher_spec.name
    from transformers import AutoTokenizer

    s_tok, t_tok = AutoTokenizer.from_pretrained(student_dir), AutoTokenizer.from_pretrained(teacher_dir)
    p1 = [banking77_messages(q, intents) for q, _ in day1]
    p2 = [banking77_messages(q, intents) for q, _ in day2]
    timings: dict[str, float] = {}

    def timed(label: str, fn: Any, *a: Any) -> Any:
        t = time.perf_counter()
        value = fn(*a)
        timings[label] = time.perf_counter() - t
        print(f"{label}: {timings[label]:.0f} s", flush=True)
        return value

    from transformers import AutoModelForCausalLM

    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.bfloat16).eval()
    t1 = timed("teacher day 1", answer_all, teacher, t_tok, p1, 12, 8)
    t2 = timed("teacher day 2", answer_all, teacher, t_tok, p2, 12, 8)
    del teacher
    old = load_student(student_dir, None, "lora")
    s1 = timed("student day 1", answer_all, old, s_tok, p1, 12, 8)
    s2_old = timed("old student day 2", answer_all, old, s_tok, p2, 12, 8)
    del old

    shutil.rmtree(args.work_dir, ignore_errors=True)
    args.work_dir.mkdir(parents=True)
    records = []
    for i, (messages, s, t) in enumerate(zip(p1, s1, t1, strict=True)):
        escalate = s["confidence"] < args.threshold
        records.append(
            LogRecord(
                request_id=f"day1-{i}",
                time=DAY1 + timedelta(seconds=i),
                decision="escalate" if escalate else "accept",
                reason="not_confident" if escalate else "confident",
                tier="teacher" if escalate else "student",
                messages=messages,
                signals={"mean_prob": s["confidence"]},
                student=TierAnswer(student_spec.name, s["text"], logged(s), finish_reason="stop"),
                teacher=TierAnswer(teacher_spec.name, t["text"], logged(t), finish_reason="stop") if escalate else None,
            )
        )
    url = f"sqlite+aiosqlite:///{args.work_dir}/cascade.db"
    asyncio.run(write_log(url, args.work_dir, records))
    escalated_day1 = sum(r.decision == "escalate" for r in records) / len(records)

    variants: dict[str, dict[str, Any]] = {}
    for variant, alpha in (("kd", 0.5), ("sft", 1.0)):
        settings = load_settings(
            None,
            student={"url": "http://127.0.0.1:9/v1", "model": student_spec.name},
            teacher={"url": "http://127.0.0.1:9/v1", "model": teacher_spec.name},
            router={"signal": "mean_prob", "threshold": args.threshold},
            log_store={"url": url, "spool_dir": str(args.work_dir / "spool")},
            distill={
                "base_model": str(student_dir),
                "work_dir": str(args.work_dir / variant),
                "registry_dir": str(args.work_dir / variant / "registry"),
                "steps": args.steps,
                "batch_size": args.batch_size,
                "lr": args.lr,
                "alpha": alpha,
                "agreement": "label",
                "min_examples": 16,
                "eval_fraction": 0.1,
                "eval_max_new_tokens": 12,
                "hot_swap": False,
                "max_seq_len": 256,
            },
        )
        result = timed(f"cycle {variant}", lambda s=settings: run_cycle(s, now=DAY1 + timedelta(days=1)))
        registry = settings.distill.registry_dir
        version = registry / "v0001"
        adapter = version if version.exists() else result.run_dir / "candidate"
        new = load_student(student_dir, adapter, "lora")
        answers = timed(f"{variant} student day 2", answer_all, new, s_tok, p2, 12, 8)
        del new
        variants[variant] = {
            "cycle": {k: result.report.get(k) for k in ("decision", "reasons", "counts", "training", "duration_s")},
            "day2": evaluate(variant, answers, t2, [g for _, g in day2]),
        }

    gold2 = [g for _, g in day2]
    before = evaluate("old", s2_old, t2, gold2)
    summary = {
        "pair": args.pair,
        "intents": intents,
        "day1": args.day1,
        "day2": args.day2,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "day1_threshold": args.threshold,
        "day1_escalation_rate": escalated_day1,
        "teacher_day2_accuracy_vs_gold": float(
            np.mean([label_match(t["text"], g) for t, g in zip(t2, gold2, strict=True)])
        ),
        "old_student_day2": before,
        "kd": variants["kd"],
        "sft": variants["sft"],
        "escalation_reduction_at_0.9": {
            name: (
                None
                if before["escalation_at_quality"]["0.9"] in (None, 0)
                or v["day2"]["escalation_at_quality"]["0.9"] is None
                else 1 - v["day2"]["escalation_at_quality"]["0.9"] / before["escalation_at_quality"]["0.9"]
            )
            for name, v in variants.items()
        },
        "timings_s": timings,
        "total_s": time.perf_counter() - started,
        "machine": "2 CPU cores shared with other work; transformers in-process, bf16 autocast",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: summary[k] for k in ("old_student_day2", "escalation_reduction_at_0.9")}, indent=2))


if __name__ == "__main__":
    main()
