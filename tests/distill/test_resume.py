"""A cycle that fails says why, exits non-zero, and the next invocation resumes the same run."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from distill.cycle import DistillError, run_cycle
from distill.promote import Registry
from tests.distill.helpers import DAY, distill_settings, make_records, write_records
from tests.serving.helpers import free_port


def test_a_failed_promotion_is_reported_and_the_next_run_resumes_it(
    tiny_student: Path, tiny_tokenizer: Any, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"  # no student server listens here
    settings = distill_settings(tmp_path, tiny_student, student_url=dead, hot_swap=True, steps=30)
    write_records(settings.log_store.url, tmp_path, make_records(tiny_tokenizer, 80, 0))
    with pytest.raises(DistillError, match=r"promotion failed: student server .* cannot be reached"):
        run_cycle(settings, now=DAY + timedelta(days=1), progress=False)
    pending = settings.distill.work_dir / "pending.json"
    assert pending.exists()
    registry = Registry(settings.distill.registry_dir)
    assert registry.current() is None and registry.versions() == []

    offline = settings.model_copy(update={"distill": settings.distill.model_copy(update={"hot_swap": False})})
    result = run_cycle(offline, now=DAY + timedelta(days=3), progress=False)  # a later "now": same window
    assert result.status == "promoted", result.message
    assert result.run_id == "20261201T000000Z" and result.report["until"].startswith("2026-12-01T00:00:00")
    assert result.report["training"]["resumed_from"] == 30  # trained once; only the gate and promotion ran again
    assert not pending.exists() and registry.current() is not None


def test_too_few_examples_is_nothing_to_do(tiny_student: Path, tiny_tokenizer: Any, tmp_path: Path) -> None:
    settings = distill_settings(tmp_path, tiny_student)
    write_records(settings.log_store.url, tmp_path, make_records(tiny_tokenizer, 5, 10))
    result = run_cycle(settings, now=DAY + timedelta(days=1), progress=False)
    assert result.status == "nothing_to_do"
    assert "5 new teacher example(s) in 15 record(s)" in result.message and "min_examples is 20" in result.message
    assert not (settings.distill.work_dir / "runs").exists()


def test_an_unreachable_log_store_is_named_without_its_password(tiny_student: Path, tmp_path: Path) -> None:
    settings = distill_settings(tmp_path, tiny_student)
    url = f"postgresql+asyncpg://cascade:db-SECRET@127.0.0.1:{free_port()}/cascade"
    settings = settings.model_copy(update={"log_store": settings.log_store.model_copy(update={"url": url})})
    with pytest.raises(DistillError) as info:
        run_cycle(settings, now=DAY + timedelta(days=1), progress=False)
    assert f"reading the log store postgresql+asyncpg://cascade:***@127.0.0.1:{url.rsplit(':', 1)[1]}" in str(
        info.value
    )
    assert "SECRET" not in str(info.value)
