"""How far can a local judge be trusted? Its pairwise verdicts on MT-Bench against GPT-4's.

    python -m bench.judge_mt_bench [--judge-url URL --judge-model NAME] [--limit 80] [--concurrency 2]

The data (``../shared/data/routellm/mt_bench/judgements.jsonl``): GPT-4's 1-10 grades of two models' answers
to the 80 MT-Bench first turns, a strong one (gpt-4-1106-preview, here in the teacher's place) and a weaker one
(Mixtral-8x7B-Instruct, the student's). GPT-4's preference is the higher grade (equal grades: a tie). The local
judge gets each pair as the cascade would ask it (:mod:`router.judge`: both orders, the student's answer first
then second, reference-guided with GPT-4's reference answer for maths, reasoning and coding as MT-Bench does).
Reported: agreement with GPT-4's preference (three classes, a pair the two orders disagree on counting as a tie,
MT-Bench's convention) with Cohen's kappa, agreement on the pairs GPT-4 did not call a tie, the binary question
the cascade asks ("is the student's answer at least as good?") with its kappa, position-swap consistency, how
often the judge picked the first answer, failures, and what it cost in time and tokens.

Without ``--judge-url`` the demo teacher is started here (vLLM on this machine's cores, the dtype for its CPU):
the local judge the cascade defaults to. Any stronger OpenAI-compatible judge is the same command with its URL,
model (and ``--judge-key``). Replies are cached (``var/judge/<model>.jsonl``): a rerun asks nothing twice.
-> ``bench/results/judge_mt_bench.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from sklearn.metrics import cohen_kappa_score

from evaluation.collect import Endpoint
from evaluation.judge import Judge, PairJudgement
from router.judge import Outcome, Verdict

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results" / "judge_mt_bench.json"
STRONG, WEAK = "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"
REFERENCE_CATEGORIES = ("math", "reasoning", "coding")
_ANSWER = re.compile(r"\[The Start of Assistant's Answer\]\n(.*?)\n\[The End of Assistant's Answer\]", re.S)


def load_pairs(data: Path) -> list[dict[str, Any]]:
    """One item per first-turn question: the question, both answers, GPT-4's grades, the reference if any."""
    questions = {q["question_id"]: q for q in map(json.loads, (data / "mt_bench" / "question.jsonl").open())}
    references = {
        r["question_id"]: r["choices"][0]["turns"][0]
        for r in map(json.loads, (data / "mt_bench" / "reference_gpt-4.jsonl").open())
    }
    graded: dict[int, dict[str, tuple[str, float]]] = {}
    for row in map(json.loads, (data / "routellm" / "mt_bench" / "judgements.jsonl").open()):
        if row["turn"] != 1:
            continue
        answer = _ANSWER.search(row["user_prompt"])
        if answer is None:
            raise ValueError(f"question {row['question_id']}: no answer in GPT-4's judge prompt")
        graded.setdefault(row["question_id"], {})[row["model"]] = (answer.group(1), float(row["score"]))
    items = []
    for qid in sorted(graded):
        if set(graded[qid]) != {STRONG, WEAK}:
            continue
        question = questions[qid]
        category = question["category"]
        items.append(
            {
                "id": qid,
                "category": category,
                "messages": [{"role": "user", "content": question["turns"][0]}],
                "student": graded[qid][WEAK][0],
                "teacher": graded[qid][STRONG][0],
                "student_score": graded[qid][WEAK][1],
                "teacher_score": graded[qid][STRONG][1],
                "reference": references.get(qid) if category in REFERENCE_CATEGORIES else None,
            }
        )
    return items


def local_preference(judgement: PairJudgement) -> str:
    """student | teacher | tie (inconsistent orders count as a tie) | failed."""
    if judgement.outcome is Outcome.FAILED:
        return "failed"
    if judgement.outcome is Outcome.INCONSISTENT or judgement.verdicts == (Verdict.TIE, Verdict.TIE):
        return "tie"
    return "student" if judgement.outcome is Outcome.NOT_WORSE else "teacher"


def gpt4_preference(item: dict[str, Any]) -> str:
    gap = item["student_score"] - item["teacher_score"]
    return "student" if gap > 0 else "teacher" if gap < 0 else "tie"


def consistent(judgement: PairJudgement) -> bool:
    first, second = judgement.verdicts
    return (first, second) in ((Verdict.A, Verdict.B), (Verdict.B, Verdict.A), (Verdict.TIE, Verdict.TIE))


