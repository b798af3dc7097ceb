"""Whole cycles on the tiny pair: a real SQLite log, training, the gate, a real vLLM student, a real Pushgateway.

The tests of this module run in order on one world: the first cycle promotes; then a cycle with no new
records has nothing to do; then a cycle on wrong teacher answers is refused by the regression set; then
rollback. A real gateway (`cascade serve` with an admin key) sits in front of the vLLM student, so promotion
and rollback switch its student tier through ``POST /admin/student``.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from openai import OpenAI
from typer.testing import CliRunner

from cascade.cli import app
from cascade.config import Settings
from distill.cycle import CycleResult, DistillError, run_cycle
from distill.promote import Registry
from router.agreement import exact_match
from serving.vllm import VllmOptions
from tests.distill.conftest import STUDENT_KEY
from tests.distill.helpers import (
    DAY,
    assert_html_matches_json,
    distill_settings,
    make_records,
    regression_set,
    write_records,
)
from tests.serving.helpers import Servers, start_gateway

pytestmark = pytest.mark.timeout(900)
ADMIN_KEY = "admin-key-0123456789"


@pytest.fixture(scope="module")
def gateway(lora_student: VllmOptions, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`cascade serve` over the vLLM student (the teacher name is never asked for here); its root URL."""
    work = tmp_path_factory.mktemp("gateway")
    teacher = dataclasses.replace(lora_student, served_name="tiny-teacher")
    process = start_gateway(
        Servers(lora_student, teacher),
        work,
        CASCADE_SERVER__ADMIN_KEY=ADMIN_KEY,
        CASCADE_SERVER__STATE_FILE=str(work / "gateway-state.json"),
        CASCADE_STUDENT__API_KEY=STUDENT_KEY,
        CASCADE_TEACHER__API_KEY=STUDENT_KEY,
    )
    yield process.ready_url.removesuffix("/healthz")
    process.stop()


