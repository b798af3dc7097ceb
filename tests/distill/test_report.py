"""The cycle's HTML report: one offline file whose figures are the JSON report's, with the loss curve inside."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from distill.report import write_report
from tests.distill.helpers import assert_html_matches_json

REPORT: dict[str, Any] = {
    "run_id": "20261204T010000Z",
    "since": None,
    "until": "2026-12-04T01:00:00+00:00",
    "decision": "promoted",
    "reasons": ["held-out agreement 0.812 > 0.700 (min_gain 0.0)", "regression <b>held</b>"],
    "promoted_version": "v0003",
    "promoted_model": "student-v0003",
    "counts": {"teacher": 120, "accepted": 24, "train": 130, "eval": 14},
    "metrics": {
        "heldout_serving": {"n": 14, "agreement": 0.7, "escalation_rate": 0.42857, "mean_confidence": 0.61},
        "heldout_candidate": {"n": 14, "agreement": 0.8125, "escalation_rate": 0.2142, "mean_confidence": 0.77},
        "regression_serving": None,
    },
    "calibration": {"message": "threshold 0.73 certifies quality 0.9", "result": {"threshold": 0.7312}},
    "threshold_before": 0.5,
    "training": {"steps": 3, "resumed_from": None, "seconds": 12.5, "first_loss": 2.25, "last_loss": 1.5},
    "duration_s": 40.0,
}
LOSSES: list[dict[str, float | None]] = [
    {"step": 1, "loss": 2.25, "ce": 2.0, "kd": 0.5},
    {"step": 2, "loss": 1.8, "ce": 1.7, "kd": 0.4},
    {"step": 3, "loss": 1.5, "ce": 1.4, "kd": 0.3},
]


def test_the_html_report_shows_the_json_figures_and_embeds_the_loss_curve(tmp_path: Path) -> None:
    write_report(tmp_path, REPORT, LOSSES)
    page = assert_html_matches_json(tmp_path)
    assert page.figures["metrics.heldout_candidate.agreement"] == "0.812"
    assert page.figures["metrics.heldout_serving.escalation_rate"] == "0.429"
    assert page.figures["calibration.result.threshold"] == "0.731"
    assert page.figures["threshold_before"] == "0.500"
    assert page.figures["metrics.regression_candidate.agreement"] == "n/a"
    assert page.figures["counts.train"] == "130"
    (image,) = page.images
    prefix = "data:image/png;base64,"
    assert image.startswith(prefix)
    assert base64.b64decode(image.removeprefix(prefix)) == (tmp_path / "loss.png").read_bytes()


def test_the_html_report_escapes_what_it_quotes(tmp_path: Path) -> None:
    write_report(tmp_path, {**REPORT, "decision": "kept", "promoted_version": None}, [])
    text = (tmp_path / "report.html").read_text()
    assert "regression &lt;b&gt;held&lt;/b&gt;" in text and "<b>" not in text
    page = assert_html_matches_json(tmp_path)
    assert page.figures["decision"] == "kept" and page.images == []
