"""`cascade router calibrate` and `cascade router eval` on small files (no embedding model)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from cascade.cli import app

runner = CliRunner()


def write_scores(path: Path, n: int = 3000, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.uniform(size=n)
    ok = rng.uniform(size=n) < 0.6 + 0.4 * scores
    with path.open("w") as handle:
        for s, k in zip(scores, ok, strict=True):
            handle.write(json.dumps({"score": float(s), "student_ok": bool(k)}) + "\n")


def test_calibrate_from_jsonl(tmp_path: Path) -> None:
    labelled, out = tmp_path / "pairs.jsonl", tmp_path / "cal.json"
    write_scores(labelled)
    result = runner.invoke(app, ["router", "calibrate", str(labelled), "--target-quality", "0.9", "-o", str(out)])
    assert result.exit_code == 0, result.output
    cal = json.loads(out.read_text())
    assert cal["n"] == 3000 and cal["certified_quality"] == 0.9
    assert 0.5 <= cal["threshold"] < 0.7  # the true boundary is 0.5


def test_calibrate_with_an_agreement_function_on_csv(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    rng = np.random.default_rng(1)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["score", "student_answer", "reference"])
        for _ in range(400):
            score = rng.uniform()
            right = rng.uniform() < score
            writer.writerow([score, "so #### 42" if right else "#### 41", "#### 42"])
    args = ["router", "calibrate", str(path), "--agreement", "final_number", "--max-escalation", "0.5"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    cal = json.loads(result.stdout)
    assert cal["escalation_rate"] <= 0.5 and cal["accepted_quality"] > 0.6


def test_calibrate_refuses_a_too_small_set_with_one_clear_line(tmp_path: Path) -> None:
    labelled = tmp_path / "pairs.jsonl"
    write_scores(labelled, n=30)
    result = runner.invoke(app, ["router", "calibrate", str(labelled), "--target-quality", "0.95"])
    assert result.exit_code == 2
    assert "cannot certify quality 0.95" in result.output and "Traceback" not in result.output


def test_calibrate_reports_a_malformed_file(tmp_path: Path) -> None:
    labelled = tmp_path / "pairs.jsonl"
    labelled.write_text('{"score": 0.5, "student_ok": true}\n{"score": "high", "student_ok": true}\n')
    result = runner.invoke(app, ["router", "calibrate", str(labelled), "--target-quality", "0.9"])
    assert result.exit_code == 2 and "record 2: expected a number" in result.output


def write_pairs(path: Path, n: int = 360, seed: int = 0) -> None:
    """Prompts about algebra are where only the strong model is right; others both get right."""
    rng = np.random.default_rng(seed)
    topics = ["algebra equation solve", "capital city country", "colour of the sky", "count apples basket"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", "weak_ok", "strong_ok"])
        for i in range(n):
            topic = topics[i % 4]
            hard = topic.startswith("algebra")
            weak = bool(rng.uniform() < (0.2 if hard else 0.85))
            strong = bool(rng.uniform() < 0.9)
            writer.writerow([f"Question {i}: {topic} number {rng.integers(100)}?", weak, strong])


def test_eval_on_a_csv_with_the_model_free_encoder(tmp_path: Path) -> None:
    data, out = tmp_path / "pairs.csv", tmp_path / "results"
    write_pairs(data)
    args = ["router", "eval", "--dataset", str(data), "--encoder", "tfidf", "--out-dir", str(out), "--folds", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "router_eval_pairs.json").read_text())
    assert (out / "router_eval_pairs.png").stat().st_size > 10_000
    metrics = report["metrics"]
    assert metrics["random"]["apgr"] == 0.5
    assert metrics["router (tfidf)"]["apgr"] > 0.6  # it finds the algebra prompts (random: 0.5)
    assert metrics["oracle"]["apgr"] >= metrics["router (tfidf)"]["apgr"]
    assert report["n_test"] == 108 and report["n_train"] == 252


def test_eval_reports_a_missing_dataset(tmp_path: Path) -> None:
    result = runner.invoke(app, ["router", "eval", "--dataset", "routellm-mmlu", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "no mmlu_*.csv files" in result.output
