"""The record of one cycle: report.json, report.md and loss.png in its run folder, and Pushgateway metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

JOB = "cascade-distill"


def plot_losses(losses: list[dict[str, float | None]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)

    def column(name: str) -> list[float]:
        return [float("nan") if row[name] is None else float(row[name] or 0.0) for row in losses]

    steps = column("step")
    ax.plot(steps, column("loss"), label="loss")
    ax.plot(steps, column("ce"), label="CE", alpha=0.7)
    if any(row["kd"] is not None for row in losses):
        ax.plot(steps, column("kd"), label="T² · KL", alpha=0.7)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("distillation loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _metric_row(name: str, metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return f"| {name} | n/a | n/a | n/a | 0 |"

    def fmt(value: Any) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    return (
        f"| {name} | {fmt(metrics.get('agreement'))} | {fmt(metrics.get('escalation_rate'))} | "
        f"{fmt(metrics.get('mean_confidence'))} | {metrics.get('n', 0)} |"
    )


def markdown(report: dict[str, Any]) -> str:
    counts = report.get("counts", {})
    lines = [
        f"# Distillation run {report['run_id']}",
        "",
        f"- decision: **{report['decision']}**",
        f"- window: {report.get('since') or 'beginning'} to {report['until']}",
        f"- duration: {report.get('duration_s', 0):.1f} s",
    ]
    if report.get("promoted_version"):
        lines.append(f"- promoted: {report['promoted_version']} as `{report.get('promoted_model')}`")
    lines += ["", "## Why", "", *[f"- {reason}" for reason in report.get("reasons", [])], "", "## Data", ""]
    lines += ["| what | count |", "| --- | --- |", *[f"| {key} | {value} |" for key, value in counts.items()]]
    metrics = report.get("metrics", {})
    lines += [
        "",
        "## Before / after",
        "",
        "| set, student | agreement | escalation rate | mean confidence | n |",
        "| --- | --- | --- | --- | --- |",
        _metric_row("held-out, serving", metrics.get("heldout_serving")),
        _metric_row("held-out, candidate", metrics.get("heldout_candidate")),
        _metric_row("regression, serving", metrics.get("regression_serving")),
        _metric_row("regression, candidate", metrics.get("regression_candidate")),
    ]
    training = report.get("training") or {}
    if training:
        lines += [
            "",
            "## Training",
            "",
            f"- steps: {training.get('steps')} (resumed from {training.get('resumed_from') or 'scratch'}), "
            f"{training.get('seconds', 0):.1f} s",
            f"- first / last loss: {training.get('first_loss')} / {training.get('last_loss')}",
            "",
            "![loss](loss.png)",
        ]
    calibration = report.get("calibration")
    if calibration:
        lines += ["", "## Router", "", f"- {calibration.get('message')}"]
    return "\n".join(lines) + "\n"


def write_report(run_dir: Path, report: dict[str, Any], losses: list[dict[str, float | None]]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    if losses:
        plot_losses(losses, run_dir / "loss.png")
    (run_dir / "report.json").write_text(json.dumps({**report, "losses": losses}, indent=2, default=str) + "\n")
    (run_dir / "report.md").write_text(markdown(report))


def push_metrics(
    url: str,
    *,
    success_time: float | None,
    candidate_agreement: float | None,
    serving_agreement: float | None,
    promoted: bool,
    examples: int,
    duration_s: float,
) -> None:
    """Push the cycle's gauges to a Prometheus Pushgateway under job ``cascade-distill``."""
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

    registry = CollectorRegistry()

    def gauge(name: str, doc: str, value: float | None) -> None:
        if value is not None:
            Gauge(name, doc, registry=registry).set(value)

    gauge("cascade_distill_last_success_timestamp_seconds", "End of the last cycle that completed", success_time)
    gauge("cascade_distill_candidate_agreement", "Candidate's held-out agreement with the teacher", candidate_agreement)
    gauge("cascade_distill_serving_agreement", "Serving student's held-out agreement", serving_agreement)
    gauge("cascade_distill_promoted", "1 if the last cycle promoted its candidate", 1.0 if promoted else 0.0)
    gauge("cascade_distill_examples", "Training examples of the last cycle", float(examples))
    gauge("cascade_distill_duration_seconds", "Duration of the last cycle", duration_s)
    push_to_gateway(url, job=JOB, registry=registry, timeout=10)
