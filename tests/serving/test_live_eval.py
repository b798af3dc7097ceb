"""`cascade router eval --live` end to end on the real tiny vLLM pair: record, evaluate, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cascade.cli import app
from tests.serving.helpers import Servers

pytestmark = pytest.mark.timeout(900)  # may wait for both vLLM servers to start
DATA = Path(__file__).resolve().parents[1] / "data"  # excerpts of the shared datasets (tests/data/README.md)


def test_live_eval_records_both_tiers_and_reports_every_router(tiny_servers: Servers, tmp_path: Path) -> None:
    config = tmp_path / "cascade.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "student": {
                    "url": tiny_servers.student.base_url,
                    "model": tiny_servers.student.served_name,
                    "price": {"input_usd_per_mtok": 0.1, "output_usd_per_mtok": 0.2},
                },
                "teacher": {
                    "url": tiny_servers.teacher.base_url,
                    "model": tiny_servers.teacher.served_name,
                    "price": {"input_usd_per_mtok": 2.5, "output_usd_per_mtok": 10.0},
                },
            }
        )
    )
    recording, out = tmp_path / "rec.jsonl", tmp_path / "out"
    args = ["router", "eval", "--live", "--dataset", "banking77", "--limit", "6", "--intents", "3"]
    args += ["--config", str(config), "--recording", str(recording), "--out-dir", str(out), "--data-dir", str(DATA)]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    rows = [json.loads(line) for line in recording.read_text().splitlines()]
    assert len(rows) == 6 and all(row["student"]["logprobs"] and row["teacher"]["text"] is not None for row in rows)
    result = json.loads((out / "router_live_banking77.json").read_text())
    assert result["n"] == 6 and result["student"]["model"] == tiny_servers.student.served_name
    assert {"signal mean_logprob", "signal prob_q10", "oracle", "random"} <= set(result["routers"])
    assert result["teacher_only_cost_per_1k_usd"] > result["student_only_cost_per_1k_usd"] > 0
    assert (out / "router_live_banking77.png").stat().st_size > 0
    assert (out / "router_live_banking77_cost.png").stat().st_size > 0

    again = CliRunner().invoke(app, [*args, "--no-collect"])  # analysis only, from the recording
    assert again.exit_code == 0, again.output
    rerun = json.loads((out / "router_live_banking77.json").read_text())
    assert rerun["routers"] == result["routers"] and len(recording.read_text().splitlines()) == 6
