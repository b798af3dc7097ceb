"""``cascade router``: calibrate a threshold (from labelled pairs or the log), evaluate routers."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cascade.commands.common import ConfigOption, SinceOption, UntilOption, fail, log_store_url, settings_or_exit
from cascade.config import Settings

if TYPE_CHECKING:
    from router.calibration import Calibration
    from router.from_log import LogPairs
    from router.labelled import LabelledPairs

router_app = typer.Typer(no_args_is_help=True, help="The confidence router: calibrate a threshold, evaluate offline.")
REPO_ROOT = Path(__file__).resolve().parents[2]


@router_app.command("calibrate")
def router_calibrate(
    labelled: Annotated[
        Path | None, typer.Argument(help="JSONL or CSV of scores with labels (or answer/reference); or --from-log")
    ] = None,
    target_quality: Annotated[float | None, typer.Option(help="Agreement among accepted answers")] = None,
    max_escalation: Annotated[float | None, typer.Option(help="Largest share sent to the teacher")] = None,
    confidence: Annotated[float, typer.Option(help="Probability that the target holds")] = 0.95,
    score_column: Annotated[str, typer.Option(help="Field holding the router's score")] = "score",
    label_column: Annotated[str, typer.Option(help="Field holding whether the student agreed")] = "student_ok",
    agreement: Annotated[
        str | None, typer.Option(help="Label from answer vs reference: exact, final_number, label, embedding")
    ] = None,
    answer_column: Annotated[str, typer.Option(help="Student answer field (with --agreement)")] = "student_answer",
    reference_column: Annotated[str, typer.Option(help="Reference field (with --agreement)")] = "reference",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also write the result JSON here")] = None,
    from_log: Annotated[
        bool, typer.Option("--from-log", help="Pairs from the log store: escalations and shadows, student vs teacher")
    ] = False,
    config: ConfigOption = None,
    log_url: Annotated[
        str | None, typer.Option(help="Log store URL (default: log_store.url of --config, else var/cascade.db)")
    ] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    score: Annotated[
        str | None, typer.Option(help="With --from-log: the signal to calibrate (default confidence, or a feature)")
    ] = None,
    shadow_share: Annotated[
        float | None,
        typer.Option(help="With --from-log: the audit share to sample at (default: the smallest the records logged)"),
    ] = None,
) -> None:
    """Choose the threshold that meets a quality target (or escalation budget) with stated confidence."""
    import json

    from router.calibration import CalibrationError, calibrate

    log_only: dict[str, object] = {"--config": config, "--log-url": log_url, "--since": since, "--until": until}
    log_only |= {"--score": score, "--shadow-share": shadow_share}
    if (labelled is None) == (not from_log):
        fail(["give exactly one of a LABELLED file or --from-log"])
    if labelled is not None and (given := [name for name, value in log_only.items() if value is not None]):
        fail([f"{', '.join(given)}: for --from-log only"])
    extra: dict[str, object] = {}
    try:
        if labelled is not None:
            pairs: LabelledPairs | LogPairs = _file_pairs(
                labelled, score_column, label_column, agreement, answer_column, reference_column
            )
        else:
            pairs, extra = _log_pairs(config, log_url, since, until, score, agreement, shadow_share)
        result = calibrate(pairs.scores, pairs.student_ok, target_quality, max_escalation, confidence)
        if config is not None and labelled is None:
            extra["expected_cost"] = _expected_cost(settings_or_exit(config), pairs, result)
    except (CalibrationError, ValueError) as exc:
        fail([str(exc)])
        raise  # unreachable: fail() exits
    if isinstance(warning := extra.get("warning"), str):
        typer.echo(f"cascade: warning: {warning}", err=True)
    text = json.dumps(result.as_dict() | extra, indent=2)
    if out is not None:
        out.write_text(text + "\n")
    typer.echo(text)


def _file_pairs(
    path: Path, score_column: str, label_column: str, agreement: str | None, answer_column: str, reference_column: str
) -> LabelledPairs:
    """The pairs of a labelled file (its LabelledFileError is a ValueError)."""
    from router.agreement import get_agreement
    from router.labelled import read_labelled

    agree = get_agreement(agreement) if agreement else None
    return read_labelled(path, score_column, label_column, agree, answer_column, reference_column)


def _expected_cost(settings: Settings, pairs: LabelledPairs | LogPairs, result: Calibration) -> dict[str, object]:
    """The calibrated threshold's cost per 1,000 requests at the config's prices (log pairs carry tokens)."""
    from router.from_log import LogPairs, expected_cost

    assert isinstance(pairs, LogPairs)
    interval = (result.escalation_interval.low, result.escalation_interval.high)
    student, teacher = settings.student.price.cost_usd, settings.teacher.price.cost_usd
    return expected_cost(pairs, result.escalation_rate, interval, student, teacher)


def _log_pairs(
    config: Path | None,
    url: str | None,
    since: datetime | None,
    until: datetime | None,
    score: str | None,
    agreement: str | None,
    shadow_share: float | None,
) -> tuple[LogPairs, dict[str, object]]:
    """The pairs of a log window, and the JSON's "source" (and "warning") fields (router/from_log.py)."""
    from router.from_log import DEFAULT_SCORE, sample_warning, source_report

    log_url = log_store_url(config, url)
    agreement = agreement or (settings_or_exit(config).log_store.shadow_agreement if config else "exact")
    score = score or DEFAULT_SCORE
    pairs = _read_pairs(log_url, agreement, since, until, score, shadow_share)
    extra: dict[str, object] = {"source": source_report(log_url, pairs, since, until, score, agreement, shadow_share)}
    if (warning := sample_warning(pairs)) is not None:
        extra["warning"] = warning
    return pairs, extra