def summarise(items: list[dict[str, Any]], judgements: list[PairJudgement]) -> dict[str, Any]:
    rows = [(gpt4_preference(i), local_preference(j), j) for i, j in zip(items, judgements, strict=True)]
    decided = [(g, lo, j) for g, lo, j in rows if lo != "failed"]
    if not decided:
        return {"pairs": len(rows), "failed": len(rows)}
    gpt4 = [g for g, _, _ in decided]
    local = [lo for _, lo, _ in decided]
    strict = [(g, lo) for g, lo in zip(gpt4, local, strict=True) if g != "tie"]
    not_worse_gpt4 = [g != "teacher" for g in gpt4]
    not_worse_local = [j.outcome.agrees for _, _, j in decided]
    first_position = [v for _, _, j in decided for v in j.verdicts if v is not Verdict.TIE]
    return {
        "pairs": len(rows),
        "failed": len(rows) - len(decided),
        "gpt4_preferences": dict(Counter(g for g, _, _ in rows)),
        "local_preferences": dict(Counter(lo for _, lo, _ in rows)),
        "agreement_3way": round(sum(g == lo for g, lo in zip(gpt4, local, strict=True)) / len(decided), 3),
        "cohen_kappa_3way": round(float(cohen_kappa_score(gpt4, local)), 3),
        "agreement_without_gpt4_ties": round(sum(g == lo for g, lo in strict) / len(strict), 3) if strict else None,
        "not_worse_agreement": round(
            sum(a == b for a, b in zip(not_worse_gpt4, not_worse_local, strict=True)) / len(decided), 3
        ),
        "not_worse_kappa": round(float(cohen_kappa_score(not_worse_gpt4, not_worse_local)), 3),
        "position_consistency": round(sum(consistent(j) for _, _, j in decided) / len(decided), 3),
        "first_position_share": round(first_position.count(Verdict.A) / len(first_position), 3)
        if first_position
        else None,
    }


async def judge_all(judge: Judge, items: list[dict[str, Any]], concurrency: int) -> list[PairJudgement]:
    slots = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient() as client:

        async def one(item: dict[str, Any]) -> PairJudgement:
            async with slots:
                result = await judge.pair(client, item["messages"], item["student"], item["teacher"], item["reference"])
                print(f"question {item['id']} ({item['category']}): {result.outcome} {result.verdicts}", flush=True)
                return result

        return list(await asyncio.gather(*(one(item) for item in items)))


def start_demo_teacher(work: Path) -> Any:
    """The demo teacher on this machine's cores, as `cascade up` would start it."""
    from serving.cpu import cpu_flags, machine_dtype
    from serving.models import prepare_pair
    from serving.process import wait_ready
    from serving.vllm import VllmOptions, VllmServer

    teacher = prepare_pair("demo", ROOT / "models").teacher
    dtype = machine_dtype("cpu", cpu_flags())
    options = VllmOptions(
        model_dir=teacher.path.resolve(),
        served_name=teacher.name,
        port=8111,
        log_path=work / "judge-vllm.log",
        cache_root=(ROOT / "var" / "vllm-cache").resolve(),
        dtype=dtype,
        max_model_len=4096,
        kv_cache_gib=2,
        enforce_eager=dtype != "bfloat16",
    )
    server = VllmServer("judge", options)
    server.start()
    wait_ready([server], 1200, print)
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--judge-url", help="an OpenAI-compatible base URL ending in /v1 (default: start the demo teacher)"
    )
    parser.add_argument("--judge-model", help="the judge's model name (with --judge-url)")
    parser.add_argument("--judge-key", help="the judge endpoint's API key, if it needs one")
    parser.add_argument("--limit", type=int, default=80)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=8, help="the verdict tag alone needs about 5")
    parser.add_argument("--data-dir", type=Path, default=DATA)
    args = parser.parse_args()
    items = load_pairs(args.data_dir)[: args.limit]
    work = ROOT / "var" / "judge"
    work.mkdir(parents=True, exist_ok=True)
    server = None
    if args.judge_url is None:
        server = start_demo_teacher(work)
        endpoint = Endpoint("judge", server.options.base_url, server.options.served_name)
    else:
        if not args.judge_model:
            parser.error("--judge-model is needed with --judge-url")
        endpoint = Endpoint("judge", args.judge_url, args.judge_model, args.judge_key)
    judge = Judge(endpoint, work / f"{endpoint.model.replace('/', '_')}.jsonl", args.max_tokens, brief=True)
    started = time.perf_counter()
    try:
        judgements = asyncio.run(judge_all(judge, items, args.concurrency))
    finally:
        if server is not None:
            server.stop()
    elapsed = time.perf_counter() - started
    result = {
        "judge_model": endpoint.model,
        "student": WEAK,
        "teacher": STRONG,
        **summarise(items, judgements),
        "usage": vars(judge.usage),
        "wall_s": round(elapsed, 1),
        "s_per_call": round(elapsed / judge.usage.calls, 2) if judge.usage.calls else None,
        "command": "python -m bench.judge_mt_bench"
        + (f" --judge-url {args.judge_url} --judge-model {args.judge_model}" if args.judge_url else ""),
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
