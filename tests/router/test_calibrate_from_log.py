"""`cascade router calibrate --from-log` on a real SQLite log store written by the real LogWriter.

Synthetic traffic with a known truth: score ~ U(0, 1), the student agrees with the teacher with probability
0.6 + 0.4 score (so the disagreement among answers with score >= t is 0.2 (1 - t): quality 0.95 needs
t >= 0.75), the gateway escalates below 0.5 and shadows 30% of the accepted requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Iterator
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
from router.from_log import (
    BIAS_WARNING,
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
    escalated_ids: list[str]  # escalations with both answers
    shadow_ids: list[str]
    unscored: int  # escalations logged without a confidence signal


def _record(i: int, score: float, agrees: bool, rng: np.random.Generator, share: float = SHADOW_SHARE) -> LogRecord:
    """One routed request as the gateway logs it: escalated below the threshold, else accepted (shadowed with
    probability ``share``: below SHADOW_SHARE when the gateway skipped shadows under load)."""
    escalated = score < SERVING_THRESHOLD
    shadow = not escalated and rng.uniform() < share
    teacher = (
        TierAnswer("teacher-model", "Paris", prompt_tokens=100, completion_tokens=20) if escalated or shadow else None
    )
    return LogRecord(
        request_id=f"req-{i:06d}",
        time=START + timedelta(seconds=i),
        decision="escalate" if escalated else "accept",
        reason="not_confident" if escalated else "confident",
        tier="teacher" if escalated else "student",
        signals={"confidence": score},
        student=TierAnswer("student-model", "paris." if agrees else "Lyon", prompt_tokens=100, completion_tokens=10),
        teacher=teacher,
        shadow=shadow,
    )


def _extra_records() -> list[LogRecord]:
    """Records that are no pairs (pinned, failed, pre-routed) and escalations without a score."""
    both = {"student": TierAnswer("s", "a"), "teacher": TierAnswer("t", "a")}
    late = START + timedelta(seconds=N)
    return [
        LogRecord("pinned", late, "bypass", "pinned", "teacher", **both),  # type: ignore[arg-type]
        LogRecord("failed", late, "escalate", "not_confident", None, status="error", **both),  # type: ignore[arg-type]
        LogRecord("pre", late, "escalate", "pre_routed", "teacher", teacher=TierAnswer("t", "a")),
        *(LogRecord(f"unscored-{i}", late, "escalate", "not_confident", "teacher", **both) for i in range(3)),  # type: ignore[arg-type]
    ]


async def _write(url: str, folder: Path, records: list[LogRecord]) -> None:
    writer = LogWriter(settings(url, folder, batch_size=2000))
    await writer.start()
    for record in records:
        writer.submit(record)
    await writer.close()


def _traffic(folder: Path, share: float = SHADOW_SHARE) -> tuple[str, list[LogRecord]]:
    url = f"sqlite+aiosqlite:///{folder / 'log.db'}"
    rng = np.random.default_rng(0)
    scores = rng.uniform(size=N)
    agrees = rng.uniform(size=N) < 0.6 + 0.4 * scores
    records = [_record(i, float(s), bool(a), rng, share) for i, (s, a) in enumerate(zip(scores, agrees, strict=True))]
    asyncio.run(_write(url, folder, [*records, *_extra_records()]))
    return url, records


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    url, records = _traffic(tmp_path_factory.mktemp("log"))
    yield Store(
        url,
        [r.request_id for r in records if r.decision == "escalate"],
        [r.request_id for r in records if r.shadow],
        unscored=3,
    )


def calibrate(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["router", "calibrate", *args])
    return result.exit_code, result.stdout, result.stderr


def _hash_share(request_id: str) -> float:
    return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big") / 2**64


def test_thinned_pairs_certify_the_target_near_the_true_threshold(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "cal.json"
    code, stdout, stderr = calibrate(
        "--from-log", "--log-url", store.url, "--target-quality", "0.95", "--shadow-share", "0.3", "-o", str(out)
    )
    assert code == 0, stderr
    cal = json.loads(out.read_text())
    assert json.loads(stdout) == cal
    assert cal["quality_lower_bound"] >= 0.95 and "warning" not in cal
    assert 0.75 <= cal["threshold"] < 0.9  # the true boundary is 0.75
    counts = cal["source"]["counts"]
    kept = sum(_hash_share(i) < counts["observed_shadow_share"] for i in store.escalated_ids)  # thinned at it
    assert counts["records"] == N + 6
    assert counts["escalated_pairs"] == kept
    assert counts["thinned"] == len(store.escalated_ids) - kept
    assert counts["shadow_pairs"] == len(store.shadow_ids)
    assert counts["pairs"] == kept + len(store.shadow_ids) == cal["n"]
    assert counts["skipped_without_score"] == store.unscored
    assert abs(counts["observed_shadow_share"] - SHADOW_SHARE) < 0.02
    assert abs(cal["escalation_rate"] - cal["threshold"]) < 0.02  # a uniform sample: P(score < t) = t
    assert cal["source"]["agreement"] == "exact" and cal["source"]["score"] == "confidence"


def test_a_gateway_that_skipped_shadows_still_gives_a_uniform_sample(tmp_path: Path) -> None:
    """Under load the gateway shadowed only half its configured share: the escalations are thinned at the share
    achieved, so the sample stays uniform (thinned at the configured 0.3 they would be twice too many)."""
    url, _ = _traffic(tmp_path, share=SHADOW_SHARE / 2)
    code, stdout, stderr = calibrate(
        "--from-log", "--log-url", url, "--target-quality", "0.95", "--shadow-share", "0.3"
    )
    assert code == 0, stderr
    cal = json.loads(stdout)
    counts = cal["source"]["counts"]
    assert abs(counts["observed_shadow_share"] - SHADOW_SHARE / 2) < 0.02
    assert abs(counts["escalated_pairs"] / counts["pairs"] - SERVING_THRESHOLD) < 0.03  # P(score < 0.5) = 0.5
    assert abs(cal["escalation_rate"] - cal["threshold"]) < 0.02  # a uniform sample: P(score < t) = t
    assert cal["quality_lower_bound"] >= 0.95 and cal["threshold"] >= 0.75  # half the pairs: a wider bound


def test_without_shadow_share_all_pairs_are_used_with_a_warning(store: Store) -> None:
    code, stdout, stderr = calibrate("--from-log", "--log-url", store.url, "--target-quality", "0.95")
    assert code == 0, stderr
    cal = json.loads(stdout)
    assert cal["warning"] == BIAS_WARNING and "--shadow-share" in stderr
    counts = cal["source"]["counts"]
    assert counts["thinned"] == 0 and counts["escalated_pairs"] == len(store.escalated_ids)
    assert cal["n"] == len(store.escalated_ids) + len(store.shadow_ids)
    assert cal["escalation_rate"] > cal["threshold"] + 0.05  # overstated: the true rate is P(score < t) = t


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
        student=answer("s", student), teacher=answer("t", teacher),
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
    asyncio.run(_write(url, tmp_path, records))
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
    rng = np.random.default_rng(0)
    scores = rng.uniform(size=N)
    agrees = rng.uniform(size=N) < 0.6 + 0.4 * scores
    records = [_record(i, float(s), bool(a), rng) for i, (s, a) in enumerate(zip(scores, agrees, strict=True))]
    try:
        asyncio.run(_write(url, tmp_path, records[:3600]))
        args = ["--from-log", "--until", "2026-01-01T01:00:00", "--target-quality", "0.9", "--shadow-share", "0.3"]
        code, stdout, stderr = calibrate(*args, "--log-url", url)
        assert code == 0, stderr
        from_sqlite = json.loads(calibrate(*args, "--log-url", store.url)[1])
        from_pg = json.loads(stdout)
        assert from_pg["source"]["counts"] == from_sqlite["source"]["counts"]
        assert from_pg["threshold"] == from_sqlite["threshold"]
    finally:
        asyncio.run(_drop_schema(schema))