def _read_pairs(
    url: str,
    agreement: str,
    since: datetime | None,
    until: datetime | None,
    score: str,
    shadow_share: float | None = None,
    student_model: str | None = None,
) -> LogPairs:
    """:func:`router.from_log.pairs_from_log`, a store that cannot be read being a ValueError (one line)."""
    from sqlalchemy.exc import SQLAlchemyError

    from router.agreement import get_agreement
    from router.from_log import pairs_from_log

    try:
        return pairs_from_log(url, get_agreement(agreement), since, until, score, shadow_share, student_model)
    except (SQLAlchemyError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"cannot read the log store: {first}") from None


@router_app.command("recalibrate")
def router_recalibrate(
    config: Annotated[Path, typer.Option("--config", "-c", help="The gateway's YAML config")],
    target_quality: Annotated[
        float | None, typer.Option(help="Agreement among accepted answers (default: distill.target_quality)")
    ] = None,
    confidence: Annotated[float, typer.Option(help="Probability that the target holds")] = 0.95,
    since: SinceOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Certify and print, but do not apply")] = False,
) -> None:
    """Certify the serving student's threshold on its own audit sample and apply it only when certified.

    The sample is the log's shadows and escalations answered by the serving student (the registry's current
    version, else student.model) since it was promoted (or --since). A threshold that cannot be certified is
    not applied: the gateway keeps the one it has. Safe to run on a schedule."""
    import json

    from distill.promote import PromotionError, Registry, Target, apply_threshold
    from router.calibration import CalibrationError, calibrate
    from router.from_log import DEFAULT_SCORE, sample_warning, source_report

    settings = settings_or_exit(config)
    target = target_quality if target_quality is not None else settings.distill.target_quality
    if target is None:
        fail(["give --target-quality, or set distill.target_quality in the config"])
    if not (0 < (target or 0) < 1 and 0.5 <= confidence < 1):
        fail([f"the target quality must be in (0, 1) and the confidence in [0.5, 1), got {target} and {confidence}"])
    if settings.router.scorer is not None:
        fail(["router.scorer is set: the router artefact keeps its own threshold (recalibrate it with router eval)"])
    assert target is not None
    registry = Registry(settings.distill.registry_dir)
    try:
        version = registry.current()
        if since is None and version is not None and isinstance(version.manifest.get("created"), str):
            since = datetime.fromisoformat(version.manifest["created"])
    except (PromotionError, ValueError) as exc:
        fail([f"distill.registry_dir: {exc}"])
        raise  # unreachable: fail() exits
    model = version.model_name if version is not None else settings.student.model
    url, agreement = settings.log_store.url, settings.log_store.shadow_agreement
    try:
        pairs = _read_pairs(url, agreement, since, None, DEFAULT_SCORE, student_model=model)
    except ValueError as exc:
        fail([str(exc)])
        raise  # unreachable: fail() exits
    report: dict[str, Any] = {
        "student_model": model,
        "version": version.name if version is not None else "base",
        "source": source_report(url, pairs, since, None, DEFAULT_SCORE, agreement, None),
        "applied": False,
    }
    try:
        result = calibrate(pairs.scores, pairs.student_ok, target_quality=target, confidence=confidence)
    except CalibrationError as exc:
        report["message"] = f"threshold kept at the gateway's: {exc}"
        typer.echo(json.dumps(report, indent=2))
        return
    report["calibration"] = result.as_dict()
    if (warning := sample_warning(pairs)) is not None:
        report["warning"] = warning
        dry_run = True  # a sample that cannot be proven uniform is not applied
    report["message"] = f"threshold {result.threshold:.6g} certifies quality {target} on {result.n} pair(s) of {model}"
    if not dry_run:
        try:
            report["threshold_before"] = apply_threshold(registry, version, Target.of(settings), result.threshold)
            report["applied"] = True
        except (PromotionError, OSError) as exc:
            report["message"] += f"; not applied: {exc}"
    typer.echo(json.dumps(report, indent=2))