def gateway_student(gateway: str) -> str:
    state = httpx.get(f"{gateway}/admin/state", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    assert state.status_code == 200, state.text
    return str(state.json()["student_model"])


@dataclass
class World:
    tmp: Path
    settings: Settings
    first: CycleResult
    config: Path


@pytest.fixture(scope="module")
def world(
    tiny_student: Path,
    tiny_tokenizer: Any,
    lora_student: VllmOptions,
    pushgateway: str,
    gateway: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> World:
    tmp = tmp_path_factory.mktemp("cycle")
    settings = distill_settings(
        tmp,
        tiny_student,
        student_url=lora_student.base_url,
        student_api_key=STUDENT_KEY,  # the student is started with --api-key: promotion and rollback send it
        regression_set=str(regression_set(tmp / "regression.jsonl")),
        hot_swap=True,
        pushgateway_url=pushgateway,
        gateway_admin_url=gateway,
        gateway_admin_key=ADMIN_KEY,
    )
    write_records(settings.log_store.url, tmp, make_records(tiny_tokenizer, 120, 30))
    config = tmp / "cascade.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    first = run_cycle(settings, now=DAY + timedelta(days=1), progress=False)
    return World(tmp, settings, first, config)


def test_a_cycle_promotes_the_candidate_and_vllm_serves_it(
    world: World, lora_student: VllmOptions, gateway: str
) -> None:
    assert world.first.status == "promoted", world.first.message
    registry = Registry(world.settings.distill.registry_dir)
    current = registry.current()
    assert current is not None and current.name == "v0001" and current.model_name == "tiny-student-distill-v0001"
    assert (current.path / "adapter_model.safetensors").exists() and current.manifest["previous"] is None
    assert gateway_student(gateway) == "tiny-student-distill-v0001"  # the gateway's student tier switched
    through = httpx.post(
        f"{gateway}/v1/chat/completions",
        json={"model": current.model_name, "messages": [{"role": "user", "content": "card please"}], "max_tokens": 4},
        timeout=30,
    )
    assert through.status_code == 200 and through.headers["x-cascade-tier"] == "student", through.text

    client = OpenAI(base_url=lora_student.base_url, api_key=STUDENT_KEY)
    eval_rows = [json.loads(line) for line in (world.first.run_dir / "eval.jsonl").read_text().splitlines()]  # type: ignore[operator]

    def agreement(model: str) -> float:
        hits = 0
        for row in eval_rows:
            answer = client.chat.completions.create(
                model=model, messages=row["messages"], max_tokens=6, temperature=0.0
            )
            assert answer.model == model and answer.usage is not None and answer.usage.completion_tokens > 0
            hits += exact_match(answer.choices[0].message.content or "", row["answer"])
        return hits / len(eval_rows)

    served = agreement(current.model_name)
    assert served > agreement("tiny-student")  # the served adapter is the trained student
    assert served > 0.1


def test_the_run_writes_its_report(world: World) -> None:
    run_dir = world.first.run_dir
    assert run_dir is not None
    report = json.loads((run_dir / "report.json").read_text())
    assert report["decision"] == "promoted" and report["promoted_version"] == "v0001"
    assert report["counts"]["teacher"] == 120 and report["counts"]["with_logprobs"] == 120
    assert report["counts"]["train"] + report["counts"]["eval"] == 120 + report["counts"]["accepted"]
    metrics = report["metrics"]
    assert metrics["heldout_candidate"]["agreement"] > metrics["heldout_serving"]["agreement"]
    assert len(report["losses"]) == world.settings.distill.steps
    assert report["losses"][-1]["loss"] < report["losses"][0]["loss"]
    assert "threshold" in report["calibration"]["message"]
    markdown = (run_dir / "report.md").read_text()
    assert "decision: **promoted**" in markdown and "| held-out, candidate |" in markdown
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = assert_html_matches_json(run_dir)
    assert page.figures["decision"] == "promoted" and len(page.images) == 1


def _pushed(url: str) -> dict[str, float]:
    values = {}
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith("cascade_distill_") and 'job="cascade-distill"' in line:
            name, value = line.split("{", 1)[0], line.rsplit(" ", 1)[1]
            values[name] = float(value)
    return values


def test_the_cycle_pushes_its_metrics(world: World, pushgateway: str) -> None:
    values = _pushed(pushgateway)
    report = world.first.report
    assert values["cascade_distill_promoted"] == 1.0
    assert values["cascade_distill_examples"] == report["counts"]["train"]
    assert values["cascade_distill_candidate_agreement"] == pytest.approx(
        report["metrics"]["heldout_candidate"]["agreement"]
    )
    assert values["cascade_distill_serving_agreement"] == pytest.approx(
        report["metrics"]["heldout_serving"]["agreement"]
    )
    assert values["cascade_distill_duration_seconds"] > 0
    assert values["cascade_distill_last_success_timestamp_seconds"] > DAY.timestamp()


def test_without_new_records_there_is_nothing_to_do(world: World, pushgateway: str) -> None:
    result = run_cycle(world.settings, now=DAY + timedelta(days=1, minutes=30), progress=False)
    assert result.status == "nothing_to_do" and "0 new teacher example(s)" in result.message
    outcome = CliRunner().invoke(app, ["distill", "run", "--config", str(world.config), "--quiet"])
    assert outcome.exit_code == 0, outcome.output
    assert "nothing to do" in outcome.output
    assert _pushed(pushgateway)["cascade_distill_promoted"] == 0.0


def test_the_gate_refuses_a_candidate_that_regresses(world: World, tiny_tokenizer: Any, gateway: str) -> None:
    wrong = make_records(tiny_tokenizer, 60, 0, seed=1, start=DAY + timedelta(days=1, hours=1), wrong=True)
    write_records(world.settings.log_store.url, world.tmp, wrong)
    settings = world.settings.model_copy(
        update={"distill": world.settings.distill.model_copy(update={"steps": 20, "checkpoint_every": 20})}
    )
    result = run_cycle(settings, now=DAY + timedelta(days=2), progress=False)
    assert result.status == "kept", result.message
    assert any(reason.startswith("regression: ") for reason in result.report["reasons"])
    metrics = result.report["metrics"]
    assert metrics["serving_version"] == "v0001"
    assert metrics["regression_candidate"]["agreement"] < metrics["regression_serving"]["agreement"]
    registry = Registry(settings.distill.registry_dir)
    assert registry.versions() == ["v0001"] and registry.current().name == "v0001"  # type: ignore[union-attr]
    assert gateway_student(gateway) == "tiny-student-distill-v0001"


def test_a_cycle_cannot_start_while_another_holds_the_lock(world: World) -> None:
    lock_path = world.settings.distill.work_dir / "cycle.lock"
    with open(lock_path, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(DistillError, match="another distillation cycle is running"):
            run_cycle(world.settings, progress=False)
        outcome = CliRunner().invoke(app, ["distill", "run", "--config", str(world.config)])
        assert outcome.exit_code == 1 and "another distillation cycle is running" in outcome.output
        fcntl.flock(held, fcntl.LOCK_UN)


def test_rollback_serves_the_previous_version(world: World, gateway: str) -> None:
    outcome = CliRunner().invoke(app, ["distill", "rollback", "--config", str(world.config)])
    assert outcome.exit_code == 0, outcome.output
    assert "rolled back v0001" in outcome.output and "the base model (tiny-student)" in outcome.output
    assert Registry(world.settings.distill.registry_dir).current() is None
    assert gateway_student(gateway) == "tiny-student"
    again = CliRunner().invoke(app, ["distill", "rollback", "--config", str(world.config)])
    assert again.exit_code == 1 and "nothing to roll back" in again.output
