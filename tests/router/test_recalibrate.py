"""`cascade router recalibrate`: the serving student's threshold, certified on its own audit sample in the log
and applied to a real gateway only when certified."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import yaml
from typer.testing import CliRunner

from cascade.cli import app
from tests.conftest import STUDENT_MODEL, GatewayFactory, Server, gateway_config
from tests.router.test_calibrate_from_log import traffic_records, write_records

ADMIN_KEY = "admin-key-for-recalibration-tests"
runner = CliRunner()


def recalibrate(config: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    result = runner.invoke(app, ["router", "recalibrate", "--config", str(config), *args])
    return result.exit_code, json.loads(result.stdout) if result.exit_code == 0 else {}, result.stderr


def test_a_certified_threshold_is_applied_and_an_uncertified_one_is_not(
    start_gateway: GatewayFactory, fake_student: Server, fake_teacher: Server, tmp_path: Path
) -> None:
    gateway = start_gateway({**gateway_config(fake_student.url, fake_teacher.url), "server": {"admin_key": ADMIN_KEY}})

    def gateway_threshold() -> float:
        state = httpx.get(f"{gateway.root}/admin/state", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()
        return float(state["router"]["threshold"])

    records = traffic_records()[:8000]
    assert all(r.student is not None and r.student.model == STUDENT_MODEL for r in records)
    others = [replace(r, request_id=f"old-{r.request_id}") for r in records[:300]]  # another student's answers
    for record in others:
        assert record.student is not None
        record.student = replace(record.student, model="retired-student")
    log_url = f"sqlite+aiosqlite:///{tmp_path / 'log.db'}"
    asyncio.run(write_records(log_url, tmp_path, [*records, *others]))
    config = tmp_path / "cascade.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "student": {"url": fake_student.url, "model": STUDENT_MODEL},
                "teacher": {"url": fake_teacher.url, "model": "teacher-model"},
                "log_store": {"url": log_url},
                "distill": {
                    "registry_dir": str(tmp_path / "registry"),
                    "gateway_admin_url": gateway.root,
                    "gateway_admin_key": ADMIN_KEY,
                    "target_quality": 0.9,
                },
            }
        )
    )

    code, dry, stderr = recalibrate(config, "--dry-run")
    assert code == 0, stderr
    assert dry["applied"] is False and dry["student_model"] == STUDENT_MODEL and dry["version"] == "base"
    assert dry["source"]["counts"]["other_student"] == len(others)
    assert gateway_threshold() == 0.5  # the config's

    code, report, stderr = recalibrate(config)
    assert code == 0, stderr
    threshold = report["calibration"]["threshold"]
    assert report["applied"] is True and report["threshold_before"] == 0.5
    assert report["calibration"]["certified_quality"] == 0.9 and 0.5 <= threshold < 0.7  # true boundary 0.5
    assert gateway_threshold() == threshold

    code, kept, stderr = recalibrate(config, "--target-quality", "0.999")
    assert code == 0, stderr
    assert kept["applied"] is False and kept["message"].startswith("threshold kept at the gateway's: ")
    assert "calibration" not in kept and gateway_threshold() == threshold


def test_no_target_or_no_log_is_one_clear_line(tmp_path: Path) -> None:
    config = tmp_path / "cascade.yaml"
    upstream = {"url": "http://127.0.0.1:1/v1"}
    settings: dict[str, Any] = {"student": {**upstream, "model": "s"}, "teacher": {**upstream, "model": "t"}}
    settings["log_store"] = {"url": f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'log.db'}"}
    config.write_text(yaml.safe_dump({**settings, "distill": {"target_quality": None}}))
    code, _, stderr = recalibrate(config)
    assert code == 2 and stderr == "cascade: give --target-quality, or set distill.target_quality in the config\n"
    code, _, stderr = recalibrate(config, "--target-quality", "0.9")
    assert code == 2 and stderr.startswith("cascade: cannot read the log store: ") and len(stderr.splitlines()) == 1