@router_app.command("eval")
def router_eval(
    dataset: Annotated[
        str,
        typer.Option(
            help="Offline: routellm-mmlu, routellm-gsm8k, or a CSV (prompt, weak_ok, strong_ok). "
            "With --live: banking77, gsm8k or bfcl (tool calls)"
        ),
    ],
    live: Annotated[bool, typer.Option("--live", help="Run the task through the real student and teacher")] = False,
    config: ConfigOption = None,
    limit: Annotated[int | None, typer.Option(help="--live: at most this many items (a seeded sample)")] = None,
    intents: Annotated[int, typer.Option(help="--live banking77: how many intents to classify among")] = 10,
    tool_choice: Annotated[
        str, typer.Option(help="--live bfcl: auto (every category), or required (the categories answered by a call)")
    ] = "auto",
    recording: Annotated[
        Path | None, typer.Option(help="--live: the answers recording (resumed; default var/live/<task>.jsonl)")
    ] = None,
    collect_answers: Annotated[
        bool, typer.Option("--collect/--no-collect", help="--live: ask the tiers for what is not yet recorded")
    ] = True,
    concurrency: Annotated[int, typer.Option(help="--live: items in flight at once")] = 4,
    teacher_from: Annotated[
        Path | None, typer.Option(help="--live: reuse this recording's teacher answers (a new student, same teacher)")
    ] = None,
    data_dir: Annotated[Path, typer.Option(help="Shared data folder")] = REPO_ROOT / ".." / "shared" / "data",
    out_dir: Annotated[Path, typer.Option(help="Where the JSON and PNG go")] = REPO_ROOT / "bench" / "results",
    encoder: Annotated[str, typer.Option(help="minilm (sentence embedding) or tfidf (no model)")] = "minilm",
    test_fraction: Annotated[float, typer.Option(help="Held-out share of the prompts")] = 0.3,
    seed: Annotated[int, typer.Option(help="Split and model seed")] = 0,
    folds: Annotated[int, typer.Option(help="Cross-validation folds for choosing the variant")] = 3,
    save_router: Annotated[Path | None, typer.Option(help="Save the trained router as a new version here")] = None,
) -> None:
    """Offline: train the pre-generation router on a split, report APGR/CPT on the held-out part. With
    --live: answer a labelled task with the configured student and teacher and evaluate every router."""
    import json

    if live:
        summary = _eval_live(
            config,
            dataset,
            data_dir.resolve(),
            out_dir,
            limit=limit,
            intents=intents,
            tool_choice=tool_choice,
            seed=seed,
            recording=recording,
            collect_answers=collect_answers,
            concurrency=concurrency,
            teacher_from=teacher_from,
        )
        typer.echo(json.dumps(summary, indent=2))
        return

    from router.datasets import DatasetError
    from router.evaluate import run_eval

    try:
        result = run_eval(
            dataset, data_dir.resolve(), out_dir, encoder, test_fraction, seed, folds, save_router=save_router
        )
    except (DatasetError, ValueError) as exc:
        fail([str(exc)])
        raise  # unreachable: fail() exits
    summary = {key: result[key] for key in ("dataset", "n_train", "n_test", "chosen_variant", "metrics")}
    summary["router_apgr_bootstrap_95"] = result["router_apgr_bootstrap_95"]
    typer.echo(json.dumps(summary, indent=2))


SUMMARY_KEYS = ("task", "n", "student_quality", "teacher_quality", "oracle_quality", "teacher_only_cost_per_1k_usd")


def _eval_live(
    config: Path | None,
    task_name: str,
    data_dir: Path,
    out_dir: Path,
    *,
    limit: int | None,
    intents: int,
    seed: int,
    tool_choice: str = "auto",
    recording: Path | None,
    collect_answers: bool,
    concurrency: int,
    teacher_from: Path | None = None,
) -> dict[str, Any]:
    """Record and evaluate; the short summary for the terminal (the whole result is in the JSON file)."""
    from evaluation.collect import CollectError, Endpoint
    from evaluation.router_eval import run_live
    from evaluation.tasks import TaskError, load_task

    def progress(line: str) -> None:
        typer.echo(f"cascade: {line}", err=True)

    try:
        task = load_task(task_name, data_dir, limit, seed, intents, tool_choice)
        settings = settings_or_exit(config)
        result = run_live(
            task,
            Endpoint.of("student", settings.student),
            Endpoint.of("teacher", settings.teacher),
            recording or settings.local.var_dir / "live" / f"{task.name}.jsonl",
            out_dir,
            settings.student.price.cost_usd,
            settings.teacher.price.cost_usd,
            collect_answers=collect_answers,
            concurrency=concurrency,
            top_logprobs=settings.router.top_logprobs,
            progress=progress,
            teacher_from=teacher_from,
        )
    except (TaskError, CollectError, ValueError) as exc:
        fail([str(exc)])
        raise  # unreachable: fail() exits
    routers = {
        name: {key: value for key, value in router.items() if key.startswith(("teacher_quality", "best"))}
        for name, router in result["routers"].items()
    }
    return {key: result[key] for key in SUMMARY_KEYS} | {"routers": routers}
