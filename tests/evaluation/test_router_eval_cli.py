"""`cascade router eval --live` refuses bad input with one clear line before it contacts anything."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cascade.cli import app

DATA = Path(__file__).resolve().parents[1] / "data"  # excerpts of the shared datasets (tests/data/README.md)


def test_an_unknown_task_is_named() -> None:
    result = CliRunner().invoke(app, ["router", "eval", "--live", "--dataset", "mmlu"])
    assert result.exit_code == 2 and "unknown task 'mmlu'" in result.output and "Traceback" not in result.output


def test_a_missing_recording_for_analysis_only_is_named(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "student: {url: 'http://127.0.0.1:9/v1', model: s}\nteacher: {url: 'http://127.0.0.1:9/v1', model: t}\n"
    )
    args = [
        "router",
        "eval",
        "--live",
        "--dataset",
        "banking77",
        "--limit",
        "3",
        "--no-collect",
        "--config",
        str(config),
        "--data-dir",
        str(DATA),
    ]
    result = CliRunner().invoke(app, [*args, "--recording", str(tmp_path / "none.jsonl")])
    assert result.exit_code == 2 and "none.jsonl: no such recording" in result.output


def test_teacher_answers_from_the_same_recording_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "student: {url: 'http://127.0.0.1:9/v1', model: s}\nteacher: {url: 'http://127.0.0.1:9/v1', model: t}\n"
    )
    rec = str(tmp_path / "rec.jsonl")
    args = ["router", "eval", "--live", "--dataset", "banking77", "--limit", "3", "--config", str(config)]
    args += ["--data-dir", str(DATA)]
    result = CliRunner().invoke(app, [*args, "--recording", rec, "--teacher-from", rec])
    assert result.exit_code == 2 and "--teacher-from must name another recording" in result.output
