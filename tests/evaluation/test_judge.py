"""The judge's calls against the scripted loopback upstream acting as a judge: consistent, position-biased,
failing, and cached (evaluation/judge.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from evaluation.collect import Endpoint
from evaluation.judge import Judge, PairJudgement
from router.judge import Outcome, Verdict
from tests.conftest import TEACHER_MODEL, Server


def judge_pair(judge: Judge, script: str, student: str, teacher: str) -> PairJudgement:
    async def run() -> PairJudgement:
        async with httpx.AsyncClient() as client:
            return await judge.pair(client, [{"role": "user", "content": f"Explain tides. {script}"}], student, teacher)

    return asyncio.run(run())


def test_a_consistent_judge_decides_in_both_orders(fake_teacher: Server, tmp_path: Path) -> None:
    judge = Judge(Endpoint("teacher", fake_teacher.url, TEACHER_MODEL), tmp_path / "cache.jsonl")
    better = judge_pair(judge, "teacher=judge", "a good answer", "a weak answer")
    assert better.outcome is Outcome.NOT_WORSE and better.verdicts == (Verdict.A, Verdict.B)
    worse = judge_pair(judge, "teacher=judge", "a weak answer", "a good answer")
    assert worse.outcome is Outcome.WORSE and not worse.outcome.agrees
    tie = judge_pair(judge, "teacher=judge", "good", "also good")
    assert tie.outcome is Outcome.NOT_WORSE and tie.verdicts == (Verdict.TIE, Verdict.TIE)
    # the second pair is the first one swapped: both its prompts were asked already
    assert judge.usage.calls == 4 and judge.usage.cached == 2 and judge.usage.prompt_tokens > 0


def test_a_position_biased_or_failing_judge_never_passes_an_answer(fake_teacher: Server) -> None:
    judge = Judge(Endpoint("teacher", fake_teacher.url, TEACHER_MODEL))
    biased = judge_pair(judge, "teacher=judgea", "a good answer", "a weak answer")
    assert biased.outcome is Outcome.INCONSISTENT and not biased.outcome.agrees
    undecided = judge_pair(judge, "teacher=judgefail", "a good answer", "a weak answer")
    assert undecided.outcome is Outcome.FAILED and undecided.replies[0] is not None
    down = judge_pair(judge, "teacher=fail", "a good answer", "a weak answer")
    assert down.outcome is Outcome.FAILED and down.errors[0] is not None and "500" in down.errors[0]
    assert judge.usage.failures == 2


def test_replies_are_cached_by_content_and_survive_a_restart(fake_teacher: Server, tmp_path: Path) -> None:
    cache = tmp_path / "cache.jsonl"
    first = Judge(Endpoint("teacher", fake_teacher.url, TEACHER_MODEL), cache)
    judge_pair(first, "teacher=judge", "good", "weak")
    again = Judge(Endpoint("teacher", fake_teacher.url, TEACHER_MODEL), cache)
    result = judge_pair(again, "teacher=judge", "good", "weak")
    assert result.outcome is Outcome.NOT_WORSE and again.usage.calls == 0 and again.usage.cached == 2
    failing = Judge(Endpoint("teacher", fake_teacher.url, TEACHER_MODEL), cache)
    judge_pair(failing, "teacher=fail", "good", "weak")
    assert len(cache.read_text().splitlines()) == 2  # a failed call is not cached
