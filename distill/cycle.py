"""One re-distillation cycle, top to bottom: lock, dataset, train, gate, promote, report.

State in ``distill.work_dir`` (default ``var/distill``):

- ``cycle.lock``: a file lock; a second cycle started while one runs fails at once, saying so.
- ``state.json``: ``data_since`` (the end of the window of the last promoted run: the next cycle reads the
  log from there, so a refused candidate's data is used again) and ``last_success`` (the end of the last
  cycle that completed, promoted or not).
- ``pending.json``: the run in progress (its id and window). A cycle that failed or was interrupted is
  resumed by the next invocation: same window, same dataset files, training from its checkpoint.
- ``runs/<id>/``: the run's dataset (train/eval JSONL), checkpoint, candidate, report.json, report.md,
  report.html (one self-contained file) and loss.png. ``data/<id>.jsonl``: each completed run's teacher
  examples, replayed by later cycles.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock, Timeout

from cascade.config import Settings, safe_url
from cascade.files import write_atomic
from distill import dataset as ds
from distill.errors import DistillError

__all__ = ["CycleResult", "DistillError", "rollback", "run_cycle"]

Status = Literal["promoted", "kept", "nothing_to_do"]


@dataclass(slots=True)
class CycleResult:
    status: Status
    message: str
    run_id: str | None = None
    run_dir: Path | None = None
    report: dict[str, Any] = field(default_factory=dict)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise DistillError(f"{path} is not valid JSON ({exc}); fix or delete it") from None
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def run_cycle(
    settings: Settings,
    since: datetime | None = None,
    *,
    now: datetime | None = None,
    progress: bool = True,
    say: Callable[[str], None] = lambda line: print(f"cascade: distill: {line}", flush=True),
) -> CycleResult:
    """Run one cycle under the lock; raise :class:`DistillError` (with the reason) when it cannot complete."""
    with cycle_lock(settings):
        return _cycle(settings, _utc(since), _utc(now) or datetime.now(UTC), progress, say)


@contextmanager
def cycle_lock(settings: Settings) -> Iterator[None]:
    """Two cycles (or a cycle and a rollback) never overlap: a file lock in ``distill.work_dir``."""
    work = settings.distill.work_dir
    work.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(work / "cycle.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise DistillError(f"another distillation cycle is running (lock {work / 'cycle.lock'} is held)") from None
    try:
        yield
    finally:
        lock.release()


def _cycle(
    settings: Settings, since: datetime | None, now: datetime, progress: bool, say: Callable[[str], None]
) -> CycleResult:
    started = time.perf_counter()
    d = settings.distill
    work = d.work_dir
    state = _read_json(work / "state.json")
    pending = _read_json(work / "pending.json")
    if pending and (since is None or since == _parse_time(pending.get("since"))):
        run_id, since, until = pending["run_id"], _parse_time(pending.get("since")), _parse_time(pending["until"])
        assert until is not None
        say(f"resuming run {run_id} (window {since or 'beginning'} to {until})")
    else:
        until = now
        since = since if since is not None else _parse_time(state.get("data_since"))
        run_id = until.strftime("%Y%m%dT%H%M%SZ")
    run_dir = work / "runs" / run_id

    if (run_dir / "train.jsonl").exists() and (run_dir / "eval.jsonl").exists():
        data = ds.DistillData(
            ds.read_examples(run_dir / "train.jsonl"),
            ds.read_examples(run_dir / "eval.jsonl"),
            ds.read_examples(run_dir / "new.jsonl"),
            ds.Counts(**_read_json(run_dir / "counts.json")),
        )
    else:
        try:
            records = asyncio.run(ds.read_records(settings.log_store.url, since, until))
        except Exception as exc:
            raise DistillError(f"reading the log store {safe_url(settings.log_store.url)}: {exc}") from exc
        teacher, accepted, counts = ds.examples_from_records(records)
        if len(teacher) < d.min_examples:
            message = (
                f"nothing to do: {len(teacher)} new teacher example(s) in {len(records)} record(s) since "
                f"{since or 'the beginning'} (distill.min_examples is {d.min_examples})"
            )
            (work / "pending.json").unlink(missing_ok=True)
            _push(settings, None, None, False, 0, time.perf_counter() - started, now)
            return CycleResult("nothing_to_do", message)
        history = ds.read_history(work / "data", exclude=run_id)
        data = ds.build(
            teacher,
            accepted,
            history,
            counts,
            eval_fraction=d.eval_fraction,
            min_eval=d.min_eval_examples,
            max_eval=d.max_eval_examples,
            replay_accepted_ratio=d.replay_accepted_ratio,
            replay_history_ratio=d.replay_history_ratio,
            seed=d.seed,
        )
        run_dir.mkdir(parents=True, exist_ok=True)
        ds.write_examples(run_dir / "new.jsonl", data.new)
        ds.write_examples(run_dir / "eval.jsonl", data.eval)
        ds.write_examples(run_dir / "train.jsonl", data.train)  # last: its presence marks a complete dataset
        _write_json(run_dir / "counts.json", asdict(data.counts))
        _write_json(work / "pending.json", {"run_id": run_id, "since": since, "until": until})
    say(f"run {run_id}: {data.counts.train} training and {data.counts.eval} held-out example(s)")

    from distill.cycle_steps import gate_and_promote, train_candidate

    training = train_candidate(settings, data, run_dir, progress, say)
    outcome = gate_and_promote(settings, data, run_dir, training.output_dir, run_id, say)

    finished = datetime.now(UTC)
    state["last_success"] = finished.isoformat()
    if outcome.promoted:
        state["data_since"] = until.isoformat()
    ds.write_examples(work / "data" / f"{run_id}.jsonl", data.new)
    _write_json(work / "state.json", state)
    (work / "pending.json").unlink(missing_ok=True)
    shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)
    duration = time.perf_counter() - started
    losses = training.losses
    report = {
        "run_id": run_id,
        "since": since.isoformat() if since else None,
        "until": until.isoformat(),
        "finished": finished.isoformat(),
        "decision": "promoted" if outcome.promoted else "kept",
        "reasons": outcome.reasons,
        "promoted_version": outcome.version,
        "promoted_model": outcome.model_name,
        "counts": asdict(data.counts),
        "metrics": outcome.metrics,
        "calibration": outcome.calibration,
        "threshold_before": settings.router.threshold,
        "training": {
            "steps": training.steps,
            "resumed_from": training.resumed_from,
            "seconds": training.seconds,
            "first_loss": losses[0]["loss"] if losses else None,
            "last_loss": losses[-1]["loss"] if losses else None,
        },
        "settings": d.model_dump(mode="json", exclude={"gateway_admin_key"}),
        "duration_s": duration,
    }
    from distill.report import write_report

    write_report(run_dir, report, losses)
    heldout_c = outcome.metrics.get("heldout_candidate") or {}
    heldout_s = outcome.metrics.get("heldout_serving") or {}
    _push(
        settings,
        heldout_c.get("agreement"),
        heldout_s.get("agreement"),
        outcome.promoted,
        data.counts.train,
        duration,
        finished,
    )
    status: Status = "promoted" if outcome.promoted else "kept"
    what = f"promoted {outcome.version} as {outcome.model_name}" if outcome.promoted else "kept the serving student"
    message = f"run {run_id}: {what}; " + "; ".join(outcome.reasons) + f" (report: {run_dir / 'report.html'})"
    return CycleResult(status, message, run_id, run_dir, report)


def _push(
    settings: Settings,
    candidate: float | None,
    serving: float | None,
    promoted: bool,
    examples: int,
    duration: float,
    finished: datetime,
) -> None:
    url = settings.distill.pushgateway_url
    if not url:
        return
    from distill.report import push_metrics

    try:
        push_metrics(
            url,
            success_time=finished.timestamp(),
            candidate_agreement=candidate,
            serving_agreement=serving,
            promoted=promoted,
            examples=examples,
            duration_s=duration,
        )
    except OSError as exc:
        raise DistillError(f"the cycle completed but pushing metrics to {url} failed: {exc}") from None


def rollback(settings: Settings) -> str:
    """Serve the previous registry version again; returns what was done."""
    from distill.promote import PromotionError, Registry, Target
    from distill.promote import rollback as registry_rollback

    with cycle_lock(settings):
        try:
            rolled, now = registry_rollback(Registry(settings.distill.registry_dir), Target.of(settings))
        except PromotionError as exc:
            raise DistillError(str(exc)) from None
    serving = f"{now.name} ({now.model_name})" if now else f"the base model ({settings.student.model})"
    return f"rolled back {rolled.name} ({rolled.model_name}); now serving {serving}"
