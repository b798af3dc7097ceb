"""`cascade router calibrate --from-log` on a real SQLite log store written by the real LogWriter.

Synthetic traffic with a known truth: score ~ U(0, 1), the student agrees with the teacher with probability
0.6 + 0.4 score (so the disagreement among answers with score >= t is 0.2 (1 - t): quality 0.95 needs
t >= 0.75), the gateway escalates below 0.5 and audits 30% of the requests (router/audit.py): the accepted
ones of the sample are shadowed.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
import yaml
from typer.testing import CliRunner

from cascade.cli import app
from logstore import LogRecord, LogWriter, TierAnswer, make_engine
from router.agreement import AGREEMENTS
from router.audit import audit_draw
from router.from_log import (
    LEGACY_WARNING,
    LogPairCounts,
    LogPairs,
    read_log_pairs,
    record_score,
    source_report,
)
from router.signals import features
from tests.logstore.conftest import pg_base_url
from tests.logstore.helpers import settings, token_logprobs

runner = CliRunner()
START = datetime(2026, 1, 1, tzinfo=UTC)
N, SERVING_THRESHOLD, SHADOW_SHARE = 20_000, 0.5, 0.3


@dataclass(frozen=True)
class Store:
    url: str
    records: list[LogRecord]
    unscored: int  # escalations logged without a confidence signal

    def ids(self, decision: str, shadow: bool | None = None) -> list[str]:
        return [r.request_id for r in self.records if r.decision == decision and (shadow is None or r.shadow == shadow)]


def _record(
    i: int, score: float, agrees: bool, rng: np.random.Generator, skip_bad: float = 0.0, legacy: bool = False
) -> LogRecord:
    """One routed request as the gateway logs it: escalated below the threshold, else accepted and shadowed
    when in the audit sample; a shadow of a disagreeing answer is skipped with probability ``skip_bad`` (the
    hard ones, under load). ``legacy``: an older gateway, which drew shadows at random and logged no share."""
    request_id = f"req-{i:06d}"
    escalated = score < SERVING_THRESHOLD
    drawn = rng.uniform() < SHADOW_SHARE if legacy else audit_draw(request_id) < SHADOW_SHARE
    shadow = not escalated and drawn and not (not agrees and rng.uniform() < skip_bad)
    teacher = (
        TierAnswer("teacher-model", "Paris", prompt_tokens=100, completion_tokens=20) if escalated or shadow else None
    )
    return LogRecord(
        request_id=request_id,
        time=START + timedelta(seconds=i),
        decision="escalate" if escalated else "accept",
        reason="not_confident" if escalated else "confident",
        tier="teacher" if escalated else "student",
        signals={"confidence": score},
        student=TierAnswer("student-model", "paris." if agrees else "Lyon", prompt_tokens=100, completion_tokens=10),
        teacher=teacher,
        shadow=shadow,
        audit_share=None if legacy else SHADOW_SHARE,
    )


def _extra_records() -> list[LogRecord]:
    """Records that are no pairs (pinned, pre-routed) and escalations without a score."""
    both = {"student": TierAnswer("s", "a"), "teacher": TierAnswer("t", "a")}
    late, share = START + timedelta(seconds=N), {"audit_share": SHADOW_SHARE}
    return [
        LogRecord("pinned", late, "bypass", "pinned", "teacher", **both, **share),  # type: ignore[arg-type]
        LogRecord("pre", late, "escalate", "pre_routed", "teacher", teacher=TierAnswer("t", "a"), **share),  # type: ignore[arg-type]
        *(LogRecord(f"unscored-{i}", late, "escalate", "not_confident", "teacher", **both, **share) for i in range(3)),  # type: ignore[arg-type]
    ]


async def write_records(url: str, folder: Path, records: list[LogRecord]) -> None:
    writer = LogWriter(settings(url, folder, batch_size=2000))
    await writer.start()
    for record in records:
        writer.submit(record)
    await writer.close()


def traffic_records(skip_bad: float = 0.0, legacy: bool = False) -> list[LogRecord]:
    rng = np.random.default_rng(0)
    scores = rng.uniform(size=N)
    agrees = rng.uniform(size=N) < 0.6 + 0.4 * scores
    return [
        _record(i, float(s), bool(a), rng, skip_bad, legacy)
        for i, (s, a) in enumerate(zip(scores, agrees, strict=True))
    ]


def _traffic(folder: Path, skip_bad: float = 0.0, legacy: bool = False) -> Store:
    url = f"sqlite+aiosqlite:///{folder / 'log.db'}"
    records = traffic_records(skip_bad, legacy)
    asyncio.run(write_records(url, folder, [*records, *_extra_records()]))
    return Store(url, records, unscored=3)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return _traffic(tmp_path_factory.mktemp("log"))


def calibrate(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["router", "calibrate", *args])
    return result.exit_code, result.stdout, result.stderr


def test_the_audit_sample_certifies_the_target_near_the_true_threshold(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "cal.json"
    code, stdout, stderr = calibrate("--from-log", "--log-url", store.url, "--target-quality", "0.95", "-o", str(out))
    assert code == 0, stderr
    cal = json.loads(out.read_text())
    assert json.loads(stdout) == cal
    assert cal["certified_quality"] == 0.95 and "warning" not in cal
    assert 0.75 <= cal["threshold"] < 0.9  # the true boundary is 0.75
    counts = cal["source"]["counts"]
    escalated, shadows = store.ids("escalate"), store.ids("accept", shadow=True)
    kept = sum(audit_draw(i) < SHADOW_SHARE for i in escalated)  # the gateway's own rule
    assert counts["records"] == N + 5 and counts["audit_share"] == SHADOW_SHARE
    assert counts["escalated_pairs"] == kept and counts["shadow_pairs"] == len(shadows)
    assert counts["thinned"] == N - kept - len(shadows)
    assert counts["pairs"] == kept + len(shadows) == cal["n"]
    assert counts["missing_labels"] == 0 and counts["legacy_records"] == 0
    assert counts["skipped_without_score"] == store.unscored
    assert abs(counts["observed_shadow_share"] - SHADOW_SHARE) < 0.02
    assert abs(cal["escalation_rate"] - cal["threshold"]) < 0.02  # a uniform sample: P(score < t) = t
    assert cal["source"]["agreement"] == "exact" and cal["source"]["score"] == "confidence"


def test_a_smaller_share_thins_the_sample_and_a_larger_one_is_refused(store: Store) -> None:
    code, stdout, stderr = calibrate(
        "--from-log", "--log-url", store.url, "--target-quality", "0.9", "--shadow-share", "0.1"
    )
    assert code == 0, stderr
    counts = json.loads(stdout)["source"]["counts"]
    in_sample = [r for r in store.records if audit_draw(r.request_id) < 0.1]
    assert counts["audit_share"] == 0.1 and counts["pairs"] == len(in_sample)
    code, _, stderr = calibrate(
        "--from-log", "--log-url", store.url, "--target-quality", "0.9", "--shadow-share", "0.4"
    )
    assert code == 2 and "--shadow-share 0.4 is above the share this window was audited at (0.3" in stderr


def test_skipped_shadows_stay_in_the_sample_as_disagreements(tmp_path: Path) -> None:
    """Under load the gateway skipped most shadows of the answers that disagree (the hard ones): they stay in the
    sample, counted as disagreements, so the threshold is still at or above the true boundary (dropped, the
    accepted answers would look better than they are)."""
    skipped = _traffic(tmp_path, skip_bad=0.8)
    code, stdout, stderr = calibrate("--from-log", "--log-url", skipped.url, "--target-quality", "0.95")
    assert code == 0, stderr
    cal = json.loads(stdout)
    counts = cal["source"]["counts"]
    missing = [r for r in skipped.records if r.decision == "accept" and audit_draw(r.request_id) < 0.3 and not r.shadow]
    assert counts["missing_labels"] == len(missing) > 100
    assert counts["pairs"] == counts["escalated_pairs"] + counts["shadow_pairs"]
    assert counts["shadow_pairs"] == len(skipped.ids("accept", shadow=True)) + len(missing)
    assert cal["threshold"] >= 0.75 and abs(cal["escalation_rate"] - cal["threshold"]) < 0.02


def test_older_records_are_sampled_at_the_observed_share_with_a_warning(tmp_path: Path) -> None:
    legacy = _traffic(tmp_path, legacy=True)
    code, stdout, stderr = calibrate("--from-log", "--log-url", legacy.url, "--target-quality", "0.95")
    assert code == 0, stderr
    cal = json.loads(stdout)
    counts = cal["source"]["counts"]
    assert cal["warning"] == LEGACY_WARNING.format(n=N) and "audit_share" in stderr
    assert counts["audit_share"] == counts["observed_shadow_share"] and counts["legacy_records"] == N
    assert counts["shadow_pairs"] == len(legacy.ids("accept", shadow=True))
    kept = sum(audit_draw(i) < counts["audit_share"] for i in legacy.ids("escalate"))
    assert counts["escalated_pairs"] == kept
    assert abs(cal["escalation_rate"] - cal["threshold"]) < 0.02
    # the gateway ran 0.3: a --shadow-share of 0.1 is refuted by the window (the old code certified on it)
    code, _, stderr = calibrate(
        "--from-log", "--log-url", legacy.url, "--target-quality", "0.95", "--shadow-share", "0.1"
    )
    assert code == 2 and "--shadow-share 0.1 is not the share this window shows" in stderr


def test_a_window_the_gateway_did_not_audit_is_refused(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'log.db'}"
    escalated = [r for r in traffic_records()[:500] if r.decision == "escalate"]
    for record in escalated:
        record.audit_share = 0.0
    asyncio.run(write_records(url, tmp_path, escalated))
    code, _, stderr = calibrate("--from-log", "--log-url", url, "--target-quality", "0.9")
    assert code == 2 and "logged with log_store.shadow_share 0" in stderr


def test_the_config_gives_the_log_url_and_the_agreement(store: Store, tmp_path: Path) -> None:
    config = tmp_path / "cascade.yaml"
    upstream = {"url": "http://127.0.0.1:1/v1"}
    config.write_text(
        yaml.safe_dump(
            {
                "student": {**upstream, "model": "student-model", "price": price(1.0, 2.0)},
                "teacher": {**upstream, "model": "teacher-model", "price": price(10.0, 20.0)},
                "log_store": {"url": store.url, "shadow_agreement": "label"},
            }
        )
    )
    args = ["--from-log", "--config", str(config), "--target-quality", "0.9", "--shadow-share", "0.3"]
    code, stdout, stderr = calibrate(*args, "--until", "2026-01-01T01:00:00")
    assert code == 0, stderr
    result = json.loads(stdout)
    source = result["source"]
    assert source["agreement"] == "label" and source["counts"]["records"] == 3600
    assert source["window"] == {"since": None, "until": "2026-01-01T01:00:00+00:00"}
    # every request pays the student (100 + 10 tokens: 0.00012 USD), the escalated share the teacher (0.0014)
    cost, rate = result["expected_cost"], result["escalation_rate"]
    assert cost["cost_per_1k_usd"] == pytest.approx(0.12 + 1.4 * rate)
    assert cost["teacher_only_per_1k_usd"] == pytest.approx(1.4)
    low, high = cost["cost_per_1k_interval_usd"]
    assert low <= cost["cost_per_1k_usd"] <= high


def price(input_usd_per_mtok: float, output_usd_per_mtok: float) -> dict[str, float]:
    return {"input_usd_per_mtok": input_usd_per_mtok, "output_usd_per_mtok": output_usd_per_mtok}


def test_a_window_without_pairs_fails_with_one_clear_line(store: Store) -> None:
    code, stdout, stderr = calibrate(
        "--from-log", "--log-url", store.url, "--since", "2100-01-01", "--target-quality", "0.95"
    )
    assert code == 2 and stdout == ""
    assert stderr.startswith("cascade: no labelled pairs in the log window (0 record(s) read)")
    assert len(stderr.splitlines()) == 1 and "Traceback" not in stderr


def test_too_few_pairs_fail_with_one_clear_line(store: Store) -> None:
    code, _, stderr = calibrate(
        "--from-log", "--log-url", store.url, "--until", "2026-01-01T00:00:40", "--target-quality", "0.95"
    )
    assert code == 2 and "cannot certify quality 0.95" in stderr and len(stderr.splitlines()) == 1


def test_file_and_from_log_are_exclusive(store: Store, tmp_path: Path) -> None:
    labelled = tmp_path / "pairs.jsonl"
    labelled.write_text('{"score": 0.5, "student_ok": true}\n')
    code, _, stderr = calibrate(str(labelled), "--from-log", "--log-url", store.url, "--target-quality", "0.9")
    assert code == 2 and stderr == "cascade: give exactly one of a LABELLED file or --from-log\n"
    code, _, stderr = calibrate("--target-quality", "0.9")
    assert code == 2 and "exactly one of" in stderr
    code, _, stderr = calibrate(str(labelled), "--shadow-share", "0.3", "--target-quality", "0.9")
    assert code == 2 and stderr == "cascade: --shadow-share: for --from-log only\n"


def test_a_bad_shadow_share_is_refused(store: Store) -> None:
    code, _, stderr = calibrate("--from-log", "--log-url", store.url, "--shadow-share", "0", "--target-quality", "0.9")
    assert code == 2 and "--shadow-share must be in (0, 1]" in stderr


def test_an_answer_feature_missing_from_the_signals_is_computed_from_the_logged_logprobs() -> None:
    logged = token_logprobs(n=9, k=3, seed=4)
    logged.top_logprobs[2, 2] = np.nan  # a position with fewer alternatives
    record = LogRecord(
        "r", START, "escalate", "not_confident", "teacher", signals={"confidence": 0.3},
        student=TierAnswer("s", "a", logged), teacher=TierAnswer("t", "a"),
    )  # fmt: skip
    expected = features(logged)
    assert record_score(record, "prob_q10") == pytest.approx(expected["prob_q10"])
    assert record_score(record, "confidence") == 0.3
    assert record_score(record, "pre_score") is None
    record.student = TierAnswer("s", "a")
    assert record_score(record, "prob_q10") is None


def _tool_record(request_id: str, student: str, teacher: str, invalid: str | None = None) -> LogRecord:
    def answer(model: str, arguments: str) -> TierAnswer:
        call = {"id": "c", "type": "function", "function": {"name": "book", "arguments": arguments}}
        return TierAnswer(model, None, tool_calls=[call])

    tools = [{"type": "function", "function": {"name": "book", "parameters": {"type": "object"}}}]
    reason = "invalid_tool_call" if invalid else "not_confident"
    record = LogRecord(
        request_id, START, "escalate", reason, "teacher", params={"tools": tools}, signals={"confidence": 0.4},
        student=answer("s", student), teacher=answer("t", teacher), audit_share=1.0,
    )  # fmt: skip
    assert record.student is not None
    record.student.invalid = invalid
    return record


def test_tool_call_pairs_are_labelled_by_value_and_invalid_student_calls_are_left_out(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'log.db'}"
    records = [
        _tool_record("same", '{"city": "Oslo", "n": 2}', '{"n": 2.0, "city": "Oslo"}'),
        _tool_record("other", '{"city": "Rome"}', '{"city": "Oslo"}'),
        _tool_record("broken", '{"city": "Os', '{"city": "Oslo"}', invalid="arguments are not JSON"),
    ]
    asyncio.run(write_records(url, tmp_path, records))
    pairs = asyncio.run(read_log_pairs(url, AGREEMENTS["exact"]))  # exact text would call "same" a disagreement
    assert pairs.student_ok.tolist() == [False, True]  # time order, then request id: "other", "same"
    assert pairs.counts.skipped_invalid == 1 and pairs.counts.pairs == 2


def test_the_source_masks_the_password() -> None:
    pairs = LogPairs(np.zeros(1), np.ones(1, dtype=bool), LogPairCounts(records=1, pairs=1), np.zeros((1, 4)))
    url = "postgresql+asyncpg://cascade:s3cret@db.internal:5432/logs?schema=prod"
    source = source_report(url, pairs, None, datetime(2026, 2, 1), "confidence", "exact", None)
    assert "s3cret" not in json.dumps(source)
    assert source["log_url"] == "postgresql+asyncpg://cascade:***@db.internal:5432/logs?schema=prod"
    assert source["window"] == {"since": None, "until": "2026-02-01T00:00:00+00:00"}


async def _drop_schema(schema: str) -> None:
    engine = make_engine(pg_base_url())
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        await engine.dispose()


def test_the_same_pairs_from_postgresql(store: Store, tmp_path: Path) -> None:
    """The first hour of the same traffic in PostgreSQL gives the same pairs as from SQLite."""
    schema = f"calibrate_test_{uuid.uuid4().hex[:12]}"
    url = f"{pg_base_url()}?schema={schema}"
    try:
        asyncio.run(_drop_schema(schema))  # also checks that the server answers
    except OSError as exc:
        pytest.skip(f"no PostgreSQL at {pg_base_url()}: {exc}")
    try:
        asyncio.run(write_records(url, tmp_path, store.records[:3600]))
        args = ["--from-log", "--until", "2026-01-01T01:00:00", "--target-quality", "0.9"]
        code, stdout, stderr = calibrate(*args, "--log-url", url)
        assert code == 0, stderr
        from_sqlite = json.loads(calibrate(*args, "--log-url", store.url)[1])
        from_pg = json.loads(stdout)
        assert from_pg["source"]["counts"] == from_sqlite["source"]["counts"]
        assert from_pg["threshold"] == from_sqlite["threshold"]
    finally:
        asyncio.run(_drop_schema(schema))


def test_a_window_across_the_upgrade_is_refused(tmp_path: Path) -> None:
    """Older records were shadowed at random, newer ones by the audit draw: one share cannot sample both."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'log.db'}"
    older, newer = traffic_records(legacy=True)[:1000], traffic_records()[1000:2000]
    asyncio.run(write_records(url, tmp_path, [*older, *newer]))
    code, _, stderr = calibrate("--from-log", "--log-url", url, "--target-quality", "0.9")
    assert code == 2 and "mixes 1000 record(s) of an older gateway" in stderr and "--since" in stderr
    cut = (START + timedelta(seconds=1000)).isoformat()
    code, stdout, stderr = calibrate("--from-log", "--log-url", url, "--target-quality", "0.8", "--since", cut)
    assert code == 0, stderr
    assert json.loads(stdout)["source"]["counts"]["legacy_records"] == 0


def test_a_cancelled_accepted_answer_of_the_sample_counts_as_a_missing_label(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'log.db'}"
    records = [r for r in traffic_records()[:3000] if r.decision == "accept" and audit_draw(r.request_id) < 0.3]
    records[0].status, records[0].teacher, records[0].shadow = "cancelled", None, False
    asyncio.run(write_records(url, tmp_path, records))
    pairs = asyncio.run(read_log_pairs(url, AGREEMENTS["exact"]))
    assert pairs.counts.pairs == len(records) and pairs.counts.missing_labels == 1
