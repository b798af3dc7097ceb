"""The record of one cycle: report.json, report.md, report.html and loss.png in its run folder, and Pushgateway
metrics. The HTML file is self-contained (styles inline, the loss curve embedded), so it reads offline."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

JOB = "cascade-distill"
METRIC_SETS = (
    ("heldout_serving", "held-out, serving"),
    ("heldout_candidate", "held-out, candidate"),
    ("regression_serving", "regression, serving"),
    ("regression_candidate", "regression, candidate"),
)
METRIC_COLUMNS = ("agreement", "escalation_rate", "mean_confidence", "n")


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
    return (
        f"| {name} | {_cell(metrics.get('agreement'))} | {_cell(metrics.get('escalation_rate'))} | "
        f"{_cell(metrics.get('mean_confidence'))} | {metrics.get('n', 0)} |"
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
        *[_metric_row(label, metrics.get(key)) for key, label in METRIC_SETS],
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


_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; padding: 0 1rem; color: #1d2330; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 1.8rem; }
table { border-collapse: collapse; } th, td { padding: .3rem .8rem; border-bottom: 1px solid #dde; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.decision { display: inline-block; padding: .15rem .6rem; border-radius: .3rem; font-weight: 600; }
.promoted { background: #d8f3dc; color: #1b4332; } .kept { background: #fde2e1; color: #7a1d1a; }
"""


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def _figure(name: str, value: Any) -> str:
    """One figure, tagged with its path in report.json so that a reader (or a test) can match the two."""
    return f'<td data-figure="{html.escape(name)}">{_cell(value)}</td>'


def render_html(report: dict[str, Any], loss_png: bytes | None) -> str:
    e = html.escape
    decision = str(report["decision"])
    counts = report.get("counts", {})
    metrics = report.get("metrics", {})
    training = report.get("training") or {}
    calibration = report.get("calibration") or {}
    result = calibration.get("result") or {}
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Cascade distillation run {e(str(report['run_id']))}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Distillation run {e(str(report['run_id']))}</h1>",
        f'<p>Decision: <span class="decision {e(decision)}" data-figure="decision">{e(decision)}</span>',
    ]
    if report.get("promoted_version"):
        parts.append(
            f' (<span data-figure="promoted_version">{e(str(report["promoted_version"]))}</span> as '
            f"<code>{e(str(report.get('promoted_model')))}</code>)"
        )
    parts.append(
        f"</p><p>Window: {e(str(report.get('since') or 'beginning'))} to {e(str(report['until']))}; "
        f"took {float(report.get('duration_s', 0)):.1f} s.</p>"
    )
    parts += ["<h2>Why</h2><ul>", *[f"<li>{e(str(reason))}</li>" for reason in report.get("reasons", [])], "</ul>"]
    parts.append("<h2>Before and after</h2><table><tr><th>set, student</th>")
    parts += [f"<th>{e(column.replace('_', ' '))}</th>" for column in METRIC_COLUMNS]
    parts.append("</tr>")
    for key, label in METRIC_SETS:
        row = metrics.get(key) or {}
        cells = "".join(_figure(f"metrics.{key}.{column}", row.get(column)) for column in METRIC_COLUMNS)
        parts.append(f"<tr><td>{e(label)}</td>{cells}</tr>")
    parts.append("</table><p>Escalation rate: the share of answers the router sends to the teacher.</p>")
    parts.append("<h2>Router threshold</h2><table>")
    parts.append(f"<tr><td>before</td>{_figure('threshold_before', report.get('threshold_before'))}</tr>")
    certified = _figure("calibration.result.threshold", result.get("threshold"))
    parts.append(f"<tr><td>on the gate's answers (indicative, not applied)</td>{certified}</tr>")
    parts.append(f"</table><p>{e(str(calibration.get('message', 'no recalibration')))}</p>")
    parts.append("<h2>Data</h2><table><tr><th>what</th><th>count</th></tr>")
    parts += [f"<tr><td>{e(str(key))}</td>{_figure(f'counts.{key}', value)}</tr>" for key, value in counts.items()]
    parts.append("</table>")
    if training:
        parts.append("<h2>Training</h2><table>")
        for key in ("steps", "seconds", "first_loss", "last_loss"):
            parts.append(f"<tr><td>{e(key.replace('_', ' '))}</td>{_figure(f'training.{key}', training.get(key))}</tr>")
        parts.append("</table>")
        if loss_png is not None:
            data = base64.b64encode(loss_png).decode()
            parts.append(f'<p><img alt="distillation loss by step" src="data:image/png;base64,{data}"></p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(run_dir: Path, report: dict[str, Any], losses: list[dict[str, float | None]]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    loss_png = None
    if losses:
        plot_losses(losses, run_dir / "loss.png")
        loss_png = (run_dir / "loss.png").read_bytes()
    (run_dir / "report.json").write_text(json.dumps({**report, "losses": losses}, indent=2, default=str) + "\n")
    (run_dir / "report.md").write_text(markdown(report))
    (run_dir / "report.html").write_text(render_html(report, loss_png))


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
