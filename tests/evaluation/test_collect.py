"""Recording a task through real loopback OpenAI servers: what is recorded, resuming, and failures."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from evaluation.collect import CollectError, Endpoint, collect, read_recording, tier_answers
from evaluation.tasks import Item, Task
from tests.conftest import STUDENT_MODEL, TEACHER_MODEL, Server


def task(*scripts: str, name: str = "demo") -> Task:
    items = [Item(f"q{i}", [{"role": "user", "content": f"question {i} {s}"}], "gold") for i, s in enumerate(scripts)]
    return Task(name, items, 8, "label", {})


def tiers(student: Server, teacher: Server) -> tuple[Endpoint, Endpoint]:
    return Endpoint("student", student.url, STUDENT_MODEL), Endpoint("teacher", teacher.url, TEACHER_MODEL)


def test_every_item_is_recorded_with_both_answers_and_logprobs(
    fake_student: Server, fake_teacher: Server, tmp_path: Path
) -> None:
    path = tmp_path / "rec.jsonl"
    added = asyncio.run(
        collect(task("", "student=unsure", ""), *tiers(fake_student, fake_teacher), path, top_logprobs=3)
    )
    assert added == 3
    rows = {row["id"]: row for row in read_recording(path)}
    assert set(rows) == {"q0", "q1", "q2"}
    unsure, sure = rows["q1"]["student"], rows["q0"]["student"]
    assert unsure["text"] == "Answer from student." and rows["q1"]["teacher"]["text"] == "Answer from teacher."
    assert unsure["logprobs"] == [-3.0] * 4 and sure["logprobs"] == [-0.01] * 4
    assert [len(top) for top in unsure["top_logprobs"]] == [3] * 4
    assert unsure["prompt_tokens"] > 0 and unsure["completion_tokens"] == 4 and unsure["latency_s"] > 0
    assert rows["q1"]["gold"] == "gold" and rows["q1"]["task"] == "demo"


def test_a_second_run_only_asks_for_what_is_missing(fake_student: Server, fake_teacher: Server, tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    asyncio.run(collect(task("", ""), *tiers(fake_student, fake_teacher), path))
    added = asyncio.run(collect(task("", "", ""), *tiers(fake_student, fake_teacher), path))
    assert added == 1
    assert sorted(row["id"] for row in read_recording(path)) == ["q0", "q1", "q2"]


def test_a_failing_tier_stops_the_run_naming_it_and_keeps_what_was_recorded(
    fake_student: Server, fake_teacher: Server, tmp_path: Path
) -> None:
    path = tmp_path / "rec.jsonl"
    asyncio.run(collect(task(""), *tiers(fake_student, fake_teacher), path))
    with pytest.raises(CollectError, match="teacher answered 500 for q1"):
        asyncio.run(collect(task("", "teacher=fail"), *tiers(fake_student, fake_teacher), path, concurrency=1))
    assert [row["id"] for row in read_recording(path)] == ["q0"]


def test_a_recording_of_another_task_is_refused(fake_student: Server, fake_teacher: Server, tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    path.write_text(json.dumps({"id": "q0", "task": "other"}) + "\n")
    with pytest.raises(CollectError, match="records task 'other', not 'demo'"):
        asyncio.run(collect(task(""), *tiers(fake_student, fake_teacher), path))


def test_an_unreachable_tier_is_named(fake_teacher: Server, tmp_path: Path) -> None:
    student = Endpoint("student", "http://127.0.0.1:9/v1", STUDENT_MODEL)
    teacher = Endpoint("teacher", fake_teacher.url, TEACHER_MODEL)
    with pytest.raises(CollectError, match=r"student at http://127\.0\.0\.1:9/v1: ConnectError"):
        asyncio.run(collect(task(""), student, teacher, tmp_path / "rec.jsonl"))


def test_a_recording_made_with_other_task_options_is_refused(
    fake_student: Server, fake_teacher: Server, tmp_path: Path
) -> None:
    path = tmp_path / "rec.jsonl"
    asyncio.run(collect(task("first wording"), *tiers(fake_student, fake_teacher), path))
    with pytest.raises(CollectError, match="item q0 was recorded with another prompt"):
        asyncio.run(collect(task("second wording"), *tiers(fake_student, fake_teacher), path))


def test_recorded_teacher_answers_stand_in_for_asking_the_teacher_again(
    fake_student: Server, fake_teacher: Server, tmp_path: Path
) -> None:
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    asyncio.run(collect(task("", ""), *tiers(fake_student, fake_teacher), first))
    answers = tier_answers(first, task("", ""), "teacher")
    dead_teacher = Endpoint("teacher", "http://127.0.0.1:9/v1", TEACHER_MODEL)  # never asked
    student, _ = tiers(fake_student, fake_teacher)
    assert asyncio.run(collect(task("", ""), student, dead_teacher, second, teacher_answers=answers)) == 2
    rows = {row["id"]: row for row in read_recording(second)}
    assert rows["q0"]["teacher"] == answers["q0"] and rows["q0"]["student"]["text"] == "Answer from student."


def test_the_items_tools_go_out_with_its_tool_choice(
    fake_student: Server, fake_teacher: Server, tmp_path: Path
) -> None:
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    item = Item("t0", [{"role": "user", "content": "weather?"}], "[]", [tool], "required")
    before = len(httpx.get(fake_student.root + "/_stats").json()["received"])
    asyncio.run(collect(Task("tools", [item], 8, "bfcl", {}), *tiers(fake_student, fake_teacher), tmp_path / "r"))
    sent = httpx.get(fake_student.root + "/_stats").json()["received"][before:]
    assert [(body["tools"], body["tool_choice"]) for body in sent] == [([tool], "required")]
